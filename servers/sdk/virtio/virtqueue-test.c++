// The split virtqueue parser against well-formed and hostile rings, and the virtio-pci
// transport's feature negotiation, interrupts and recovery rule, with a model that echoes.
#include "virtqueue.h"

#include <gtest/gtest.h>

#include "chain-io.h"
#include "test-host.h"
#include "virtio-pci.h"

namespace bulkhead::sdk::virtio {
namespace {

using testing::AVAIL;
using testing::DATA;
using testing::DESCRIPTORS;
using testing::TestDriver;
using testing::TestHost;
using testing::USED;

class VirtqueueTest : public ::testing::Test {
 protected:
  VirtqueueTest() {
    queue.size = 16;
    queue.enabled = 1;
    queue.descriptors = DESCRIPTORS;
    queue.driverArea = AVAIL;
    queue.deviceArea = USED;
  }
  void descriptor(uint16_t index, uint64_t address, uint32_t length, uint16_t flags,
                  uint16_t next) {
    uint64_t at = DESCRIPTORS + 16 * index;
    host.put<uint64_t>(at, address);
    host.put<uint32_t>(at + 8, length);
    host.put<uint16_t>(at + 12, flags);
    host.put<uint16_t>(at + 14, next);
  }
  void publish(uint16_t head) {
    host.put<uint16_t>(AVAIL + 4 + 2 * (avail % 16), head);
    host.put<uint16_t>(AVAIL + 2, ++avail);
  }
  Virtqueue::Pop pop() {
    Virtqueue virtqueue(host.memory, queue);
    return virtqueue.pop(chain, &why);
  }

  TestHost host;
  QueueState queue{};
  Chain chain;
  std::string why;
  uint16_t avail = 0;
};

TEST_F(VirtqueueTest, ReadsAChainInOrder) {
  descriptor(3, DATA, 16, 1, 7);
  descriptor(7, DATA + 16, 512, 1 | 2, 1);
  descriptor(1, DATA + 528, 1, 2, 0);
  publish(3);
  ASSERT_EQ(pop(), Virtqueue::Pop::CHAIN) << why;
  EXPECT_EQ(chain.head, 3);
  ASSERT_EQ(chain.buffers.size(), 3u);
  EXPECT_EQ(chain.readableBytes, 16u);
  EXPECT_EQ(chain.writableBytes, 513u);
  EXPECT_EQ(pop(), Virtqueue::Pop::EMPTY);

  Virtqueue virtqueue(host.memory, queue);
  ASSERT_TRUE(virtqueue.push(3, 513));
  EXPECT_EQ(host.get<uint16_t>(USED + 2), 1);
  EXPECT_EQ(host.get<uint32_t>(USED + 4), 3u);
  EXPECT_EQ(host.get<uint32_t>(USED + 8), 513u);
}

TEST_F(VirtqueueTest, RefusesALoop) {
  descriptor(0, DATA, 8, 1, 1);
  descriptor(1, DATA, 8, 1, 0);
  publish(0);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
  EXPECT_NE(why.find("loops"), std::string::npos) << why;
}

TEST_F(VirtqueueTest, RefusesABufferOutsideGuestRam) {
  descriptor(0, 0xfff00000, 8, 0, 0);
  publish(0);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
  EXPECT_NE(why.find("outside guest RAM"), std::string::npos) << why;
}

TEST_F(VirtqueueTest, RefusesABufferThatWrapsTheAddressSpace) {
  descriptor(0, ~0ull - 4, 64, 0, 0);
  publish(0);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
}

TEST_F(VirtqueueTest, RefusesHugeLengths) {
  // Each buffer is in RAM, but the chain adds up to more than the limit: 16 x 1 MiB - 1 would
  // not fit the 1 MiB test RAM, so use the same buffer many times.
  for (uint16_t i = 0; i < 16; ++i)
    descriptor(i, testing::RAM_BASE, 0xfffff, i < 15 ? 1 : 0, i + 1);
  queue.size = 16;
  publish(0);
  ASSERT_EQ(pop(), Virtqueue::Pop::CHAIN) << why;  // 16 MiB: allowed
  EXPECT_EQ(chain.readableBytes, 16ull * 0xfffff);
  descriptor(0, DATA, 0xffffffff, 0, 0);  // a single 4 GiB buffer: not in RAM
  publish(0);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
}

TEST_F(VirtqueueTest, RefusesAHeadOrNextBeyondTheQueue) {
  publish(16);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
  queue.lastAvail = avail;
  descriptor(0, DATA, 8, 1, 99);
  publish(0);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
}

TEST_F(VirtqueueTest, RefusesReadableAfterWritableAndIndirect) {
  descriptor(0, DATA, 8, 1 | 2, 1);
  descriptor(1, DATA, 8, 0, 0);
  publish(0);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
  queue.lastAvail = avail;
  descriptor(2, DATA, 16, 4, 0);
  publish(2);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
  EXPECT_NE(why.find("indirect"), std::string::npos);
}

TEST_F(VirtqueueTest, RefusesAnAvailableIndexThatJumps) {
  host.put<uint16_t>(AVAIL + 2, 17);
  EXPECT_EQ(pop(), Virtqueue::Pop::BROKEN);
}

TEST_F(VirtqueueTest, RefusesRingsOutsideGuestRamOrMisaligned) {
  EXPECT_TRUE(queueValid(host.memory, queue, &why)) << why;
  QueueState bad = queue;
  bad.deviceArea = testing::RAM_BASE + testing::RAM_BYTES - 8;
  EXPECT_FALSE(queueValid(host.memory, bad, &why));
  bad = queue;
  bad.size = 12;
  EXPECT_FALSE(queueValid(host.memory, bad, &why));
  bad = queue;
  bad.descriptors += 8;
  EXPECT_FALSE(queueValid(host.memory, bad, &why));
}

TEST(ChainIo, CrossesBufferBoundaries) {
  TestHost host;
  Chain chain;
  chain.buffers = {{DATA, 3, false}, {DATA + 100, 5, false}, {DATA + 200, 4, true}};
  chain.readableBytes = 8;
  chain.writableBytes = 4;
  const char text[] = "abcdefgh";
  memcpy(host.at(DATA), text, 3);
  memcpy(host.at(DATA + 100), text + 3, 5);
  char out[6] = {};
  ASSERT_TRUE(readChain(host.memory, chain, 2, out, 5));
  EXPECT_EQ(std::string(out, 5), "cdefg");
  EXPECT_FALSE(readChain(host.memory, chain, 4, out, 5));  // past the readable stream's end
  ASSERT_TRUE(writeChain(host.memory, chain, 1, "xyz", 3));
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host.at(DATA + 201)), 3), "xyz");
}

