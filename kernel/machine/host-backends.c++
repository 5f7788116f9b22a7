#include "kernel/machine/host-backends.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"
#include "kernel/base/status-macros.h"

namespace bulkhead {

namespace {

constexpr uint64_t MAX_IMAGE_BYTES = 1ull << 30;
constexpr int CONNECT_ATTEMPTS = 200;  // 10 s for the listening VM to start
constexpr useconds_t CONNECT_PAUSE_US = 50000;

// Takes `key` out of `options`: its value, or "" when absent.
std::string take(DeviceOptions& options, const std::string& key) {
  std::string value;
  for (auto it = options.begin(); it != options.end();) {
    if (it->first == key) {
      value = it->second;
      it = options.erase(it);
    } else {
      ++it;
    }
  }
  return value;
}

// Whether the flag `key` is given and not "off" (it stays in `options`: the server reads it too).
bool flag(const DeviceOptions& options, const std::string& key) {
  for (const auto& [k, v] : options) {
    if (k == key && v != "off") return true;
  }
  return false;
}

absl::StatusOr<kj::AutoCloseFd> openTap(const std::string& name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return errnoStatus("cannot open /dev/net/tun for tap=" + name);
  kj::AutoCloseFd tap(fd);
  ifreq request{};
  if (name.size() >= sizeof(request.ifr_name)) {
    return absl::InvalidArgumentError("tap=" + name + ": the name is too long");
  }
  strncpy(request.ifr_name, name.c_str(), sizeof(request.ifr_name) - 1);
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &request) != 0) {
    return errnoStatus("tap=" + name +
                       ": TUNSETIFF failed (needs CAP_NET_ADMIN or a tap owned by this user)");
  }
  return tap;
}

// The address of unix socket `path`, when it fits one.
std::optional<sockaddr_un> unixAddress(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) return std::nullopt;
  strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  return address;
}

absl::StatusOr<kj::AutoCloseFd> openSocket(const std::string& path, bool listening) {
  std::optional<sockaddr_un> address = unixAddress(path);
  if (!address) return absl::InvalidArgumentError("socket=PATH needs a path of at most 107 bytes");
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoStatus("socket");
  kj::AutoCloseFd sock(fd);
  auto* raw = reinterpret_cast<sockaddr*>(&*address);
  if (listening) {
    // A socket left by an earlier run is replaced; anything else at PATH is not touched.
    absl::Status free = checkListeningPath(path);
    if (!free.ok()) return absl::InvalidArgumentError("socket=" + std::string(free.message()));
    unlink(path.c_str());
    if (bind(fd, raw, sizeof(sockaddr_un)) != 0 || listen(fd, 1) != 0) {
      return errnoStatus("cannot listen on socket=" + path);
    }
    return sock;
  }
  int result = -1;
  for (int attempt = 0; attempt < CONNECT_ATTEMPTS; ++attempt) {
    result = connect(fd, raw, sizeof(sockaddr_un));
    if (result == 0 || (errno != ENOENT && errno != ECONNREFUSED)) break;
    usleep(CONNECT_PAUSE_US);
  }
  if (result != 0) {
    return errnoStatus("cannot connect to socket=" + path + " (is a VM with --net socket=" + path +
                       ",listen running?)");
  }
  return sock;
}

}  // namespace

absl::Status checkListeningPath(const std::string& path) {
  struct stat info;
  if (lstat(path.c_str(), &info) != 0) {
    if (errno != ENOENT) return errnoStatus(absl::StrFormat("%s cannot be looked at", path));
    std::string folder =
        path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    if (folder.empty()) folder = "/";
    if (stat(folder.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the folder %s does not exist", path, folder));
    }
    return absl::OkStatus();
  }
  if (!S_ISSOCK(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s exists and is not a socket; give a path where nothing is (it was left as it is)",
        path));
  }
  std::optional<sockaddr_un> address = unixAddress(path);
  if (!address) {
    return absl::InvalidArgumentError(absl::StrFormat("%s is longer than 107 bytes", path));
  }
  for (int type : {SOCK_STREAM, SOCK_SEQPACKET}) {
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return errnoStatus("socket");
    kj::AutoCloseFd probe(fd);
    int result = connect(fd, reinterpret_cast<sockaddr*>(&*address), sizeof(*address));
    if (result == 0 || (errno != ECONNREFUSED && errno != EPROTOTYPE)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is a socket another process listens on (another VM?); give another path", path));
    }
  }
  return absl::OkStatus();  // stale: nobody listens
}

