// The software CPU's i8254 against its datasheet, on a clock the test moves.
#include "kernel/irqchip/pit.h"

#include <gtest/gtest.h>

namespace bulkhead::irqchip {
namespace {

struct Fixture {
  uint64_t now = 0;
  unsigned pulses = 0;
  Pit pit{[this]() { return now; }, [this]() { ++pulses; }};
  void out(uint16_t port, uint8_t value) { pit.write(Space::PIO, port, 1, value, false); }
  uint8_t in(uint16_t port) { return static_cast<uint8_t>(pit.read(Space::PIO, port, 1)); }
  uint16_t latchedCount(unsigned channel) {
    out(0x43, static_cast<uint8_t>(channel << 6));  // counter latch
    uint8_t low = in(static_cast<uint16_t>(0x40 + channel));
    return static_cast<uint16_t>(low | in(static_cast<uint16_t>(0x40 + channel)) << 8);
  }
  // The first nanosecond at which `ticks` ticks have passed.
  static uint64_t ns(uint64_t ticks) { return (ticks * 1000000000ull + Pit::HZ - 1) / Pit::HZ; }
};

TEST(Pit, RateGeneratorInterruptsOncePerPeriodAndCountsDown) {
  Fixture f;
  f.out(0x43, 0x34);  // channel 0, lo/hi, mode 2
  f.out(0x40, 0x9c);
  f.out(0x40, 0x2e);  // 11932: 100 Hz
  EXPECT_EQ(f.latchedCount(0), 11932);
  f.now = Fixture::ns(1000) + 1;
  EXPECT_EQ(f.latchedCount(0), 11932 - 1000);
  f.pit.poll();
  EXPECT_EQ(f.pulses, 0u);
  f.now = 10000000 + 1000;  // just past 10 ms
  uint64_t next = f.pit.poll();
  EXPECT_EQ(f.pulses, 1u);
  EXPECT_GT(next, f.now);
  EXPECT_LE(next, f.now + 10000000);
  f.pit.poll();
  EXPECT_EQ(f.pulses, 1u) << "one interrupt per period";
  // A guest that does not look for a second gets one interrupt, not a storm.
  f.now += 1000000000;
  f.pit.poll();
  f.pit.poll();
  EXPECT_EQ(f.pulses, 2u);
}

TEST(Pit, ChannelTwoGatedByPort61ReportsItsOutput) {
  Fixture f;
  f.out(0x43, 0xb0);  // channel 2, lo/hi, mode 0
  f.out(0x42, 0xe8);
  f.out(0x42, 0x03);  // 1000 ticks
  EXPECT_EQ(f.in(0x61) & 0x20, 0);
  f.out(0x61, 0x01);  // gate on: counting starts now
  f.now = Fixture::ns(999);
  EXPECT_EQ(f.in(0x61) & 0x20, 0);
  f.now = Fixture::ns(1001);
  EXPECT_EQ(f.in(0x61) & 0x20, 0x20) << "OUT2 high at terminal count";
  EXPECT_EQ(f.in(0x61) & 1, 1);
  uint8_t a = f.in(0x61) & 0x10, b = f.in(0x61) & 0x10;
  EXPECT_NE(a, b) << "the refresh bit toggles";
  EXPECT_EQ(f.pulses, 0u) << "channel 2 raises no interrupt";
}

TEST(Pit, ReadBackLatchesAndHostileModesAreTamed) {
  Fixture f;
  f.out(0x43, 0x36);  // channel 0, mode 3
  f.out(0x40, 0);
  f.out(0x40, 0);  // 0 means 65536
  f.now = Fixture::ns(16);
  f.out(0x43, 0xc2);  // read-back: latch channel 0's count
  f.now = Fixture::ns(5000);
  uint16_t latched = static_cast<uint16_t>(f.in(0x40) | f.in(0x40) << 8);
  EXPECT_EQ(latched, static_cast<uint16_t>(65536 - 16));
  f.out(0x43, 0x3e);  // mode 7 is mode 3
  f.out(0x40, 1);
  f.out(0x40, 0);  // a period of one tick: still at most one interrupt per poll
  f.now += 1000000000;
  f.pit.poll();
  f.pit.poll();
  EXPECT_LE(f.pulses, 2u);
}

}  // namespace
}  // namespace bulkhead::irqchip
