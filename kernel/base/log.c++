#include "log.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include <absl/strings/str_cat.h>

namespace bulkhead {
namespace {

using Clock = std::chrono::steady_clock;

// The log's file, as device output shares it.
struct LogFile {
  std::mutex lock;
  bool deviceMidLine = false;  // the last device byte written was not a newline
  std::string held;            // log lines waiting for that line to end
  Clock::time_point heldSince;

  ~LogFile();  // writes what is held: nothing is lost when the process ends
};

LogFile& logFile() {
  static LogFile file;
  return file;
}

void writeHeld(LogFile& file) {
  writeAll(STDERR_FILENO, file.held.data(), file.held.size());
  file.held.clear();
}

LogFile::~LogFile() { writeHeld(*this); }

}  // namespace

bool writeAll(int fd, const void* bytes, size_t count) {
  const char* next = static_cast<const char*>(bytes);
  while (count > 0) {
    ssize_t n = ::write(fd, next, count);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    next += n;
    count -= n;
  }
  return true;
}

namespace {
std::atomic<bool> verboseLog{false};
}  // namespace

void setVerbose(bool on) { verboseLog.store(on, std::memory_order_relaxed); }
bool verbose() { return verboseLog.load(std::memory_order_relaxed); }

void logLine(absl::string_view line) {
  std::string out = absl::StrCat("bulkhead: ", line, "\n");
  LogFile& file = logFile();
  std::lock_guard<std::mutex> lock(file.lock);
  if (file.deviceMidLine) {
    if (file.held.empty()) file.heldSince = Clock::now();
    file.held += out;
    return;
  }
  // One write() per line so lines from several threads never interleave.
  writeAll(STDERR_FILENO, out.data(), out.size());
}

bool sharesLogFile(int fd) {
  struct stat mine, log;
  if (fstat(fd, &mine) != 0 || fstat(STDERR_FILENO, &log) != 0) return false;
  return mine.st_dev == log.st_dev && mine.st_ino == log.st_ino;
}

bool writeBesideLog(int fd, const uint8_t* bytes, size_t count) {
  if (count == 0) return true;
  const char* text = reinterpret_cast<const char*>(bytes);
  LogFile& file = logFile();
  std::lock_guard<std::mutex> lock(file.lock);
  // Up to the last line end, then the log lines that waited for it, then the unfinished rest.
  size_t lineEnd = count;
  while (lineEnd > 0 && text[lineEnd - 1] != '\n') --lineEnd;
  if (!writeAll(fd, text, lineEnd)) return false;
  if (lineEnd > 0 && !file.held.empty()) writeHeld(file);
  if (lineEnd < count) {
    file.deviceMidLine = true;
    return writeAll(fd, text + lineEnd, count - lineEnd);
  }
  file.deviceMidLine = false;
  return true;
}

void flushLog(bool all) {
  LogFile& file = logFile();
  std::lock_guard<std::mutex> lock(file.lock);
  if (all) file.deviceMidLine = false;
  if (file.held.empty() || (!all && Clock::now() - file.heldSince < LOG_HOLD)) return;
  writeHeld(file);
}

std::string printable(absl::string_view text, size_t limit) {
  std::string shown;
  for (size_t i = 0; i < text.size() && i < limit; ++i) {
    unsigned char byte = text[i];
    if (byte >= 0x20 && byte < 0x7f && byte != '\\') {
      shown += static_cast<char>(byte);
    } else {
      shown += absl::StrFormat("\\x%02x", byte);
    }
  }
  if (text.size() > limit) shown += "...";
  return shown;
}

}  // namespace bulkhead
