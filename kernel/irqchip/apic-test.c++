// The software CPU's local APIC and IOAPIC against the SDM and the 82093AA datasheet, on a
// clock the test moves, and wired to each other as the machine wires them.
#include <gtest/gtest.h>

#include <vector>

#include "kernel/irqchip/ioapic.h"
#include "kernel/irqchip/lapic.h"

namespace bulkhead::irqchip {
namespace {

constexpr uint32_t TPR = 0x80, PPR = 0xa0, EOI = 0xb0, SVR = 0xf0, ISR = 0x100, IRR = 0x200,
                   ICR_LOW = 0x300, LVT_TIMER = 0x320, LVT_LINT0 = 0x350, TIMER_INITIAL = 0x380,
                   TIMER_CURRENT = 0x390, TIMER_DIVIDE = 0x3e0;
constexpr uint64_t IOAPIC = 0xfec00000;

struct LapicFixture {
  uint64_t now = 0;
  unsigned pokes = 0;
  std::vector<uint8_t> levelEois;
  std::vector<std::pair<uint32_t, uint8_t>> ipis;
  Lapic apic{0, [this]() { return now; }, [this]() { ++pokes; },
             [this](uint8_t vector) { levelEois.push_back(vector); },
             [this](uint32_t low, uint8_t destination) {
               ipis.push_back({low, destination});
             }};
  void enable() { apic.write(SVR, 0x1ff); }
  bool irr(uint8_t vector) { return apic.read(IRR + (vector / 32) * 0x10) & (1u << (vector % 32)); }
  bool isr(uint8_t vector) { return apic.read(ISR + (vector / 32) * 0x10) & (1u << (vector % 32)); }
};

TEST(Lapic, TakesTheHighestPriorityFirstAndHoldsLowerClassesWhileOneIsInService) {
  LapicFixture f;
  f.enable();
  f.apic.accept(0x41, false);
  f.apic.accept(0x51, false);
  EXPECT_GE(f.pokes, 2u);
  EXPECT_TRUE(f.irr(0x41));
  EXPECT_EQ(f.apic.acknowledge(), 0x51);
  EXPECT_TRUE(f.isr(0x51));
  EXPECT_FALSE(f.irr(0x51));
  EXPECT_EQ(f.apic.read(PPR), 0x50u);
  EXPECT_EQ(f.apic.acknowledge(), -1) << "0x41 is in a lower class than the 0x51 in service";
  f.apic.accept(0x61, false);
  EXPECT_EQ(f.apic.acknowledge(), 0x61) << "a higher class nests";
  f.apic.write(EOI, 0);  // ends 0x61
  EXPECT_FALSE(f.isr(0x61));
  EXPECT_TRUE(f.isr(0x51));
  f.apic.write(EOI, 0);  // ends 0x51
  EXPECT_EQ(f.apic.acknowledge(), 0x41);
  EXPECT_TRUE(f.levelEois.empty()) << "edge interrupts send no EOI to the IOAPIC";
}

TEST(Lapic, TaskPriorityHoldsBackItsClassAndBelow) {
  LapicFixture f;
  f.enable();
  f.apic.write(TPR, 0x40);
  f.apic.accept(0x45, false);
  EXPECT_EQ(f.apic.acknowledge(), -1);
  unsigned before = f.pokes;
  f.apic.write(TPR, 0x30);
  EXPECT_GT(f.pokes, before) << "lowering the TPR may release an interrupt: the CPU must look";
  EXPECT_EQ(f.apic.acknowledge(), 0x45);
}

TEST(Lapic, EndingALevelInterruptTellsTheIoapic) {
  LapicFixture f;
  f.enable();
  f.apic.accept(0x30, true);
  ASSERT_EQ(f.apic.acknowledge(), 0x30);
  f.apic.write(EOI, 0);
  EXPECT_EQ(f.levelEois, std::vector<uint8_t>{0x30});
}

TEST(Lapic, SoftwareDisabledDropsInterruptsAndMasksLvtsButStartsInVirtualWireMode) {
  LapicFixture f;
  EXPECT_TRUE(f.apic.acceptsPic()) << "the BSP's LINT0 starts as ExtINT";
  f.apic.accept(0x40, false);
  EXPECT_FALSE(f.irr(0x40)) << "a software-disabled APIC drops fixed interrupts";
  f.apic.write(LVT_TIMER, 0x20);
  EXPECT_TRUE(f.apic.read(LVT_TIMER) & 0x10000) << "LVTs stay masked while disabled";
  f.enable();
  f.apic.write(LVT_LINT0, 0x10700);  // masked ExtINT, as Linux leaves it with an IOAPIC
  EXPECT_FALSE(f.apic.acceptsPic());
  f.apic.write(SVR, 0xff);  // disable again
  EXPECT_TRUE(f.apic.read(LVT_LINT0) & 0x10000);
}

TEST(Lapic, OneShotTimerCountsDownAtTheDividedRateAndFiresOnce) {
  LapicFixture f;
  f.enable();
  f.apic.write(TIMER_DIVIDE, 0x3);  // divide by 16
  f.apic.write(LVT_TIMER, 0xef);
  f.apic.write(TIMER_INITIAL, 1000);
  EXPECT_EQ(f.apic.poll(), 16000u);
  f.now = 1600;
  EXPECT_EQ(f.apic.read(TIMER_CURRENT), 900u);
  EXPECT_EQ(f.apic.poll(), 16000u);
  EXPECT_FALSE(f.irr(0xef));
  f.now = 16000;
  EXPECT_EQ(f.apic.poll(), UINT64_MAX);
  EXPECT_TRUE(f.irr(0xef));
  EXPECT_EQ(f.apic.read(TIMER_CURRENT), 0u);
  EXPECT_EQ(f.apic.acknowledge(), 0xef);
  f.now = 100000;
  f.apic.poll();
  EXPECT_FALSE(f.irr(0xef)) << "one-shot";
}

TEST(Lapic, PeriodicTimerReloadsAndMaskedTimerCountsSilently) {
  LapicFixture f;
  f.enable();
  f.apic.write(TIMER_DIVIDE, 0xb);                // divide by 1
  f.apic.write(LVT_TIMER, (1u << 17) | 0x10030);  // periodic, masked
  f.apic.write(TIMER_INITIAL, 500);
  f.now = 500;
  EXPECT_EQ(f.apic.poll(), 1000u);
  EXPECT_FALSE(f.irr(0x30)) << "masked";
  f.apic.write(LVT_TIMER, (1u << 17) | 0x30);
  f.now = 1250;
  EXPECT_EQ(f.apic.read(TIMER_CURRENT), 250u);
  EXPECT_EQ(f.apic.poll(), 1500u);
  EXPECT_TRUE(f.irr(0x30));
  f.apic.write(TIMER_INITIAL, 0);  // stops it
  EXPECT_EQ(f.apic.poll(), UINT64_MAX);
}

TEST(Lapic, SelfIpiArrivesAtOnceAndOtherIpisGoToTheOwnerWithTheirDestination) {
  LapicFixture f;
  f.enable();
  f.apic.write(ICR_LOW, (1u << 18) | 0xf6);  // shorthand: self
  EXPECT_TRUE(f.irr(0xf6));
  EXPECT_TRUE(f.ipis.empty());
  EXPECT_EQ(f.apic.read(ICR_LOW) & (1u << 12), 0u) << "delivery status reads idle";
  f.apic.write(0x310, 1u << 24);            // destination: APIC 1
  f.apic.write(ICR_LOW, (6u << 8) | 0x9a);  // start-up at 0x9a000
  ASSERT_EQ(f.ipis.size(), 1u);
  EXPECT_EQ(f.ipis[0], (std::pair<uint32_t, uint8_t>{(6u << 8) | 0x9a, 1}));
  EXPECT_FALSE(f.irr(0x9a));
}

TEST(Lapic, MatchesPhysicalAndFlatAndClusterLogicalDestinations) {
  Lapic apic{2, []() { return 0; }, []() {}, [](uint8_t) {}};
  EXPECT_TRUE(apic.matches(2, false));
  EXPECT_TRUE(apic.matches(0xff, false)) << "broadcast";
  EXPECT_FALSE(apic.matches(1, false));
  apic.write(0xd0, 0x04u << 24);  // LDR: bit 2, flat model (DFR reset value)
  EXPECT_TRUE(apic.matches(0x0c, true));
  EXPECT_FALSE(apic.matches(0x03, true));
  apic.write(0xe0, 0x0fffffff);   // cluster model
  apic.write(0xd0, 0x12u << 24);  // cluster 1, bit 1
  EXPECT_TRUE(apic.matches(0x13, true));
  EXPECT_FALSE(apic.matches(0x23, true)) << "another cluster";
}

struct IoapicFixture {
  std::vector<std::pair<uint8_t, bool>> delivered;
  uint8_t lastDestination = 0;
  bool lastLogical = false;
  unsigned extints = 0;
  Ioapic ioapic{[this](uint8_t vector, bool level, uint8_t destination, bool logical) {
                  delivered.push_back({vector, level});
                  lastDestination = destination;
                  lastLogical = logical;
                },
                [this]() { ++extints; }};
  uint32_t reg(uint8_t index) {
    ioapic.write(Space::MMIO, IOAPIC, 4, index, false);
    return static_cast<uint32_t>(ioapic.read(Space::MMIO, IOAPIC + 0x10, 4));
  }
  void setReg(uint8_t index, uint32_t value) {
    ioapic.write(Space::MMIO, IOAPIC, 4, index, false);
    ioapic.write(Space::MMIO, IOAPIC + 0x10, 4, value, false);
  }
  void route(unsigned pin, uint64_t entry) {
    setReg(static_cast<uint8_t>(0x11 + pin * 2), static_cast<uint32_t>(entry >> 32));
    setReg(static_cast<uint8_t>(0x10 + pin * 2), static_cast<uint32_t>(entry));
  }
  IoapicFixture() {
    IoBus bus;
    EXPECT_TRUE(ioapic.attach(bus, IOAPIC).ok());
  }
};

TEST(Ioapic, ReportsTwentyFourPinsAllMaskedAtReset) {
  IoapicFixture f;
  EXPECT_EQ(f.reg(1), 0x170020u);
  for (unsigned pin = 0; pin < Ioapic::PINS; ++pin) EXPECT_TRUE(f.ioapic.entry(pin) & 0x10000);
  f.ioapic.setLine(3, true);
  EXPECT_TRUE(f.delivered.empty());
  f.setReg(0, 5u << 24);
  EXPECT_EQ(f.reg(0), 5u << 24);
}

TEST(Ioapic, EdgePinSendsOncePerRisingEdgeToItsDestination) {
  IoapicFixture f;
  f.route(2, (3ull << 56) | (1ull << 11) | 0x31);
  EXPECT_EQ(f.reg(0x14), 0x831u);
  EXPECT_EQ(f.reg(0x15), 3u << 24);
  f.ioapic.setLine(2, true);
  f.ioapic.setLine(2, true);
  f.ioapic.setLine(2, false);
  f.ioapic.setLine(2, true);
  EXPECT_EQ(f.delivered, (std::vector<std::pair<uint8_t, bool>>{{0x31, false}, {0x31, false}}));
  EXPECT_EQ(f.lastDestination, 3);
  EXPECT_TRUE(f.lastLogical);
}

TEST(Ioapic, LevelPinWaitsForEndOfInterruptAndResendsWhileAsserted) {
  IoapicFixture f;
  f.route(16, (1ull << 15) | (1ull << 13) | 0x41);  // level, active low (taken as asserted)
  f.ioapic.setLine(16, true);
  EXPECT_EQ(f.delivered.size(), 1u);
  EXPECT_TRUE(f.ioapic.entry(16) & (1ull << 14)) << "remote IRR";
  f.ioapic.setLine(16, true);
  EXPECT_EQ(f.delivered.size(), 1u) << "not again before the EOI";
  f.ioapic.endOfInterrupt(0x41);
  EXPECT_EQ(f.delivered.size(), 2u) << "still asserted: sent again";
  f.ioapic.setLine(16, false);
  f.ioapic.write(Space::MMIO, IOAPIC + 0x40, 4, 0x41, false);  // the EOI register
  EXPECT_EQ(f.delivered.size(), 2u);
  EXPECT_FALSE(f.ioapic.entry(16) & (1ull << 14));
  f.setReg(0x10 + 16 * 2, (1u << 14) | (1u << 15) | 0x41);
  EXPECT_FALSE(f.ioapic.entry(16) & (1ull << 14)) << "remote IRR is read-only";
}

TEST(Ioapic, UnmaskingAnAssertedLevelPinSendsItAndExtIntAsksThePic) {
  IoapicFixture f;
  f.route(5, (1ull << 16) | (1ull << 15) | 0x50);
  f.ioapic.setLine(5, true);
  EXPECT_TRUE(f.delivered.empty());
  f.route(5, (1ull << 15) | 0x50);
  EXPECT_EQ(f.delivered.size(), 1u);
  f.route(0, 7u << 8);  // ExtINT
  f.ioapic.setLine(0, true);
  EXPECT_EQ(f.extints, 1u);
}

TEST(ApicWiring, ALevelLineGoesThroughTheLocalApicAndComesBackAfterItsEoi) {
  // As EmuMachine wires them: IOAPIC messages into the local APIC, its level EOIs back.
  uint64_t now = 0;
  Ioapic* router = nullptr;
  Lapic apic{0, [&]() { return now; }, []() {},
             [&](uint8_t vector) { router->endOfInterrupt(vector); }};
  Ioapic ioapic{[&](uint8_t vector, bool level, uint8_t, bool) { apic.accept(vector, level); },
                []() {}};
  router = &ioapic;
  IoBus bus;
  ASSERT_TRUE(ioapic.attach(bus, IOAPIC).ok());
  apic.write(SVR, 0x1ff);
  ioapic.write(Space::MMIO, IOAPIC, 4, 0x10 + 17 * 2, false);
  ioapic.write(Space::MMIO, IOAPIC + 0x10, 4, (1u << 15) | 0x62, false);
  ioapic.setLine(17, true);
  ASSERT_EQ(apic.acknowledge(), 0x62);
  EXPECT_EQ(apic.acknowledge(), -1);
  apic.write(EOI, 0);  // the driver did not lower the line yet
  ASSERT_EQ(apic.acknowledge(), 0x62) << "the line is still up: delivered again";
  ioapic.setLine(17, false);
  apic.write(EOI, 0);
  EXPECT_EQ(apic.acknowledge(), -1);
}

}  // namespace
}  // namespace bulkhead::irqchip
