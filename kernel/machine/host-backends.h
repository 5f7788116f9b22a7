// The host side of devices, opened by the core (a device server may open nothing): disk images,
// sockets and taps, output files, the terminal. Each opener checks what it is given and says
// what is wrong in one line; none of them deletes or truncates a file it was not asked to.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <kj/io.h>

#include "kernel/machine/device-kinds.h"

namespace bulkhead {

using DeviceOptions = std::vector<std::pair<std::string, std::string>>;

// What the core hands a device server for its backend.
struct HostSide {
  std::vector<kj::AutoCloseFd> backends;  // files the server uses (input, an image, a socket)
  kj::AutoCloseFd output;                 // where the device's output log goes, or null
};

// Opens what `backend` needs, taking its keys out of `options` (path=, readonly, socket=,
// listen, tap=, file=). `stdinFree`: standard input is not already some other device's.
absl::StatusOr<HostSide> openHostSide(HostBackend backend, DeviceOptions& options, bool stdinFree);

// A raw disk image, read-write unless `readOnly`: a regular file of at least one sector.
absl::StatusOr<kj::AutoCloseFd> openDiskImage(const std::string& path, bool readOnly);
// A file the guest's output goes to: created if missing, truncated (`truncate`) or appended to.
absl::StatusOr<kj::AutoCloseFd> openOutputFile(const std::string& path, bool truncate);
// A copy of standard input when select/epoll can watch it (a terminal, pipe or socket), else
// null.
kj::AutoCloseFd pollableStdin();
// A copy of standard output or standard error.
kj::AutoCloseFd copyOf(int fd);

// Whether `path` may become a listening unix socket: nothing is there, or a socket nobody
// listens on any more (a stale one, which the caller replaces). Anything else is refused, and
// left as it is: a file, a folder, or a socket another process (another VM) listens on.
absl::Status checkListeningPath(const std::string& path);
// Whether 127.0.0.1:`port` is free to listen on (for --gdb).
absl::Status checkLocalTcpPort(uint16_t port);

// A whole image file (kernel, initrd, module, BIOS, fault plan), at most 1 GiB.
absl::StatusOr<std::vector<uint8_t>> readImage(const std::string& path, const char* what);

}  // namespace bulkhead
