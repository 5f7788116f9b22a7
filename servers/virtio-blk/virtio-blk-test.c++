// virtio-blk without a guest: requests through the transport onto a temporary image file.
#include "servers/virtio-blk/virtio-blk.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "test-host.h"

namespace bulkhead {
namespace {

using namespace sdk::virtio;
using namespace sdk::virtio::testing;

constexpr uint64_t HEADER = DATA;
constexpr uint64_t PAYLOAD = DATA + 0x1000;
constexpr uint64_t STATUS = DATA + 0x100;

class VirtioBlkTest : public ::testing::Test {
 protected:
  void open(bool readOnly, uint64_t bytes = 64 * 1024) {
    char name[] = "/tmp/virtio-blk-test-XXXXXX";
    fd = mkstemp(name);
    ASSERT_GE(fd, 0);
    unlink(name);
    ASSERT_EQ(ftruncate(fd, bytes), 0);
    device = std::make_unique<VirtioPciDevice>(
        host, std::make_unique<VirtioBlk>(makeUringBackend(fd), bytes, readOnly, "disk-7"));
    driver = std::make_unique<TestDriver>(host, *device);
    ASSERT_TRUE(driver->start(F_VERSION_1 | (1ull << 9)) & STATUS_FEATURES_OK);
  }
  ~VirtioBlkTest() override {
    if (fd >= 0) close(fd);
  }

  // One request; returns the status byte the device wrote.
  uint8_t request(uint32_t type, uint64_t sector, uint32_t bytes, bool deviceWrites) {
    host.put<uint32_t>(HEADER, type);
    host.put<uint32_t>(HEADER + 4, 0);
    host.put<uint64_t>(HEADER + 8, sector);
    host.put<uint8_t>(STATUS, 0xee);
    std::vector<TestDriver::Piece> pieces = {{HEADER, 16, false}};
    if (bytes > 0) pieces.push_back({PAYLOAD, bytes, deviceWrites});
    pieces.push_back({STATUS, 1, true});
    driver->offer(pieces, next);
    next = (next + pieces.size()) % TestDriver::SIZE;
    device->notify(0);
    return host.get<uint8_t>(STATUS);
  }

  TestHost host;
  int fd = -1;
  std::unique_ptr<VirtioPciDevice> device;
  std::unique_ptr<TestDriver> driver;
  uint16_t next = 0;
};

TEST_F(VirtioBlkTest, OffersCapacityFlushAndBlockSize) {
  open(false);
  EXPECT_EQ(driver->bar(DEVICE_OFFSET, 4) | driver->bar(DEVICE_OFFSET + 4, 4) << 32, 128u);
  EXPECT_EQ(driver->bar(DEVICE_OFFSET + 20, 4), 512u);
  driver->bar(0, 4, 0);
  EXPECT_TRUE(driver->bar(4, 4) & (1u << 9));
  EXPECT_FALSE(driver->bar(4, 4) & (1u << 5));
}

TEST_F(VirtioBlkTest, WritesReachTheImageAndReadBack) {
  open(false);
  for (unsigned i = 0; i < 1024; ++i) host.at(PAYLOAD)[i] = i * 7;
  ASSERT_EQ(request(1, 3, 1024, false), 0);
  ASSERT_EQ(request(4, 0, 0, false), 0);
  std::vector<uint8_t> image(1024);
  ASSERT_EQ(pread(fd, image.data(), image.size(), 3 * 512), 1024);
  EXPECT_EQ(memcmp(image.data(), host.at(PAYLOAD), 1024), 0);

  memset(host.at(PAYLOAD), 0, 1024);
  ASSERT_EQ(request(0, 3, 1024, true), 0);
  EXPECT_EQ(memcmp(image.data(), host.at(PAYLOAD), 1024), 0);
  EXPECT_EQ(driver->usedLength(driver->usedIndex() - 1), 1025u);  // data and status
}

TEST_F(VirtioBlkTest, RefusesRequestsPastTheEndOrNotWholeSectors) {
  open(false);
  EXPECT_EQ(request(0, 127, 512, true), 0);
  EXPECT_EQ(request(0, 127, 1024, true), 1);
  EXPECT_EQ(request(1, ~0ull, 512, false), 1);
  EXPECT_EQ(request(1, 0, 100, false), 1);
  EXPECT_EQ(device->status() & STATUS_NEEDS_RESET, 0);
}

TEST_F(VirtioBlkTest, AReadOnlyDiskRefusesWrites) {
  open(true);
  driver->bar(0, 4, 0);
  EXPECT_TRUE(driver->bar(4, 4) & (1u << 5));
  EXPECT_EQ(request(1, 0, 512, false), 1);
  EXPECT_EQ(request(0, 0, 512, true), 0);
}

TEST_F(VirtioBlkTest, AnswersGetIdAndUnsupported) {
  open(false);
  EXPECT_EQ(request(8, 0, 20, true), 0);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host.at(PAYLOAD))), "disk-7");
  EXPECT_EQ(request(11, 0, 0, false), 2);  // DISCARD was not offered
}

TEST_F(VirtioBlkTest, AChainWithoutRoomForTheStatusBreaksTheQueue) {
  open(false);
  host.put<uint32_t>(HEADER, 0);
  driver->offer({{HEADER, 16, false}}, 0);
  device->notify(0);
  EXPECT_TRUE(device->status() & STATUS_NEEDS_RESET);
}

}  // namespace
}  // namespace bulkhead
