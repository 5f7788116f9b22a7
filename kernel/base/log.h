// The core's log: one line per event on stderr, prefixed with "bulkhead: ".
// `RateLimitedLog` keeps a guest that repeats an odd access from flooding it.
#pragma once

#include <absl/strings/string_view.h>
#include <atomic>
#include <cstdint>

#include <absl/strings/str_format.h>

namespace bulkhead {

void logLine(absl::string_view line);

template <typename... Args>
void logf(const absl::FormatSpec<Args...>& format, const Args&... args) {
  logLine(absl::StrFormat(format, args...));
}

// Lets the first `burst` events through, then only the 2^k-th ones, counting all of them, so a
// guest that repeats an odd access a million times costs about thirty lines.
class RateLimitedLog {
 public:
  constexpr explicit RateLimitedLog(uint64_t burst = 10) : burst(burst) {}
  // Counts an event; returns whether this one should be logged.
  bool admit() {
    uint64_t n = count.fetch_add(1, std::memory_order_relaxed) + 1;
    return n <= burst || (n & (n - 1)) == 0;
  }

 private:
  uint64_t burst;
  std::atomic<uint64_t> count{0};
};

}  // namespace bulkhead