// Copies the readable bytes into the writable ones.
class EchoModel final : public VirtioModel {
 public:
  uint16_t deviceType() const override { return 42; }
  uint32_t classCode() const override { return 0xff0000; }
  uint64_t features() const override { return 1; }
  unsigned queueCount() const override { return 1; }
  int64_t serve(unsigned, const Chain& chain, const DmaMemory& memory) override {
    ++served;
    std::vector<uint8_t> bytes(chain.readableBytes);
    if (!readChain(memory, chain, 0, bytes.data(), bytes.size())) return -1;
    if (bytes.size() > chain.writableBytes) return -1;
    if (!writeChain(memory, chain, 0, bytes.data(), bytes.size())) return -1;
    return bytes.size();
  }
  static inline unsigned served = 0;
};

class TransportTest : public ::testing::Test {
 protected:
  TransportTest() : device(host, std::make_unique<EchoModel>()), driver(host, device) {
    EchoModel::served = 0;
  }
  TestHost host;
  VirtioPciDevice device;
  TestDriver driver;
};

TEST_F(TransportTest, DescribesItselfAsAModernVirtioFunction) {
  auto identity = device.pciFunction();
  ASSERT_TRUE(identity.has_value());
  EXPECT_EQ(identity->vendorId, 0x1af4);
  EXPECT_EQ(identity->deviceId, 0x1040 + 42);
  EXPECT_EQ(identity->capabilities, 0x40);
  // The capability chain: common, notify, isr (no device config for this model), then MSI-X.
  uint8_t at = 0x40;
  std::vector<uint8_t> types;
  while (at != 0) {
    uint32_t head = device.read(Space::PCI_CONFIG, at, 4);
    if ((head & 0xff) == 0x11) break;
    EXPECT_EQ(head & 0xff, 0x09u);
    types.push_back(head >> 24);
    at = (head >> 8) & 0xff;
  }
  EXPECT_EQ(types, (std::vector<uint8_t>{1, 2, 3}));
  // MSI-X: one vector for the queue and one for configuration changes, table and pending bits
  // in BAR 0, the last capability.
  ASSERT_NE(at, 0);
  uint32_t head = device.read(Space::PCI_CONFIG, at, 4);
  EXPECT_EQ((head >> 8) & 0xff, 0u);
  EXPECT_EQ(head >> 16, 1u);  // table size N-1; disabled, not masked
  EXPECT_EQ(device.read(Space::PCI_CONFIG, at + 4, 4), MSIX_TABLE_OFFSET);
  EXPECT_EQ(device.read(Space::PCI_CONFIG, at + 8, 4), MSIX_PBA_OFFSET);
  EXPECT_EQ(identity->msix.vectors, 2u);
  EXPECT_EQ(identity->msix.bar, 0u);
  EXPECT_EQ(identity->msix.tableOffset, MSIX_TABLE_OFFSET);
}

