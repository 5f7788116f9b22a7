// The control socket, driven by bulkhead-ctl against a running VM.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "tests/kvm/run-bulkhead.h"

namespace bulkhead::testing {
namespace {

// A unix stream socket listening at `path` (whatever was there removed), or -1.
int listenAt(const std::string& path) {
  unlink(path.c_str());
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listener, 4) != 0) {
    return -1;
  }
  return listener;
}

// A guest writing its serial line for a long time, with a control socket.
Capture startStreaming(const std::string& socket) {
  return startCaptured({"run", "--kernel", guestDir() + "/stream.elf", "--cmdline",
                        "bytes=1000000000", "--device", "debug-exit", "--control", socket});
}

// `devices` once the socket answers and lists the serial port (or its last answer, after 5 s).
std::string devicesOnceServing(const std::string& socket) {
  std::string devices;
  for (int i = 0; i < 100 && devices.find("serial") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    devices = runCtl(socket, "devices");
  }
  return devices;
}

TEST(Control, DevicesStatsAndLiveFaultPlans) {
  REQUIRE_KVM();
  std::string socket = ::testing::TempDir() + "/bulkhead-control-test.sock";
  std::string plan = ::testing::TempDir() + "/bulkhead-control-plan";
  std::ofstream(plan) << "seed 1\nrule drop device=serial on=write every=100 action=drop\n";
  std::string bad = ::testing::TempDir() + "/bulkhead-control-bad";
  std::ofstream(bad) << "rule x device=gpu on=write action=drop\n";

  Capture vm = startStreaming(socket);
  std::thread reader([&vm]() { vm.wait(); });
  std::string devices = devicesOnceServing(socket);
  EXPECT_NE(devices.find("serving"), std::string::npos) << devices;
  EXPECT_NE(devices.find("debug-exit"), std::string::npos) << devices;

  int status = -1;
  EXPECT_EQ(runCtl(socket, "faults list"), "no fault plan\n");
  EXPECT_EQ(runCtl(socket, "faults load " + plan, &status), "fault plan " + plan + " in force\n");
  EXPECT_EQ(status, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::string stats = runCtl(socket, "stats");
  // The serial line's row: its FAULTS column counts the drops that fired.
  size_t row = stats.find("serial");
  ASSERT_NE(row, std::string::npos) << stats;
  unsigned long long reads, writes, irqs, faults;
  ASSERT_EQ(
      sscanf(stats.c_str() + row, "serial %llu %llu %llu %llu", &reads, &writes, &irqs, &faults), 4)
      << stats;
  EXPECT_GT(writes, 100u);
  EXPECT_GT(faults, 0u);
  EXPECT_NE(runCtl(socket, "faults list").find("# in force"), std::string::npos);
  runCtl(socket, "faults disable");
  EXPECT_NE(runCtl(socket, "faults list").find("# disabled"), std::string::npos);

  std::string refused = runCtl(socket, "faults load " + bad, &status);
  EXPECT_EQ(status, 1);
  EXPECT_EQ(refused, "bulkhead-ctl: rule x names device gpu, which this VM does not have\n");
  EXPECT_EQ(runCtl(socket, "bogus", &status).find("unknown command"), 14u);

  kill(vm.pid, SIGTERM);
  reader.join();
  EXPECT_EQ(vm.status, 130) << vm.err;
  EXPECT_NE(runCtl(socket, "devices", &status).find("cannot connect"), std::string::npos);
  EXPECT_EQ(status, 2);
}

// Plan changes under load: the server may fire a rule of the plan it had until the change
// reaches it. The core must take such a report for the old plan's rule, never fence the device
// for it (a run once ended "device serial fenced: reported fault rule 1, which it was not
// given"). Two rules, then one, then none, many times over, while the guest writes.
TEST(Control, PlanChangesUnderLoadNeverFenceTheDevice) {
  REQUIRE_KVM();
  std::string socket = ::testing::TempDir() + "/bulkhead-control-race.sock";
  std::string two = ::testing::TempDir() + "/bulkhead-control-two";
  std::ofstream(two) << "rule a device=serial on=write every=3 action=drop\n"
                        "rule b device=serial on=write every=2 action=drop\n";
  std::string one = ::testing::TempDir() + "/bulkhead-control-one";
  std::ofstream(one) << "rule c device=serial on=write every=2 action=drop\n";
  Capture vm = startStreaming(socket);
  std::thread reader([&vm]() { vm.wait(); });
  std::string devices = devicesOnceServing(socket);
  for (int round = 0; round < 60; ++round) {
    runCtl(socket, "faults load " + two);
    runCtl(socket, "faults load " + one);
    runCtl(socket, "faults disable");
    runCtl(socket, "faults enable");
    runCtl(socket, "faults clear");
  }
  devices = runCtl(socket, "devices");
  kill(vm.pid, SIGTERM);
  reader.join();
  EXPECT_EQ(devices.find("fenced"), std::string::npos) << devices;
  EXPECT_EQ(vm.err.find("fenced"), std::string::npos) << vm.err;
  EXPECT_EQ(vm.status, 130) << vm.err;
}

// --control never deletes what it did not make: an existing file stays as it was, and a socket
// another VM listens on is not taken over. Both are bad input: one line, status 2.
TEST(Control, APathThatIsNotAStaleSocketIsRefusedAndLeftAlone) {
  REQUIRE_KVM();
  std::string file = ::testing::TempDir() + "/bulkhead-control-user-file";
  std::ofstream(file, std::ios::trunc) << "precious";
  RunResult run = runBulkhead(
      {"run", "--kernel", guestDir() + "/hello.elf", "--device", "debug-exit", "--control", file});
  EXPECT_EQ(run.status, 2) << run.err;
  EXPECT_NE(run.err.find("exists and is not a socket"), std::string::npos) << run.err;
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  std::ifstream kept(file);
  std::string content((std::istreambuf_iterator<char>(kept)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "precious");

  std::string live = ::testing::TempDir() + "/bulkhead-control-live.sock";
  int listener = listenAt(live);
  ASSERT_GE(listener, 0) << strerror(errno);
  run = runBulkhead(
      {"run", "--kernel", guestDir() + "/hello.elf", "--device", "debug-exit", "--control", live});
  EXPECT_EQ(run.status, 2) << run.err;
  EXPECT_NE(run.err.find("another process listens on"), std::string::npos) << run.err;
  struct stat info;
  EXPECT_EQ(lstat(live.c_str(), &info), 0);  // still there, still the listener's
  close(listener);
  unlink(live.c_str());
}

// SIGHUP and SIGQUIT end the VM like SIGTERM: the control socket is removed.
TEST(Control, HangupAndQuitRemoveTheControlSocket) {
  REQUIRE_KVM();
  for (int signal : {SIGHUP, SIGQUIT}) {
    std::string socket = ::testing::TempDir() + "/bulkhead-control-signal.sock";
    Capture vm = startCaptured({"run", "--kernel", guestDir() + "/stream.elf", "--cmdline",
                                "bytes=1000000000", "--device", "debug-exit", "--control", socket});
    std::thread reader([&vm]() { vm.wait(); });
    ASSERT_TRUE(vm.waitForOutput());
    struct stat info;
    EXPECT_EQ(lstat(socket.c_str(), &info), 0);
    kill(vm.pid, signal);
    reader.join();
    EXPECT_EQ(vm.status, 130) << vm.err;
    EXPECT_NE(lstat(socket.c_str(), &info), 0) << "signal " << signal << " left " << socket;
  }
}

// bulkhead-ctl against a socket that is not a VM's: one line in the project's words, status 2,
// not a library's read() error.
TEST(Control, ASocketThatIsNotBulkheadsGetsOneClearLine) {
  REQUIRE_KVM();
  std::string path = ::testing::TempDir() + "/bulkhead-control-stranger.sock";
  int listener = listenAt(path);
  ASSERT_GE(listener, 0) << strerror(errno);
  std::thread stranger([listener]() {
    int peer = accept(listener, nullptr, nullptr);
    if (peer < 0) return;
    ssize_t ignored = write(peer, "HTTP/1.0 400 Bad Request\r\n\r\n", 28);
    (void)ignored;
    close(peer);
  });
  int status = -1;
  std::string said = runCtl(path, "devices", &status);
  stranger.join();
  close(listener);
  unlink(path.c_str());
  EXPECT_EQ(status, 2) << said;
  EXPECT_NE(said.find("did not answer as a Bulkhead control socket"), std::string::npos) << said;
  EXPECT_EQ(std::count(said.begin(), said.end(), '\n'), 1) << said;
}

}  // namespace
}  // namespace bulkhead::testing