absl::Status checkLocalTcpPort(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoStatus("socket");
  kj::AutoCloseFd probe(fd);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as the listener will
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    if (errno == EADDRINUSE) {
      return absl::InvalidArgumentError(
          absl::StrFormat("127.0.0.1:%u is in use by another program; choose another port", port));
    }
    return errnoStatus(absl::StrFormat("cannot listen on 127.0.0.1:%u", port));
  }
  return absl::OkStatus();
}

absl::StatusOr<kj::AutoCloseFd> openDiskImage(const std::string& path, bool readOnly) {
  if (path.empty()) return absl::InvalidArgumentError("needs path=IMAGE (a raw disk image)");
  int fd = open(path.c_str(), (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot open disk image %s%s: %s", path, readOnly ? "" : " for writing", strerror(errno)));
  }
  kj::AutoCloseFd image(fd);
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("disk image %s is not a regular file", path));
  }
  if (info.st_size < 512) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk image %s holds %d bytes, less than one 512-byte sector", path, info.st_size));
  }
  return image;
}

absl::StatusOr<kj::AutoCloseFd> openOutputFile(const std::string& path, bool truncate) {
  if (path.empty()) return absl::InvalidArgumentError("needs file=PATH");
  int fd = open(path.c_str(),
                O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND) | O_NOCTTY, 0644);
  if (fd < 0) return errnoStatus(absl::StrFormat("cannot open %s for writing", path));
  return kj::AutoCloseFd(fd);
}

kj::AutoCloseFd pollableStdin() {
  struct stat info;
  if (fstat(STDIN_FILENO, &info) != 0) return nullptr;
  if (!isatty(STDIN_FILENO) && !S_ISFIFO(info.st_mode) && !S_ISSOCK(info.st_mode)) return nullptr;
  return copyOf(STDIN_FILENO);
}

kj::AutoCloseFd copyOf(int fd) { return kj::AutoCloseFd(fcntl(fd, F_DUPFD_CLOEXEC, 3)); }

absl::StatusOr<HostSide> openHostSide(HostBackend backend, DeviceOptions& options, bool stdinFree) {
  HostSide side;
  switch (backend) {
    case HostBackend::NONE:
      return side;
    case HostBackend::STDIO:
      // Output through the output log (exactly once); input straight to the server.
      side.output = copyOf(STDOUT_FILENO);
      if (stdinFree) {
        if (kj::AutoCloseFd input = pollableStdin(); input != nullptr) {
          side.backends.push_back(kj::mv(input));
        }
      }
      return side;
    case HostBackend::STDERR:
      side.output = copyOf(STDERR_FILENO);
      return side;
    case HostBackend::FILE: {
      ASSIGN_OR_RETURN(side.output, openOutputFile(take(options, "file"), /*truncate=*/false));
      return side;
    }
    case HostBackend::DISK: {
      bool readOnly = flag(options, "readonly");
      ASSIGN_OR_RETURN(kj::AutoCloseFd image, openDiskImage(take(options, "path"), readOnly));
      side.backends.push_back(kj::mv(image));
      return side;
    }
    case HostBackend::NET: {
      std::string socketPath = take(options, "socket");
      std::string tapName = take(options, "tap");
      bool listening = flag(options, "listen");
      if (!socketPath.empty() && !tapName.empty()) {
        return absl::InvalidArgumentError("give socket=PATH or tap=NAME, not both");
      }
      if (!tapName.empty()) {
        if (listening) return absl::InvalidArgumentError("listen applies to socket=PATH only");
        ASSIGN_OR_RETURN(kj::AutoCloseFd tap, openTap(tapName));
        side.backends.push_back(kj::mv(tap));
        return side;
      }
      ASSIGN_OR_RETURN(kj::AutoCloseFd sock, openSocket(socketPath, listening));
      side.backends.push_back(kj::mv(sock));
      return side;
    }
  }
  return absl::InternalError("unknown host backend");
}

absl::StatusOr<std::vector<uint8_t>> readImage(const std::string& path, const char* what) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoStatus(absl::StrFormat("cannot read %s %s", what, path));
  kj::AutoCloseFd owned(fd);
  struct stat info;
  if (fstat(fd, &info) != 0) return errnoStatus(absl::StrFormat("cannot stat %s %s", what, path));
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s %s is not a regular file", what, path));
  }
  if (static_cast<uint64_t>(info.st_size) > MAX_IMAGE_BYTES) {
    return absl::InvalidArgumentError(absl::StrFormat("%s %s is larger than 1 GiB", what, path));
  }
  std::vector<uint8_t> bytes(info.st_size);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errnoStatus(absl::StrFormat("reading %s %s", what, path));
    done += n;
  }
  return bytes;
}

}  // namespace bulkhead
