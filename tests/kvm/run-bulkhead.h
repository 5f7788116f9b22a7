// Runs the real `bulkhead` binary (and so the real device-server processes) for kvm-suite tests.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace bulkhead::testing {

struct RunResult {
  int status = -1;  // exit status, or 128 + signal
  bool timedOut = false;
  std::string out;
  std::string err;
};

// The path of the binary under test (first command-line argument of the test executable).
const std::string& bulkheadPath();
// The folder that holds the built guests (second argument).
const std::string& guestDir();
// bulkhead-ctl (third argument, where a test needs it).
const std::string& ctlPath();

RunResult runBulkhead(const std::vector<std::string>& arguments, int timeoutSeconds = 60);

// Starts bulkhead without waiting; stdout goes to `outFd` (or /dev/null when -1).
pid_t startBulkhead(const std::vector<std::string>& arguments, int outFd = -1);

// Starts bulkhead with stdout and stderr captured into `out` and `err` by a thread each;
// join() them with the returned Capture after the process ended.
struct Capture {
  pid_t pid = -1;
  std::string out;
  std::string err;
  int status = -1;  // after wait()
  void wait();      // reaps the process and finishes reading its output
  // Bytes of stdout read so far (safe to ask while another thread is in wait()).
  size_t outputSoFar() const { return outBytes->load(); }
  // Waits (up to 30 s) until the guest has printed something: its devices are serving.
  bool waitForOutput() const;
  int outFd = -1, errFd = -1;
  std::shared_ptr<std::atomic<size_t>> outBytes = std::make_shared<std::atomic<size_t>>(0);
};
Capture startCaptured(const std::vector<std::string>& arguments);

// Runs bulkhead-ctl SOCKET COMMAND; its output (stdout and stderr) and exit status.
std::string runCtl(const std::string& socket, const std::string& command, int* status = nullptr);

// The pid of the core's child whose command name is `comm` (15 characters at most), or -1.
pid_t findChild(pid_t parent, const std::string& comm);
bool processAlive(pid_t pid);

// The backend the suite runs under: BULKHEAD_TEST_ACCEL ("emu" runs every `bulkhead run` of the
// suite with --accel emu), or "" for bulkhead's default.
const std::string& testAccel();

// Whether guests can run here: always under emu; otherwise whether /dev/kvm opens (`reason`
// says why not).
bool kvmUsable(std::string* reason);

}  // namespace bulkhead::testing

#define REQUIRE_KVM()                                                     \
  do {                                                                    \
    std::string reason;                                                   \
    if (!::bulkhead::testing::kvmUsable(&reason)) GTEST_SKIP() << reason; \
  } while (0)
