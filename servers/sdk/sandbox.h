// The device server's sandbox, entered once the channel is attached and before any device code
// runs: no new privileges, tight resource limits, and a seccomp-bpf allow-list of the system
// calls a server needs to serve its channel. Everything else fails with EPERM; the calls that
// would reach outside the process (execve, ptrace, process_vm_*) kill it outright.
//
// The core adds what must be set up before exec: a fresh file-descriptor table (only the
// channel), new mount, network, IPC and UTS namespaces and an unprivileged uid where the host
// allows (docs/recovery.md, "Sandbox").
#pragma once

namespace bulkhead::sdk {

// What a device needs beyond serving its channel.
struct SandboxNeeds {
  bool ioUring = false;  // io_uring_setup/enter/register (virtio-blk's backend I/O)
  bool accept = false;   // accept4 (virtio-net's listening socket backend)
  bool fileIo = false;   // pread64, pwrite64, fdatasync (a disk image used directly)
};

// Returns an error description, or nullptr on success.
const char* enterSandbox(SandboxNeeds needs);

}  // namespace bulkhead::sdk