// Finds the MSI-X capability and turns MSI-X on; programs vector 1 (for queue 0) unmasked
// unless `masked`.
uint8_t enableMsix(VirtioPciDevice& device, TestDriver& driver, bool masked) {
  uint8_t at = 0x40;
  while ((device.read(Space::PCI_CONFIG, at, 1)) != 0x11) {
    at = device.read(Space::PCI_CONFIG, at + 1, 1);
    if (at == 0) return 0;
  }
  device.write(Space::PCI_CONFIG, at + 2, 2, 0x8000);
  driver.bar(MSIX_TABLE_OFFSET + 16, 4, 0xfee01000);  // vector 1: to APIC 1
  driver.bar(MSIX_TABLE_OFFSET + 20, 4, 0);
  driver.bar(MSIX_TABLE_OFFSET + 24, 4, 0x41);
  driver.bar(MSIX_TABLE_OFFSET + 28, 4, masked ? 1 : 0);
  driver.bar(0x16, 2, 0);  // queue 0 ...
  driver.bar(0x1a, 2, 1);  // ... to vector 1
  return at;
}

TEST_F(TransportTest, WithMsixACompletionSendsTheQueuesVectorNotIntx) {
  driver.start(F_VERSION_1);
  ASSERT_NE(enableMsix(device, driver, /*masked=*/false), 0);
  EXPECT_EQ(driver.bar(0x1a, 2), 1u);
  EXPECT_EQ(host.routes[1], std::make_pair(uint64_t{0xfee01000}, uint32_t{0x41}));
  driver.offer({{DATA, 5, false}, {DATA + 64, 16, true}});
  driver.bar(NOTIFY_OFFSET, 2, 0);
  EXPECT_EQ(driver.usedIndex(), 1);
  EXPECT_EQ(host.messages, std::vector<unsigned>{1});
  EXPECT_FALSE(host.interrupt);
  EXPECT_EQ(driver.bar(ISR_OFFSET, 1), 0u);  // the queue bit is for INTx only
}

TEST_F(TransportTest, AMaskedVectorIsPendingUntilUnmasked) {
  driver.start(F_VERSION_1);
  uint8_t cap = enableMsix(device, driver, /*masked=*/true);
  driver.offer({{DATA, 5, false}, {DATA + 64, 16, true}});
  driver.bar(NOTIFY_OFFSET, 2, 0);
  EXPECT_TRUE(host.messages.empty());
  EXPECT_EQ(driver.bar(MSIX_PBA_OFFSET, 8), 2u);
  driver.bar(MSIX_TABLE_OFFSET + 28, 4, 0);  // unmask: the pending message goes now
  EXPECT_EQ(host.messages, std::vector<unsigned>{1});
  EXPECT_EQ(driver.bar(MSIX_PBA_OFFSET, 8), 0u);
  // The function mask holds every vector back the same way.
  device.write(Space::PCI_CONFIG, cap + 2, 2, 0xc000);
  EXPECT_EQ(device.read(Space::PCI_CONFIG, cap + 2, 2), 0xc001u);
  driver.offer({{DATA, 5, false}, {DATA + 64, 16, true}}, 2);
  driver.bar(NOTIFY_OFFSET, 2, 0);
  EXPECT_EQ(host.messages.size(), 1u);
  device.write(Space::PCI_CONFIG, cap + 2, 2, 0x8000);
  EXPECT_EQ(host.messages, (std::vector<unsigned>{1, 1}));
}

TEST_F(TransportTest, AVectorTheDeviceLacksReadsBackAsNoVector) {
  driver.start(F_VERSION_1);
  driver.bar(0x16, 2, 0);
  driver.bar(0x1a, 2, 2);  // vectors 0 and 1 exist
  EXPECT_EQ(driver.bar(0x1a, 2), NO_VECTOR);
  driver.bar(0x10, 2, 7);
  EXPECT_EQ(driver.bar(0x10, 2), NO_VECTOR);
  driver.bar(0x10, 2, 0);
  EXPECT_EQ(driver.bar(0x10, 2), 0u);
}

