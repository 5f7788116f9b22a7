// virtio-console without a guest: transmitted bytes reach the output log, host input fills
// receive buffers once the driver posts them.
#include "servers/virtio-console/virtio-console.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "test-host.h"

namespace bulkhead {
namespace {

using namespace sdk::virtio;
using namespace sdk::virtio::testing;

constexpr uint64_t RX_BUFFER = DATA + 0x10000;

class VirtioConsoleTest : public ::testing::Test {
 protected:
  VirtioConsoleTest() {
    EXPECT_EQ(pipe2(input, O_NONBLOCK), 0);
    device = std::make_unique<VirtioPciDevice>(host, std::make_unique<VirtioConsole>(input[0]));
    driver = std::make_unique<TestDriver>(host, *device);
    driver->startTwoQueues();
  }
  ~VirtioConsoleTest() override {
    close(input[0]);
    close(input[1]);
  }

  TestHost host;
  int input[2];
  std::unique_ptr<VirtioPciDevice> device;
  std::unique_ptr<TestDriver> driver;
};

TEST_F(VirtioConsoleTest, TransmittedBytesReachTheOutputLog) {
  memcpy(host.at(DATA), "hello, ", 7);
  memcpy(host.at(DATA + 100), "host\n", 5);
  driver->offer({{DATA, 7, false}, {DATA + 100, 5, false}});
  device->notify(1);
  EXPECT_EQ(host.output, "hello, host\n");
  EXPECT_EQ(driver->usedIndex(), 1);
}

TEST_F(VirtioConsoleTest, HostInputWaitsForAReceiveBuffer) {
  ASSERT_EQ(write(input[1], "typed", 5), 5);
  device->notify(0);  // nothing posted: nothing taken
  EXPECT_EQ(host.get<uint16_t>(RX_USED + 2), 0);
  host.put<uint64_t>(RX_DESCRIPTORS, RX_BUFFER);
  host.put<uint32_t>(RX_DESCRIPTORS + 8, 3);
  host.put<uint16_t>(RX_DESCRIPTORS + 12, 2);
  host.put<uint64_t>(RX_DESCRIPTORS + 16, RX_BUFFER + 3);
  host.put<uint32_t>(RX_DESCRIPTORS + 24, 64);
  host.put<uint16_t>(RX_DESCRIPTORS + 28, 2);
  host.put<uint16_t>(RX_AVAIL + 4, 0);
  host.put<uint16_t>(RX_AVAIL + 6, 1);
  host.put<uint16_t>(RX_AVAIL + 2, 2);
  device->notify(0);
  // Three bytes fill the first buffer, the other two the second.
  ASSERT_EQ(host.get<uint16_t>(RX_USED + 2), 2);
  EXPECT_EQ(host.get<uint32_t>(RX_USED + 8), 3u);
  EXPECT_EQ(host.get<uint32_t>(RX_USED + 16), 2u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host.at(RX_BUFFER)), 5), "typed");
}

}  // namespace
}  // namespace bulkhead
