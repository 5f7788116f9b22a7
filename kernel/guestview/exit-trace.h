// The exit trace (bulkhead run --trace exits[,FILE]): one line per vCPU exit with its reason,
// port or address, size and value, and the instruction at RIP decoded. Bounded: after
// MAX_LINES lines it says it stopped and records nothing more, so a guest cannot fill a disk.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include <absl/status/statusor.h>
#include <kj/io.h>

namespace bulkhead {

class ExitTrace {
 public:
  static constexpr uint64_t MAX_LINES = 1000000;

  // `path` empty: standard error.
  static absl::StatusOr<std::unique_ptr<ExitTrace>> open(const std::string& path);

  void record(unsigned vcpu, const std::string& exit, const std::string& location);

 private:
  explicit ExitTrace(kj::AutoCloseFd fd) : fd(kj::mv(fd)) {}

  std::mutex lock;
  kj::AutoCloseFd fd;
  uint64_t written = 0;
};

}  // namespace bulkhead