TEST_F(TransportTest, MsixChoicesSurviveARestartAndImpossibleOnesAreRefused) {
  driver.start(F_VERSION_1);
  enableMsix(device, driver, /*masked=*/false);
  std::vector<uint8_t> committed(device.declaredState().begin(), device.declaredState().end());
  VirtioPciDevice successor(host, std::make_unique<EchoModel>());
  memcpy(successor.declaredState().begin(), committed.data(), committed.size());
  successor.stateRestored();
  TestDriver next(host, successor);
  next.bar(0x16, 2, 0);
  EXPECT_EQ(next.bar(0x1a, 2), 1u);
  next.offer({{DATA, 5, false}, {DATA + 64, 16, true}});
  successor.notify(0);
  EXPECT_EQ(host.messages, std::vector<unsigned>{1});
}

TEST_F(TransportTest, ImpossibleMsixStateFromAPredecessorIsRepaired) {
  // Every byte 0x07: vectors 0x0707 of 2, pending bits beyond the table, stray control bits.
  std::vector<uint8_t> forged(device.declaredState().size(), 0x07);
  VirtioPciDevice successor(host, std::make_unique<EchoModel>());
  memcpy(successor.declaredState().begin(), forged.data(), forged.size());
  successor.stateRestored();
  TestDriver next(host, successor);
  next.bar(0x16, 2, 0);
  EXPECT_EQ(next.bar(0x1a, 2), NO_VECTOR);
  EXPECT_EQ(next.bar(0x10, 2), NO_VECTOR);
  EXPECT_EQ(next.bar(MSIX_PBA_OFFSET, 8) & ~3ull, 0u);
  uint8_t at = 0x40;
  while (successor.read(Space::PCI_CONFIG, at, 1) != 0x11) {
    at = successor.read(Space::PCI_CONFIG, at + 1, 1);
  }
  EXPECT_EQ(successor.read(Space::PCI_CONFIG, at + 2, 2) & 0x3fff, 1u);
}

TEST_F(TransportTest, EachQueueIsNotifiedAtItsOwnAddressByAnyWrite) {
  // notify_off_multiplier 4 and queue_notify_off = the queue's index: a doorbell of size 0 per
  // queue (any write rings it: on KVM a fast MMIO ioeventfd).
  uint8_t at = 0x40;
  while ((device.read(Space::PCI_CONFIG, at, 4) >> 24) != 2) {
    at = device.read(Space::PCI_CONFIG, at + 1, 1);
    ASSERT_NE(at, 0);
  }
  EXPECT_EQ(device.read(Space::PCI_CONFIG, at + 8, 4), NOTIFY_OFFSET);
  EXPECT_EQ(device.read(Space::PCI_CONFIG, at + 16, 4), NOTIFY_STRIDE);
  driver.bar(0x16, 2, 0);
  EXPECT_EQ(driver.bar(0x1e, 2), 0u);
  std::vector<Doorbell> bells = device.doorbells();
  ASSERT_EQ(bells.size(), 1u);
  EXPECT_EQ(bells[0].offset, NOTIFY_OFFSET);
  EXPECT_EQ(bells[0].size, 0u);
  // Without ioeventfds the write reaches the transport: at the queue's address, any value.
  driver.start(F_VERSION_1);
  driver.offer({{DATA, 5, false}, {DATA + 64, 16, true}});
  driver.bar(NOTIFY_OFFSET + NOTIFY_STRIDE, 2, 0);  // queue 1's address: there is no queue 1
  EXPECT_EQ(driver.usedIndex(), 0);
  driver.bar(NOTIFY_OFFSET, 4, 0x12345678);
  EXPECT_EQ(driver.usedIndex(), 1);
}

TEST_F(TransportTest, RefusesFeaturesItDidNotOfferAndLegacyDrivers) {
  EXPECT_FALSE(driver.start(F_VERSION_1 | 2) & STATUS_FEATURES_OK);
  EXPECT_FALSE(driver.start(1) & STATUS_FEATURES_OK);
  EXPECT_TRUE(driver.start(F_VERSION_1 | 1) & STATUS_FEATURES_OK);
}

TEST_F(TransportTest, ServesAChainAndRaisesTheInterruptUntilIsrIsRead) {
  ASSERT_EQ(driver.start(F_VERSION_1),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK | STATUS_FEATURES_OK);
  memcpy(host.at(DATA), "hello", 5);
  driver.offer({{DATA, 5, false}, {DATA + 64, 16, true}});
  driver.bar(NOTIFY_OFFSET, 2, 0);  // the notification as a write (no ioeventfd here)
  EXPECT_EQ(driver.usedIndex(), 1);
  EXPECT_EQ(driver.usedLength(0), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host.at(DATA + 64)), 5), "hello");
  EXPECT_TRUE(host.interrupt);
  EXPECT_EQ(driver.bar(ISR_OFFSET, 1), 1u);
  EXPECT_FALSE(host.interrupt);
  EXPECT_EQ(driver.bar(ISR_OFFSET, 1), 0u);
}

