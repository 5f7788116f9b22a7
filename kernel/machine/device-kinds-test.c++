// The device table: every row parses, and what the rows grant is what the core relies on.
#include "kernel/machine/device-kinds.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

TEST(DeviceKinds, EveryRowParsesAndNamesOneKind) {
  absl::StatusOr<std::vector<DeviceKind>> kinds = deviceKinds();
  ASSERT_TRUE(kinds.ok()) << kinds.status();
  EXPECT_GE(kinds->size(), 10u);
}

TEST(DeviceKinds, RightsAndBackendsAreTheRowsOwn) {
  DeviceKind exit = deviceKind("debug-exit");
  EXPECT_TRUE(exit.mayExit);
  EXPECT_FALSE(exit.dma);
  EXPECT_FALSE(exit.interrupts);
  DeviceKind blk = deviceKind("virtio-blk");
  EXPECT_TRUE(blk.dma);
  EXPECT_TRUE(blk.interrupts);
  EXPECT_FALSE(blk.mayExit);
  EXPECT_EQ(blk.backend, HostBackend::DISK);
  EXPECT_EQ(blk.alias, "--disk");
  EXPECT_EQ(deviceKind("post-codes").backend, HostBackend::FILE);
  EXPECT_EQ(deviceKind("debugcon").alias, "");
}

TEST(DeviceKinds, AKindOutsideTheTableGetsNoRightsAndNoBackend) {
  DeviceKind stranger = deviceKind("hostile");
  EXPECT_EQ(stranger.kind, "hostile");
  EXPECT_FALSE(stranger.mayExit || stranger.dma || stranger.interrupts);
  EXPECT_EQ(stranger.backend, HostBackend::NONE);
}

}  // namespace
}  // namespace bulkhead
