// The PCI host bridge: config mechanism #1, the emulated header, BAR sizing and moving, routing
// of capability reads and BAR accesses to the owning device, and doorbells following BARs.
#include "kernel/bus/pci-host.h"

#include <gtest/gtest.h>

#include <tuple>
#include <vector>

namespace bulkhead {
namespace {

class RecordingDevice final : public IoHandler {
 public:
  ~RecordingDevice() noexcept override = default;
  uint64_t read(Space space, uint64_t address, unsigned size) override {
    reads.emplace_back(space, address, size);
    return 0x5a;
  }
  void write(Space space, uint64_t address, unsigned size, uint64_t value,
             bool synchronous) override {
    writes.emplace_back(space, address, value);
    synchronousWrites.push_back(synchronous);
  }
  std::vector<bool> synchronousWrites;
  std::vector<std::tuple<Space, uint64_t, unsigned>> reads;
  std::vector<std::tuple<Space, uint64_t, uint64_t>> writes;
};

class PciHostTest : public ::testing::Test {
 protected:
  PciHostTest() {
    EXPECT_TRUE(pci.attach(bus).ok());
    pci.onDoorbellMoved(
        [this](bool pio, uint64_t address, unsigned size, uint64_t value, int fd, bool assign) {
          if (assign) {
            doorbells.emplace_back(address, value);
          } else {
            std::erase(doorbells, std::make_pair(address, value));
          }
        });
  }
  PciFunctionSpec spec() {
    PciFunctionSpec s;
    s.owner = "test";
    s.handler = &device;
    s.function.vendorId = 0x1af4;
    s.function.deviceId = 0x1042;
    s.function.classCode = 0x018000;
    s.function.revision = 1;
    s.function.subsystemVendorId = 0x1af4;
    s.function.subsystemId = 2;
    s.function.capabilities = 0x40;
    s.function.interruptPin = true;
    s.function.bars = {{0, 0x4000, false}, {2, 0x20, true}};
    s.doorbells = {{{0, 0x3000, 2, 0}, 7}};
    return s;
  }
  uint32_t config(unsigned slot, unsigned offset) {
    bus.write(Space::PIO, 0xcf8, 4, 0x80000000u | slot << 11 | offset);
    return bus.read(Space::PIO, 0xcfc, 4);
  }
  void setConfig(unsigned slot, unsigned offset, uint32_t value) {
    bus.write(Space::PIO, 0xcf8, 4, 0x80000000u | slot << 11 | offset);
    bus.write(Space::PIO, 0xcfc, 4, value);
  }

