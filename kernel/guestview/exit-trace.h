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

// The exit descriptions both CPU backends use: "io out port 0x3f8 size 1 value 0x68" and
// "mmio write 0xfebf0000 size 4 value 0x1".
std::string describeIo(bool out, uint16_t port, unsigned size, uint64_t value, uint32_t count);
std::string describeMmio(bool write, uint64_t address, unsigned size, uint64_t value);

}  // namespace bulkhead
