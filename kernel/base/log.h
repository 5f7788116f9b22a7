// The core's log: one line per event on stderr, prefixed with "bulkhead: ".
// `RateLimitedLog` keeps a guest that repeats an odd access from flooding it.
//
// Device output may go to the same file as the log (debugcon writes to stderr; serial output
// does too when stdout and stderr are one terminal or pipe). Such output is written with
// `writeBesideLog`, and a log line that comes while one of its lines is unfinished waits for
// the line's end, so neither ever splits the other. A line that stays unfinished holds the log
// back for at most LOG_HOLD: `flushLog` (called periodically and when the VM ends) writes what
// waited that long.
#pragma once

#include <absl/strings/string_view.h>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <absl/strings/str_format.h>

namespace bulkhead {

constexpr std::chrono::milliseconds LOG_HOLD{100};

void logLine(absl::string_view line);

// --verbose: also log what a user rarely needs (guest accesses nobody claims, interrupts that
// travel the channel because the host has no irqfd). Off by default.
void setVerbose(bool on);
bool verbose();

template <typename... Args>
void logf(const absl::FormatSpec<Args...>& format, const Args&... args) {
  logLine(absl::StrFormat(format, args...));
}

// Writes all of `bytes` to `fd`; false when the file is gone or refuses them.
bool writeAll(int fd, const void* bytes, size_t count);

// `text` (from a guest, a server or a file) made safe to show: bytes outside printable ASCII
// become \xNN, and at most `limit` bytes are kept ("..." marks the cut).
std::string printable(absl::string_view text, size_t limit = 64);

// Whether writing to `fd` writes where the log goes (the same file as standard error).
bool sharesLogFile(int fd);
// Writes device output to `fd`, which shares the log's file. False when the file is gone.
bool writeBesideLog(int fd, const uint8_t* bytes, size_t count);
// Writes the log lines that have waited LOG_HOLD for a device's line to end. With `all` (the
// devices are done) writes every held line, and later lines go out at once.
void flushLog(bool all);

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