  IoBus bus;
  PciHost pci;
  RecordingDevice device;
  std::vector<std::pair<uint64_t, uint64_t>> doorbells;
};

TEST_F(PciHostTest, EmulatesTheHeaderFromTheDescription) {
  auto slot = pci.add(spec());
  ASSERT_TRUE(slot.ok()) << slot.status();
  EXPECT_EQ(*slot, 1u);
  EXPECT_EQ(config(0, 0), 0x12378086u);  // the host bridge, an i440FX by its IDs
  EXPECT_EQ(config(0, 8) >> 8, 0x060000u);
  EXPECT_EQ(config(1, 0), 0x10421af4u);
  EXPECT_EQ(config(1, 4) >> 16 & 0x10, 0x10u);  // a capability list
  EXPECT_EQ(config(1, 8), 0x01800001u);
  EXPECT_EQ(config(1, 0x2c), 0x00021af4u);
  EXPECT_EQ(config(1, 0x34), 0x40u);
  EXPECT_EQ(config(1, 0x3c), 0x100u | PciHost::gsiForSlot(1));
  EXPECT_EQ(config(5, 0), 0xffffffffu);  // nobody there
  EXPECT_TRUE(device.reads.empty());     // the header never asks the server
}

// Firmware writes its own IRQ choice (SeaBIOS: 10 or 11) and builds its MP table from what it
// reads back: the register must keep reporting the GSI the function is really wired to.
TEST_F(PciHostTest, TheInterruptLineReportsTheWiringWhateverTheGuestWrites) {
  ASSERT_TRUE(pci.add(spec()).ok());
  setConfig(1, 0x3c, 0x10a);
  EXPECT_EQ(config(1, 0x3c), 0x100u | PciHost::gsiForSlot(1));
}

TEST_F(PciHostTest, ByteReadsOfTheDataPort) {
  ASSERT_TRUE(pci.add(spec()).ok());
  bus.write(Space::PIO, 0xcf8, 4, 0x80000000u | 1 << 11);
  EXPECT_EQ(bus.read(Space::PIO, 0xcfe, 2), 0x1042u);
  EXPECT_EQ(bus.read(Space::PIO, 0xcfd, 1), 0x1au);
}

TEST_F(PciHostTest, ForwardsCapabilitiesToTheDevice) {
  ASSERT_TRUE(pci.add(spec()).ok());
  EXPECT_EQ(config(1, 0x44), 0x5au);
  ASSERT_EQ(device.reads.size(), 1u);
  EXPECT_EQ(device.reads[0], std::make_tuple(Space::PCI_CONFIG, uint64_t{0x44}, 4u));
}

TEST_F(PciHostTest, PlacesSizesAndMovesBars) {
  ASSERT_TRUE(pci.add(spec()).ok());
  uint32_t bar0 = config(1, 0x10);
  EXPECT_EQ(bar0, PCI_MMIO_BASE);
  EXPECT_EQ(config(1, 0x18) & 1, 1u);  // an I/O BAR
  EXPECT_EQ(config(1, 4) & 3, 3u);     // decoding on, as firmware leaves it
  ASSERT_EQ(doorbells.size(), 1u);
  EXPECT_EQ(doorbells[0].first, PCI_MMIO_BASE + 0x3000);

  // A BAR access arrives as an offset into the BAR.
  bus.write(Space::MMIO, PCI_MMIO_BASE + 0x14, 1, 0x0f);
  ASSERT_EQ(device.writes.size(), 1u);
  EXPECT_EQ(device.writes[0], std::make_tuple(Space::BAR0, uint64_t{0x14}, uint64_t{0x0f}));

  // Sizing: all-ones reads back the size mask; while it is there nothing is decoded.
  setConfig(1, 0x10, 0xffffffff);
  EXPECT_EQ(config(1, 0x10), ~0x3fffu);
  EXPECT_TRUE(doorbells.empty());
  // Moved: accesses and the doorbell follow.
  setConfig(1, 0x10, 0xd0000000);
  EXPECT_EQ(pci.barAddress(1, 0), 0xd0000000u);
  ASSERT_EQ(doorbells.size(), 1u);
  EXPECT_EQ(doorbells[0].first, 0xd0003000u);
  EXPECT_EQ(bus.read(Space::MMIO, 0xd0000004, 4), 0x5au);
  EXPECT_EQ(std::get<0>(device.reads.back()), Space::BAR0);
  EXPECT_EQ(bus.read(Space::MMIO, PCI_MMIO_BASE + 4, 4), 0xffffffffu);  // the old place is empty

  // Memory decoding off: the BAR and its doorbell disappear.
  setConfig(1, 4, 1);
  EXPECT_EQ(pci.barAddress(1, 0), 0u);
  EXPECT_TRUE(doorbells.empty());
}

TEST_F(PciHostTest, RefusesBadBarsAndDoorbells) {
  PciFunctionSpec s = spec();
  s.function.bars = {{0, 0x3000, false}};  // not a power of two
  EXPECT_FALSE(pci.add(s).ok());
  s = spec();
  s.function.bars = {{7, 0x1000, false}};
  EXPECT_FALSE(pci.add(s).ok());
  s = spec();
  s.function.bars = {{0, 0x1000, false}, {0, 0x1000, false}};
  EXPECT_FALSE(pci.add(s).ok());
  s = spec();
  s.doorbells = {{{0, 0x3fff, 2, 0}, 7}};  // straddles the BAR's end
  EXPECT_FALSE(pci.add(s).ok());
  s = spec();
  s.function.capabilities = 0x20;
  EXPECT_FALSE(pci.add(s).ok());
  s = spec();
  s.function.bars = {{0, 2ull << 30, false}};
  EXPECT_FALSE(pci.add(s).ok());
}

TEST_F(PciHostTest, ADoorbellOfSizeZeroRingsOnAnyWriteAndMovesWithItsBar) {
  PciFunctionSpec s = spec();
  s.doorbells = {{{0, 0x3004, 0, 0}, 7}};
  ASSERT_TRUE(pci.add(s).ok());
  uint64_t bar0 = pci.barAddress(1, 0);
  ASSERT_EQ(doorbells.size(), 1u);
  EXPECT_EQ(doorbells[0], std::make_pair(bar0 + 0x3004, uint64_t{0}));
  s.doorbells = {{{0, 0x4000, 0, 0}, 7}};  // at the BAR's end: outside it
  EXPECT_FALSE(pci.add(s).ok());
}

TEST_F(PciHostTest, WritesToTheMsixTableAreSynchronousAndOnlyThose) {
  PciFunctionSpec s = spec();
  s.function.msix = {3, 0, 0x2000};  // 3 vectors: 0x2000-0x202f of BAR 0
  ASSERT_TRUE(pci.add(s).ok());
  uint64_t bar0 = pci.barAddress(1, 0);
  for (uint64_t offset : {0x1ffcull, 0x2000ull, 0x202cull, 0x2030ull}) {
    bus.write(Space::MMIO, bar0 + offset, 4, 1);
  }
  EXPECT_EQ(device.synchronousWrites, (std::vector<bool>{false, true, true, false}));
}

TEST_F(PciHostTest, RefusesAnMsixTableThatDoesNotFit) {
  PciFunctionSpec s = spec();
  s.function.msix = {3, 0, 0x3ff0};  // runs past BAR 0's 16 KiB
  EXPECT_FALSE(pci.add(s).ok());
  s.function.msix = {3, 2, 0};  // BAR 2 is an I/O BAR
  EXPECT_FALSE(pci.add(s).ok());
  s.function.msix = {3, 1, 0};  // there is no BAR 1
  EXPECT_FALSE(pci.add(s).ok());
  s.function.msix = {33, 0, 0};
  EXPECT_FALSE(pci.add(s).ok());
  s.function.msix = {3, 0, 0x2004};  // misaligned
  EXPECT_FALSE(pci.add(s).ok());
}

TEST_F(PciHostTest, FillsTheBusAndSaysSo) {
  for (unsigned i = 1; i < PCI_SLOTS; ++i) {
    PciFunctionSpec s = spec();
    s.function.bars = {{0, 0x1000, false}};
    s.doorbells.clear();
    ASSERT_TRUE(pci.add(s).ok()) << i;
  }
  auto full = pci.add(spec());
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("slots"), std::string::npos);
}

}  // namespace
}  // namespace bulkhead
