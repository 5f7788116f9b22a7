// Runs the real `bulkhead` binary (and so the real device-server processes) for kvm-suite tests.
#pragma once

#include <sys/types.h>

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

RunResult runBulkhead(const std::vector<std::string>& arguments, int timeoutSeconds = 60);

// Starts bulkhead without waiting; stdout goes to `outFd` (or /dev/null when -1).
pid_t startBulkhead(const std::vector<std::string>& arguments, int outFd = -1);

// Whether KVM can run guests here; `reason` says why not.
bool kvmUsable(std::string* reason);

}  // namespace bulkhead::testing

#define REQUIRE_KVM()                                                     \
  do {                                                                    \
    std::string reason;                                                   \
    if (!::bulkhead::testing::kvmUsable(&reason)) GTEST_SKIP() << reason; \
  } while (0)
