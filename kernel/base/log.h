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

// Lets the first `burst` events through, then one in every `every`, counting all of them.
class RateLimitedLog {
 public:
  constexpr RateLimitedLog(uint64_t burst = 10, uint64_t every = 1000)
      : burst(burst), every(every) {}
  // Counts an event; returns whether this one should be logged.
  bool admit() {
    uint64_t n = count.fetch_add(1, std::memory_order_relaxed);
    return n < burst || n % every == 0;
  }
  uint64_t total() const { return count.load(std::memory_order_relaxed); }

 private:
  uint64_t burst;
  uint64_t every;
  std::atomic<uint64_t> count{0};
};

}  // namespace bulkhead
