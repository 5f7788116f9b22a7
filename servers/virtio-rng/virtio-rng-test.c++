// virtio-rng without a guest: seeded bytes are replayable, also across a restart.
#include "servers/virtio-rng/virtio-rng.h"

#include <gtest/gtest.h>

#include <vector>

#include "test-host.h"

namespace bulkhead {
namespace {

using namespace sdk::virtio;
using namespace sdk::virtio::testing;

std::vector<uint8_t> draw(TestHost& host, VirtioPciDevice& device, TestDriver& driver,
                          uint16_t first) {
  driver.offer({{DATA, 48, true}}, first);
  device.notify(0);
  EXPECT_EQ(driver.usedLength(driver.usedIndex() - 1), 48u);
  return std::vector<uint8_t>(host.at(DATA), host.at(DATA) + 48);
}

TEST(VirtioRng, SameSeedSameBytesOtherSeedOtherBytes) {
  std::vector<std::vector<uint8_t>> runs;
  for (uint64_t seed : {5, 5, 6}) {
    TestHost host;
    VirtioPciDevice device(host, std::make_unique<VirtioRng>(seed));
    TestDriver driver(host, device);
    driver.start(F_VERSION_1);
    std::vector<uint8_t> first = draw(host, device, driver, 0);
    std::vector<uint8_t> second = draw(host, device, driver, 1);
    EXPECT_NE(first, second);
    first.insert(first.end(), second.begin(), second.end());
    runs.push_back(first);
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_NE(runs[0], runs[2]);
}

TEST(VirtioRng, ASeededStreamContinuesAcrossARestart) {
  TestHost host;
  VirtioPciDevice device(host, std::make_unique<VirtioRng>(9));
  TestDriver driver(host, device);
  driver.start(F_VERSION_1);
  draw(host, device, driver, 0);
  std::vector<uint8_t> committed(device.declaredState().begin(), device.declaredState().end());
  std::vector<uint8_t> expected = draw(host, device, driver, 1);

  // A successor from the commit before the second draw; the guest has not seen it complete.
  host.put<uint16_t>(USED + 2, 1);
  VirtioPciDevice successor(host, std::make_unique<VirtioRng>(9));
  memcpy(successor.declaredState().begin(), committed.data(), committed.size());
  successor.stateRestored();
  memset(host.at(DATA), 0, 48);
  successor.notify(0);
  EXPECT_EQ(std::vector<uint8_t>(host.at(DATA), host.at(DATA) + 48), expected);
}

TEST(VirtioRng, HostBytesAreNotAllZero) {
  TestHost host;
  VirtioPciDevice device(host, std::make_unique<VirtioRng>(std::nullopt));
  TestDriver driver(host, device);
  driver.start(F_VERSION_1);
  std::vector<uint8_t> bytes = draw(host, device, driver, 0);
  EXPECT_NE(bytes, std::vector<uint8_t>(48, 0));
}

}  // namespace
}  // namespace bulkhead
