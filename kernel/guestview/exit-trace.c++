#include "kernel/guestview/exit-trace.h"

#include <fcntl.h>
#include <unistd.h>

#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"

namespace bulkhead {

absl::StatusOr<std::unique_ptr<ExitTrace>> ExitTrace::open(const std::string& path) {
  int fd = path.empty() ? fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)
                        : ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errnoStatus("--trace: cannot open " + path);
  return std::unique_ptr<ExitTrace>(new ExitTrace(kj::AutoCloseFd(fd)));
}

void ExitTrace::record(unsigned vcpu, const std::string& exit, const std::string& location) {
  std::lock_guard<std::mutex> guard(lock);
  if (written > MAX_LINES) return;
  std::string line = ++written > MAX_LINES
                         ? absl::StrFormat("trace stopped after %u lines\n", MAX_LINES)
                         : absl::StrFormat("vcpu %u %s; %s\n", vcpu, exit, location);
  ssize_t ignored = ::write(fd.get(), line.data(), line.size());
  (void)ignored;
}

std::string describeIo(bool out, uint16_t port, unsigned size, uint64_t value, uint32_t count) {
  return absl::StrFormat("io %s port 0x%x size %u value 0x%x%s", out ? "out" : "in", port, size,
                         value, count > 1 ? absl::StrFormat(" (x%u)", count) : "");
}

std::string describeMmio(bool write, uint64_t address, unsigned size, uint64_t value) {
  return absl::StrFormat("mmio %s 0x%x size %u value 0x%x", write ? "write" : "read", address, size,
                         value);
}

}  // namespace bulkhead
