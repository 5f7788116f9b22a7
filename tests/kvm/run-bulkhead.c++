#include "tests/kvm/run-bulkhead.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

namespace bulkhead::testing {

namespace {
std::string programPath;
std::string guestsPath;
std::string controlTool;

// Runs the binary under test in this (forked) process; never returns.
[[noreturn]] void execBulkhead(const std::vector<std::string>& arguments) {
  std::vector<std::string> all = arguments;
  // The suite's backend, unless the test names one itself (--accel may be given once).
  bool named = std::find(all.begin(), all.end(), "--accel") != all.end();
  if (!all.empty() && all[0] == "run" && !testAccel().empty() && !named) {
    all.insert(all.begin() + 1, {"--accel", testAccel()});
  }
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(programPath.c_str()));
  for (const std::string& argument : all) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  execv(programPath.c_str(), argv.data());
  _exit(127);
}

}  // namespace

const std::string& testAccel() {
  static const std::string accel =
      getenv("BULKHEAD_TEST_ACCEL") ? getenv("BULKHEAD_TEST_ACCEL") : "";
  return accel;
}

const std::string& bulkheadPath() { return programPath; }
const std::string& guestDir() { return guestsPath; }
const std::string& ctlPath() { return controlTool; }

bool kvmUsable(std::string* reason) {
  if (testAccel() == "emu") return true;  // the software CPU needs no /dev/kvm
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *reason = std::string("needs /dev/kvm, which cannot be opened here: ") + strerror(errno);
    return false;
  }
  close(fd);
  return true;
}

pid_t startBulkhead(const std::vector<std::string>& arguments, int outFd) {
  pid_t pid = fork();
  if (pid == 0) {
    int devNull = open("/dev/null", O_RDWR);
    dup2(devNull, STDIN_FILENO);
    dup2(outFd >= 0 ? outFd : devNull, STDOUT_FILENO);
    execBulkhead(arguments);
  }
  return pid;
}

Capture startCaptured(const std::vector<std::string>& arguments) {
  int out[2], err[2];
  EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
  Capture capture;
  capture.pid = fork();
  if (capture.pid == 0) {
    int devNull = open("/dev/null", O_RDONLY);
    dup2(devNull, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execBulkhead(arguments);
  }
  close(out[1]);
  close(err[1]);
  capture.outFd = out[0];
  capture.errFd = err[0];
  return capture;
}

void Capture::wait() {
  // Read both pipes to their end (the process closes them when it exits), then reap it.
  pollfd fds[2] = {{outFd, POLLIN, 0}, {errFd, POLLIN, 0}};
  int open = 2;
  while (open > 0) {
    if (poll(fds, 2, -1) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buffer[65536];
      ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      } else {
        (i == 0 ? out : err).append(buffer, n);
        if (i == 0) outBytes->fetch_add(n);
      }
    }
  }
  int raw = 0;
  waitpid(pid, &raw, 0);
  status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
}

std::string runCtl(const std::string& socket, const std::string& command, int* status) {
  std::string line = controlTool + " " + socket + " " + command + " 2>&1";
  FILE* pipe = popen(line.c_str(), "r");
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  int raw = pclose(pipe);
  if (status != nullptr) *status = WEXITSTATUS(raw);
  return out;
}

bool Capture::waitForOutput() const {
  for (int i = 0; i < 3000 && outputSoFar() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return outputSoFar() > 0;
}

pid_t findChild(pid_t parent, const std::string& comm) {
  std::string tasks = "/proc/" + std::to_string(parent) + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return -1;
  pid_t found = -1;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream children(tasks + "/" + entry->d_name + "/children");
    pid_t child;
    while (children >> child) {
      std::ifstream name("/proc/" + std::to_string(child) + "/comm");
      std::string line;
      std::getline(name, line);
      if (line == comm && processAlive(child)) found = child;
    }
  }
  closedir(dir);
  return found;
}

bool processAlive(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(status, line)) return false;
  size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

RunResult runBulkhead(const std::vector<std::string>& arguments, int timeoutSeconds) {
  int out[2], err[2];
  EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
  pid_t pid = fork();
  if (pid == 0) {
    int devNull = open("/dev/null", O_RDONLY);
    dup2(devNull, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execBulkhead(arguments);
  }
  close(out[1]);
  close(err[1]);
  RunResult result;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeoutSeconds);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open = 2;
  while (open > 0) {
    int remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
    if (remaining <= 0) {
      result.timedOut = true;
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, remaining) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buffer[65536];
      ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        fds[i].fd = -1;
        --open;
      } else {
        (i == 0 ? result.out : result.err).append(buffer, n);
      }
    }
  }
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace bulkhead::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 3) {
    fprintf(stderr, "usage: %s BULKHEAD GUEST_DIR\n", argv[0]);
    return 2;
  }
  bulkhead::testing::programPath = argv[1];
  bulkhead::testing::guestsPath = argv[2];
  if (argc > 3) bulkhead::testing::controlTool = argv[3];
  // Each test runs in one suite only: Emu.* name --accel emu themselves and need no KVM (the emu
  // suite runs them), Differential.* run both backends (the kvm suite runs them).
  if (GTEST_FLAG_GET(filter) == "*") {
    GTEST_FLAG_SET(filter, bulkhead::testing::testAccel() == "emu" ? "-Differential.*" : "-Emu.*");
  }
  int status = RUN_ALL_TESTS();
  // Tell meson when nothing ran (exit 77 is SKIP), so a machine without /dev/kvm shows SKIP, not
  // OK, with the first reason a test gave.
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  if (status == 0 && unit.successful_test_count() == 0 && unit.skipped_test_count() > 0) {
    for (int i = 0; i < unit.total_test_suite_count(); ++i) {
      const ::testing::TestSuite& suite = *unit.GetTestSuite(i);
      for (int j = 0; j < suite.total_test_count(); ++j) {
        const ::testing::TestResult& result = *suite.GetTestInfo(j)->result();
        if (result.Skipped() && result.total_part_count() > 0) {
          printf("SKIP: %s\n", result.GetTestPartResult(0).message());
          return 77;
        }
      }
    }
    printf("SKIP: every test skipped\n");
    return 77;
  }
  return status;
}
