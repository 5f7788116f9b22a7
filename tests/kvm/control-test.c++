// The control socket, driven by bulkhead-ctl against a running VM.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/kvm/run-bulkhead.h"

namespace bulkhead::testing {
namespace {

TEST(Control, DevicesStatsAndLiveFaultPlans) {
  REQUIRE_KVM();
  std::string socket = ::testing::TempDir() + "/bulkhead-control-test.sock";
  std::string plan = ::testing::TempDir() + "/bulkhead-control-plan";
  std::ofstream(plan) << "seed 1\nrule drop device=serial on=write every=100 action=drop\n";
  std::string bad = ::testing::TempDir() + "/bulkhead-control-bad";
  std::ofstream(bad) << "rule x device=gpu on=write action=drop\n";

  Capture vm = startCaptured({"run", "--kernel", guestDir() + "/stream.elf", "--cmdline",
                              "bytes=1000000000", "--device", "debug-exit", "--control", socket});
  std::thread reader([&vm]() { vm.wait(); });
  std::string devices;
  for (int i = 0; i < 100 && devices.find("serial") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    devices = runCtl(socket, "devices");
  }
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

}  // namespace
}  // namespace bulkhead::testing