TEST_F(TransportTest, AMalformedChainSetsNeedsReset) {
  driver.start(F_VERSION_1);
  driver.offer({{0xdead0000, 5, false}});
  device.notify(0);
  EXPECT_TRUE(device.status() & STATUS_NEEDS_RESET);
  EXPECT_TRUE(host.interrupt);
  EXPECT_EQ(driver.bar(ISR_OFFSET, 1), 2u);  // a configuration change
  // Nothing more is served until a reset.
  driver.offer({{DATA, 5, false}, {DATA + 64, 16, true}}, 4);
  device.notify(0);
  EXPECT_EQ(EchoModel::served, 0u);
  driver.bar(0x14, 1, 0);
  EXPECT_EQ(device.status(), 0);
}

TEST_F(TransportTest, AQueueOutsideGuestRamIsRefusedAtEnable) {
  driver.bar(0x14, 1, 1 | 2);
  driver.bar(0x16, 2, 0);
  driver.bar(0x20, 8, 0x7000000000ull);
  driver.bar(0x1c, 2, 1);
  EXPECT_EQ(driver.bar(0x1c, 2), 0u);
  EXPECT_TRUE(device.status() & STATUS_NEEDS_RESET);
}

// The commit a chain's completion makes before the guest may see it.
std::vector<uint8_t> commitBeforePublishing(TestHost& host, VirtioPciDevice& device) {
  std::vector<uint8_t> first;
  host.onStateChanged = [&]() {
    if (first.empty()) first.assign(device.declaredState().begin(), device.declaredState().end());
  };
  device.notify(0);
  host.onStateChanged = nullptr;
  return first;
}

TEST_F(TransportTest, AChainCommittedButNotPublishedIsPublishedNotServedAgain) {
  driver.start(F_VERSION_1);
  memcpy(host.at(DATA), "abc", 3);
  driver.offer({{DATA, 3, false}, {DATA + 64, 8, true}});
  std::vector<uint8_t> committed = commitBeforePublishing(host, device);
  ASSERT_EQ(EchoModel::served, 1u);
  ASSERT_FALSE(committed.empty());
  // The server died between its commit and the used ring: the guest sees nothing done.
  host.put<uint16_t>(USED + 2, 0);
  host.put<uint64_t>(USED + 4, 0);
  VirtioPciDevice successor(host, std::make_unique<EchoModel>());
  memcpy(successor.declaredState().begin(), committed.data(), committed.size());
  successor.stateRestored();
  successor.notify(0);
  EXPECT_EQ(EchoModel::served, 1u);  // not served again...
  EXPECT_EQ(driver.usedIndex(), 1);  // ...but completed, with its length
  EXPECT_EQ(driver.usedLength(0), 3u);
  // The next chain is served once.
  driver.offer({{DATA, 3, false}, {DATA + 64, 8, true}}, 2);
  successor.notify(0);
  EXPECT_EQ(EchoModel::served, 2u);
  EXPECT_EQ(driver.usedIndex(), 2);
}

TEST_F(TransportTest, AChainCommittedAndPublishedIsNotPublishedTwice) {
  driver.start(F_VERSION_1);
  driver.offer({{DATA, 3, false}, {DATA + 64, 8, true}});
  std::vector<uint8_t> committed = commitBeforePublishing(host, device);
  ASSERT_EQ(driver.usedIndex(), 1);  // the predecessor published it, then died
  VirtioPciDevice successor(host, std::make_unique<EchoModel>());
  memcpy(successor.declaredState().begin(), committed.data(), committed.size());
  successor.stateRestored();
  successor.notify(0);
  EXPECT_EQ(EchoModel::served, 1u);
  EXPECT_EQ(driver.usedIndex(), 1);
}

TEST_F(TransportTest, AChainTakenButNotCommittedIsServedAgain) {
  driver.start(F_VERSION_1);
  std::vector<uint8_t> committed(device.declaredState().begin(), device.declaredState().end());
  // The predecessor took the chain but died before committing it: nothing of it survives.
  driver.offer({{DATA, 3, false}, {DATA + 64, 8, true}});
  VirtioPciDevice successor(host, std::make_unique<EchoModel>());
  memcpy(successor.declaredState().begin(), committed.data(), committed.size());
  successor.stateRestored();
  successor.notify(0);
  EXPECT_EQ(EchoModel::served, 1u);
  EXPECT_EQ(driver.usedIndex(), 1);
}

}  // namespace
}  // namespace bulkhead::sdk::virtio
