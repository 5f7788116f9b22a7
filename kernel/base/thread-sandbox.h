// The seccomp filter of a vCPU thread: the thread that runs guest code (the software CPU
// interprets it; KVM's exits are decoded there) and parses what devices answer. Should a guest
// ever take it over, it can reach no file, socket or process the VM does not already hold: it
// may only wait, signal and move memory, touch its descriptors, and make KVM calls.
//
// The filter is the calling thread's alone (not synchronised to the others): the main loop
// forks and execs device servers, which a vCPU thread never does. Anything not allowed fails
// with EPERM; calls that would replace the process or reach another one (execve, execveat,
// ptrace, process_vm_readv/writev) kill it. mmap and mprotect are refused PROT_EXEC, and
// ioctl is allowed only with KVM's request type (0xAE).
#pragma once

#include <absl/status/status.h>

namespace bulkhead {

absl::Status confineVcpuThread();

}  // namespace bulkhead
