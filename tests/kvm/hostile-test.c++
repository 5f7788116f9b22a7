// Hostile device servers: what a compromised server tries is refused by its sandbox or kills
// only itself, and what it sends the core fences it. Either way the core and the guest go on.
#include <gtest/gtest.h>

#include "tests/kvm/run-bulkhead.h"

namespace bulkhead::testing {
namespace {

RunResult attack(const std::string& name) {
  return runBulkhead({"run", "--kernel", guestDir() + "/probe.elf", "--device",
                      "hostile,attack=" + name, "--device", "debug-exit"});
}

constexpr const char* ALL_ONES = "value=0xffffffff\n";

TEST(Hostile, SandboxRefusesPathsAndSockets) {
  REQUIRE_KVM();
  for (const char* name : {"open", "kvm", "socket"}) {
    RunResult run = attack(name);
    EXPECT_EQ(run.status, 1) << name << ": " << run.err;
    // EPERM (1) from seccomp, four times: the server lives on and keeps being refused.
    EXPECT_EQ(run.out, "value=0x1\nvalue=0x1\nvalue=0x1\nvalue=0x1\n") << name;
  }
}

TEST(Hostile, SandboxKillsPtraceExecveAndStrayMemory) {
  REQUIRE_KVM();
  struct Case {
    const char* name;
    const char* death;
  } cases[] = {
      {"ptrace", "killed by signal 31"},
      {"execve", "killed by signal 31"},
      {"memory", "killed by signal 11"},
  };
  for (const Case& c : cases) {
    RunResult run = attack(c.name);
    EXPECT_EQ(run.status, 1) << c.name << ": " << run.err;
    EXPECT_NE(run.err.find(c.death), std::string::npos) << c.name << ": " << run.err;
    // Every incarnation dies the same way, so the crash loop fences the device.
    EXPECT_NE(run.err.find("device hostile fenced"), std::string::npos) << run.err;
    EXPECT_NE(run.out.find(ALL_ONES), std::string::npos) << run.out;
  }
}

TEST(Hostile, LyingMessagesFenceTheDevice) {
  REQUIRE_KVM();
  struct Case {
    const char* name;
    const char* reason;
  } cases[] = {
      {"garbage", "malformed reply"}, {"oversize", "reply ring is corrupt"},
      {"future", "from the future"},  {"index", "reply ring is corrupt"},
      {"irq", "interrupt line 9"},    {"exit", "without the right"},
  };
  for (const Case& c : cases) {
    RunResult run = attack(c.name);
    EXPECT_EQ(run.status, 1) << c.name << ": " << run.err;
    EXPECT_NE(run.err.find("device hostile fenced"), std::string::npos)
        << c.name << ": " << run.err;
    EXPECT_NE(run.err.find(c.reason), std::string::npos) << c.name << ": " << run.err;
    // After the fence the guest reads all-ones, as from an empty slot.
    EXPECT_NE(run.out.find(ALL_ONES), std::string::npos) << c.name << ": " << run.out;
    // And the server is gone: a fenced server could still raise interrupts or touch guest RAM.
    EXPECT_NE(run.err.find("its fenced server was sent SIGKILL"), std::string::npos)
        << c.name << ": " << run.err;
  }
}

TEST(Hostile, AServerThatDiesWhileStartingIsStartedAgainWithinItsBudgetThenRefused) {
  REQUIRE_KVM();
  // Needs no guest code to run: the servers start before the first instruction.
  RunResult run = runBulkhead({"run", "--kernel", guestDir() + "/probe.elf", "--device",
                               "hostile,attack=abort-at-start,restarts=2/60s"});
  EXPECT_EQ(run.status, 2) << run.err;
  size_t again = 0;
  for (size_t at = 0; (at = run.err.find("died while starting", at)) != std::string::npos; ++at)
    ++again;
  EXPECT_EQ(again, 2u) << "started again twice (restarts=2), then given up: " << run.err;
  EXPECT_NE(run.err.find("device server hostile refused to start"), std::string::npos) << run.err;
}

TEST(Hostile, AServerThatDiesAfterItWasPlacedIsStartedAgainInItsPlace) {
  REQUIRE_KVM();
  // The first incarnation answers its attach (the core puts its ports and PCI function on the
  // buses), then dies when the core hands it its interrupt and doorbells. The next one must be
  // checked against that placement, not placed a second time (which the buses refuse).
  REQUIRE_KVM();
  RunResult run = attack("abort-at-wire,restarts=2/60s");
  EXPECT_NE(run.err.find("died while starting"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find("already registered"), std::string::npos) << run.err;
  // The guest ran and read the second incarnation's answers.
  EXPECT_EQ(run.status, 1) << run.err;
  EXPECT_EQ(run.out, "value=0x5a\nvalue=0x5a\nvalue=0x5a\nvalue=0x5a\n") << run.err;
}

TEST(Hostile, AServerThatTakesARequestAndHangsIsKilledByTheWatchdog) {
  REQUIRE_KVM();
  // The ring is empty, yet a vCPU waits for an answer: that is a hang too. The watchdog kills
  // the server; its successors refuse the ring it left (or hang the same way), so after two
  // restarts the device is fenced for dying, not for the 5 s round-trip limit the vCPU would
  // otherwise wait out.
  REQUIRE_KVM();
  RunResult run = attack("take-and-hang,restarts=2/60s,watchdog=100ms");
  EXPECT_NE(run.err.find("left a request waiting for over 100 ms"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("fenced: its server died 3 times"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find("within its time limit"), std::string::npos) << run.err;
  EXPECT_NE(run.out.find(ALL_ONES), std::string::npos) << run.out;
}

TEST(Hostile, AServerThatRefusesItsOptionsIsNotStartedAgain) {
  REQUIRE_KVM();
  RunResult run = runBulkhead({"run", "--kernel", guestDir() + "/probe.elf", "--device",
                               "hostile,restarts=2/60s"});  // no attack=: the server refuses
  EXPECT_EQ(run.status, 2) << run.err;
  EXPECT_NE(run.err.find("needs attack=NAME"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find("died while starting"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace bulkhead::testing
