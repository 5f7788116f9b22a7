// Device output that shares the log's file and the log's own lines never split each other.
#include "kernel/base/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

// Standard error redirected to a file for the test's length; `text()` is what reached it.
class LogCapture {
 public:
  LogCapture() {
    char name[] = "/tmp/bulkhead-log-test-XXXXXX";
    file = mkstemp(name);
    unlink(name);
    saved = dup(STDERR_FILENO);
    dup2(file, STDERR_FILENO);
  }
  ~LogCapture() {
    flushLog(/*all=*/true);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(file);
  }
  std::string text() const {
    std::string out(4096, '\0');
    ssize_t n = pread(file, out.data(), out.size(), 0);
    out.resize(n > 0 ? n : 0);
    return out;
  }
  void device(const std::string& bytes) {
    ASSERT_TRUE(writeBesideLog(STDERR_FILENO, reinterpret_cast<const uint8_t*>(bytes.data()),
                               bytes.size()));
  }

 private:
  int file = -1;
  int saved = -1;
};

TEST(Log, StandardErrorSharesItsOwnFile) {
  LogCapture capture;
  EXPECT_TRUE(sharesLogFile(STDERR_FILENO));
  int other = open("/dev/null", O_WRONLY | O_CLOEXEC);
  EXPECT_FALSE(sharesLogFile(other));
  close(other);
}

TEST(Log, ALogLineWaitsForTheDevicesLineToEnd) {
  LogCapture capture;
  capture.device("SeaBIOS (ver");
  logLine("guest read port 0x92");
  EXPECT_EQ(capture.text(), "SeaBIOS (ver");
  capture.device("sion 1.16)\nNext li");
  EXPECT_EQ(capture.text(), "SeaBIOS (version 1.16)\nbulkhead: guest read port 0x92\nNext li");
  capture.device("ne\n");
  logLine("after");
  EXPECT_EQ(capture.text(),
            "SeaBIOS (version 1.16)\nbulkhead: guest read port 0x92\nNext line\nbulkhead: after\n");
}

TEST(Log, AnUnfinishedLineHoldsTheLogBackOnlySoLong) {
  LogCapture capture;
  capture.device("# ");  // a shell prompt: no line end will come
  logLine("held");
  flushLog(/*all=*/false);
  EXPECT_EQ(capture.text(), "# ");  // too early
  std::this_thread::sleep_for(LOG_HOLD + std::chrono::milliseconds(20));
  flushLog(/*all=*/false);
  EXPECT_EQ(capture.text(), "# bulkhead: held\n");
}

TEST(Log, TheEndOfTheRunWritesEverythingHeld) {
  LogCapture capture;
  capture.device("partial");
  logLine("one");
  logLine("two");
  flushLog(/*all=*/true);
  EXPECT_EQ(capture.text(), "partialbulkhead: one\nbulkhead: two\n");
  logLine("three");  // the devices are done: no more waiting
  EXPECT_EQ(capture.text(), "partialbulkhead: one\nbulkhead: two\nbulkhead: three\n");
}

}  // namespace
}  // namespace bulkhead
