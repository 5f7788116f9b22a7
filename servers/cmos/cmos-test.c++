// The CMOS/RTC model without a guest: memory-size bytes, BCD clock, status registers.
#include "servers/cmos/cmos.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

uint8_t get(Cmos& cmos, uint8_t index) {
  cmos.write(Cmos::INDEX_PORT, index | 0x80);  // with NMI masked, as BIOSes do
  return cmos.read(Cmos::DATA_PORT);
}

TEST(Cmos, MemorySizeBytes) {
  Cmos cmos(128ull << 20, 1ull << 30, 4);
  EXPECT_EQ(get(cmos, 0x15) | get(cmos, 0x16) << 8, 640);
  EXPECT_EQ(get(cmos, 0x30) | get(cmos, 0x31) << 8, 0xfc00);  // capped at 63 MiB
  EXPECT_EQ(get(cmos, 0x34) | get(cmos, 0x35) << 8, (112 << 20) / 65536);
  EXPECT_EQ(get(cmos, 0x5b) | get(cmos, 0x5c) << 8 | get(cmos, 0x5d) << 16, (1 << 30) / 65536);
  EXPECT_EQ(get(cmos, 0x5f), 3);
  Cmos small(8ull << 20, 0, 1);
  EXPECT_EQ(get(small, 0x17) | get(small, 0x18) << 8, 7 * 1024);
  EXPECT_EQ(get(small, 0x34) | get(small, 0x35) << 8, 0);
}

TEST(Cmos, TheClockReadsTheHostsTimeInBcd) {
  Cmos cmos(64 << 20, 0, 1);
  cmos.setClock([] { return time_t{1795704723}; });  // 2026-11-26 14:52:03 UTC, a Thursday
  EXPECT_EQ(get(cmos, 0x00), 0x03);
  EXPECT_EQ(get(cmos, 0x02), 0x52);
  EXPECT_EQ(get(cmos, 0x04), 0x14);
  EXPECT_EQ(get(cmos, 0x06), 0x05);
  EXPECT_EQ(get(cmos, 0x07), 0x26);
  EXPECT_EQ(get(cmos, 0x08), 0x11);
  EXPECT_EQ(get(cmos, 0x09), 0x26);
  EXPECT_EQ(get(cmos, 0x32), 0x20);
}

TEST(Cmos, StatusRegistersAndUpdateFlags) {
  Cmos cmos(64 << 20, 0, 1);
  EXPECT_EQ(get(cmos, 0x0a) & 0x80, 0);  // never mid-update
  EXPECT_EQ(get(cmos, 0x0b), 0x02);      // 24-hour, BCD
  EXPECT_EQ(get(cmos, 0x0d), 0x80);      // valid RAM
  cmos.write(Cmos::INDEX_PORT, 0x0d);
  cmos.write(Cmos::DATA_PORT, 0);  // read-only
  EXPECT_EQ(get(cmos, 0x0d), 0x80);
  cmos.state().bytes[0x0c] = 0x90;
  EXPECT_EQ(get(cmos, 0x0c), 0x90);
  EXPECT_EQ(get(cmos, 0x0c), 0);  // cleared by the read
}

TEST(Cmos, OtherBytesAreRam) {
  Cmos cmos(64 << 20, 0, 1);
  cmos.write(Cmos::INDEX_PORT, 0x0f);
  cmos.write(Cmos::DATA_PORT, 0x0a);  // a shutdown status
  EXPECT_EQ(get(cmos, 0x0f), 0x0a);
  EXPECT_EQ(cmos.read(Cmos::INDEX_PORT), 0xff);
}

}  // namespace
}  // namespace bulkhead
