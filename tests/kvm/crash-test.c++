// Crash isolation, seen from a guest: the serial server is killed or frozen again and again
// while a guest streams through it; every byte must arrive exactly once, in order, and the
// guest must never read a register value a real UART could not show.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "tests/kvm/run-bulkhead.h"

namespace bulkhead::testing {
namespace {

constexpr uint32_t STREAM_BYTES = 1u << 20;

std::string expectedStream(uint32_t bytes) {
  std::string stream;
  stream.reserve(bytes + 8);
  for (int line = 0; stream.size() < bytes; ++line) {
    char text[16];
    snprintf(text, sizeof(text), "%07d\n", line);
    stream += text;
  }
  stream.resize(bytes);
  uint32_t a = 1, b = 0;
  for (unsigned char byte : stream) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  char sum[32];
  snprintf(sum, sizeof(sum), "sum=%08x\n", b << 16 | a);
  return stream + sum;
}

// Runs the crash-test guest while `disturb(serverPid)` is applied `times` times, `gapMs` apart
// (randomised from a fixed seed); returns the run.
Capture streamWhileDisturbing(const std::vector<std::string>& serialOptions, int times,
                              std::pair<int, int> gapMs, void (*disturb)(pid_t), int* disturbed) {
  std::string serial = "stdio";
  for (const std::string& option : serialOptions) serial += "," + option;
  Capture run = startCaptured({"run", "--kernel", guestDir() + "/crashtest.elf", "--cmdline",
                               "bytes=" + std::to_string(STREAM_BYTES), "--serial", serial,
                               "--device", "debug-exit"});
  std::thread reader([&run]() { run.wait(); });
  // Disturb only a running device: the first start of a server is not supervised (a server
  // that cannot start at all is a configuration error).
  run.waitForOutput();
  std::mt19937 random(20261126);
  std::uniform_int_distribution<int> gap(gapMs.first, gapMs.second);
  *disturbed = 0;
  while (*disturbed < times && processAlive(run.pid)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(gap(random)));
    pid_t server = findChild(run.pid, "bulkhead-serial");
    if (server <= 0) continue;  // between incarnations
    disturb(server);
    ++*disturbed;
  }
  reader.join();
  return run;
}

TEST(CrashIsolation, TwoHundredKillsLoseNoByteAndRepeatNone) {
  REQUIRE_KVM();
  int kills = 0;
  Capture run = streamWhileDisturbing(
      {"restarts=100000/1s"}, 220, {5, 30}, [](pid_t server) { kill(server, SIGKILL); }, &kills);
  EXPECT_GE(kills, 200);
  EXPECT_EQ(run.status, 1) << run.err.substr(0, 2000);
  EXPECT_EQ(run.err.find("FAIL"), std::string::npos);
  std::string expected = expectedStream(STREAM_BYTES);
  ASSERT_EQ(run.out.size(), expected.size()) << "bytes lost or repeated";
  EXPECT_TRUE(run.out == expected) << "bytes changed or reordered";
  EXPECT_NE(run.err.find("restarting it"), std::string::npos);
}

TEST(CrashIsolation, AFrozenServerIsRestartedByTheWatchdog) {
  REQUIRE_KVM();
  int stops = 0;
  Capture run = streamWhileDisturbing(
      {"restarts=100000/1s", "watchdog=100ms"}, 20, {150, 300},
      [](pid_t server) { kill(server, SIGSTOP); }, &stops);
  EXPECT_EQ(stops, 20);
  EXPECT_EQ(run.status, 1) << run.err.substr(0, 2000);
  EXPECT_TRUE(run.out == expectedStream(STREAM_BYTES)) << "bytes lost, repeated or changed";
  EXPECT_NE(run.err.find("left a request waiting"), std::string::npos) << run.err.substr(0, 2000);
}

TEST(CrashIsolation, ACrashLoopFencesTheDeviceAndTheGuestReadsAllOnes) {
  REQUIRE_KVM();
  Capture run = startCaptured({"run", "--kernel", guestDir() + "/fence-probe.elf", "--serial",
                               "stdio,restarts=3/60s", "--device", "debug-exit"});
  std::thread reader([&run]() { run.wait(); });
  ASSERT_TRUE(run.waitForOutput());  // "ready": the serial server is serving
  int kills = 0;
  for (int i = 0; i < 500 && kills < 4 && processAlive(run.pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pid_t server = findChild(run.pid, "bulkhead-serial");
    if (server > 0 && kill(server, SIGKILL) == 0) ++kills;
  }
  reader.join();
  EXPECT_EQ(kills, 4);
  EXPECT_EQ(run.status, (9 << 1) | 1) << run.err;  // the guest saw all-ones, and kept running
  EXPECT_NE(run.err.find("device serial fenced: its server died 4 times"), std::string::npos)
      << run.err;
}

TEST(CrashIsolation, OnFailureErrorFencesAtOnce) {
  REQUIRE_KVM();
  Capture run = startCaptured({"run", "--kernel", guestDir() + "/fence-probe.elf", "--serial",
                               "stdio,on-failure=error", "--device", "debug-exit"});
  std::thread reader([&run]() { run.wait(); });
  ASSERT_TRUE(run.waitForOutput());
  pid_t server = -1;
  for (int i = 0; i < 250 && server <= 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    server = findChild(run.pid, "bulkhead-serial");
  }
  ASSERT_GT(server, 0);
  kill(server, SIGKILL);
  reader.join();
  EXPECT_EQ(run.status, (9 << 1) | 1) << run.err;
  EXPECT_NE(run.err.find("on-failure=error"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace bulkhead::testing
