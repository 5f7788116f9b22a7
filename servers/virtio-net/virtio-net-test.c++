// virtio-net without a guest: frames through a socketpair backend in both directions, the link
// status, and back-pressure from a full backend.
#include "servers/virtio-net/virtio-net.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test-host.h"

namespace bulkhead {
namespace {

using namespace sdk::virtio;
using namespace sdk::virtio::testing;

constexpr uint64_t TX_FRAME = DATA;
constexpr uint64_t RX_BUFFER = DATA + 0x10000;

class VirtioNetTest : public ::testing::Test {
 protected:
  VirtioNetTest() {
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair), 0);
    device = std::make_unique<VirtioPciDevice>(
        host,
        std::make_unique<VirtioNet>(pair[0], false, std::array<uint8_t, 6>{2, 0, 0, 0, 0, 7}));
    driver = std::make_unique<TestDriver>(host, *device);
    driver->startTwoQueues();
  }
  ~VirtioNetTest() override {
    close(pair[0]);
    close(pair[1]);
  }
  // One receive buffer of `bytes` at RX_BUFFER, made available on the receive queue.
  void offerReceiveBuffer(uint32_t bytes) {
    host.put<uint64_t>(RX_DESCRIPTORS, RX_BUFFER);
    host.put<uint32_t>(RX_DESCRIPTORS + 8, bytes);
    host.put<uint16_t>(RX_DESCRIPTORS + 12, 2);
    host.put<uint16_t>(RX_AVAIL + 4 + 2 * (rxAvail % 16), 0);
    host.put<uint16_t>(RX_AVAIL + 2, ++rxAvail);
    device->notify(0);
  }

  TestHost host;
  int pair[2];
  std::unique_ptr<VirtioPciDevice> device;
  std::unique_ptr<TestDriver> driver;
  uint16_t rxAvail = 0;
};

TEST_F(VirtioNetTest, ReportsItsMacAndALinkThatIsUp) {
  EXPECT_EQ(driver->bar(DEVICE_OFFSET + 5, 1), 7u);
  EXPECT_EQ(driver->bar(DEVICE_OFFSET + 6, 2), 1u);
}

TEST_F(VirtioNetTest, SendsFramesWithoutTheHeader) {
  memcpy(host.at(TX_FRAME + 12), "frame-one", 9);
  driver->offer({{TX_FRAME, 12, false}, {TX_FRAME + 12, 9, false}});
  device->notify(1);
  char got[64];
  ASSERT_EQ(recv(pair[1], got, sizeof(got), MSG_DONTWAIT), 9);
  EXPECT_EQ(std::string(got, 9), "frame-one");
  EXPECT_EQ(driver->usedIndex(), 1);
}

TEST_F(VirtioNetTest, AReceivedFrameWaitsForABuffer) {
  ASSERT_EQ(send(pair[1], "hello", 5, 0), 5);
  device->notify(0);  // no buffer yet: nothing happens
  EXPECT_EQ(host.get<uint16_t>(RX_USED + 2), 0);
  offerReceiveBuffer(2048);
  ASSERT_EQ(host.get<uint16_t>(RX_USED + 2), 1);
  EXPECT_EQ(host.get<uint32_t>(RX_USED + 8), 12u + 5);
  EXPECT_EQ(host.get<uint16_t>(RX_BUFFER + 10), 1);  // num_buffers
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host.at(RX_BUFFER + 12)), 5), "hello");
  EXPECT_TRUE(host.interrupt);
}

TEST_F(VirtioNetTest, AFrameTooLargeForTheBufferIsDropped) {
  std::string big(3000, 'x');
  ASSERT_EQ(send(pair[1], big.data(), big.size(), 0), 3000);
  ASSERT_EQ(send(pair[1], "next", 4, 0), 4);
  offerReceiveBuffer(1024);  // takes the big frame's place, empty
  offerReceiveBuffer(1024);
  EXPECT_EQ(host.get<uint16_t>(RX_USED + 2), 2);
  EXPECT_EQ(host.get<uint32_t>(RX_USED + 8), 0u);
  EXPECT_EQ(host.get<uint32_t>(RX_USED + 16), 12u + 4);
}

TEST_F(VirtioNetTest, AFullBackendKeepsTheFrameForLater) {
  int size = 4096;
  setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  std::string frame(2000, 'y');
  memcpy(host.at(TX_FRAME + 12), frame.data(), frame.size());
  uint16_t sent = 0;
  // Queue frames until the backend refuses one.
  for (uint16_t i = 0; i < 8; ++i) {
    driver->offer({{TX_FRAME, 12, false}, {TX_FRAME + 12, 2000, false}}, 2 * i);
    device->notify(1);
    if (driver->usedIndex() == sent) break;
    ++sent;
  }
  ASSERT_LT(sent, 8) << "the backend never filled up";
  ASSERT_EQ(host.later.size(), 1u);  // a retry is scheduled
  char got[4096];
  while (recv(pair[1], got, sizeof(got), MSG_DONTWAIT) > 0) {
  }
  host.runLater();
  EXPECT_EQ(driver->usedIndex(), sent + 1);  // the frame that waited went out, once
  EXPECT_EQ(recv(pair[1], got, sizeof(got), MSG_DONTWAIT), 2000);
}

}  // namespace
}  // namespace bulkhead
