#include "servers/cmos/cmos.h"

#include <algorithm>

namespace bulkhead {

namespace {

constexpr uint64_t KIB = 1024, MIB = 1024 * KIB;
constexpr uint8_t STATUS_A = 0x0a, STATUS_B = 0x0b, STATUS_C = 0x0c, STATUS_D = 0x0d;
constexpr uint8_t B_24_HOUR = 0x02;
constexpr uint8_t D_VALID_RAM = 0x80;
constexpr uint8_t A_DIVIDER_32K = 0x26;  // 32.768 kHz time base, 1024 Hz rate: what a PC has

uint8_t bcd(int value) { return static_cast<uint8_t>((value / 10) << 4 | (value % 10)); }

}  // namespace

Cmos::Cmos(uint64_t lowRam, uint64_t highRam, unsigned cpus) {
  uint8_t* b = saved.bytes;
  b[STATUS_A] = A_DIVIDER_32K;
  b[STATUS_B] = B_24_HOUR;
  b[STATUS_D] = D_VALID_RAM;
  b[0x15] = 640 & 0xff;  // base memory, KiB
  b[0x16] = 640 >> 8;
  uint64_t above1M = lowRam > MIB ? std::min<uint64_t>((lowRam - MIB) / KIB, 0xfc00) : 0;
  b[0x17] = b[0x30] = above1M & 0xff;
  b[0x18] = b[0x31] = above1M >> 8;
  uint64_t above16M = lowRam > 16 * MIB ? (lowRam - 16 * MIB) / (64 * KIB) : 0;
  above16M = std::min<uint64_t>(above16M, 0xffff);
  b[0x34] = above16M & 0xff;
  b[0x35] = above16M >> 8;
  uint64_t above4G = std::min<uint64_t>(highRam / (64 * KIB), 0xffffff);
  b[0x5b] = above4G & 0xff;
  b[0x5c] = above4G >> 8;
  b[0x5d] = above4G >> 16;
  b[0x5f] = cpus > 0 ? cpus - 1 : 0;
}

uint8_t Cmos::clockRegister(uint8_t index) {
  time_t seconds = now();
  struct tm t;
  gmtime_r(&seconds, &t);
  switch (index) {
    case 0x00:
      return bcd(t.tm_sec);
    case 0x02:
      return bcd(t.tm_min);
    case 0x04:
      return bcd(t.tm_hour);
    case 0x06:
      return bcd(t.tm_wday + 1);
    case 0x07:
      return bcd(t.tm_mday);
    case 0x08:
      return bcd(t.tm_mon + 1);
    case 0x09:
      return bcd(t.tm_year % 100);
    case 0x32:
      return bcd(19 + t.tm_year / 100);  // century
    default:
      return saved.bytes[index];  // the alarm registers: as written
  }
}

uint8_t Cmos::read(uint16_t port) {
  if (port == INDEX_PORT) return 0xff;  // write-only on a PC
  uint8_t index = saved.index & 0x7f;
  if (index <= 0x09 || index == 0x32) return clockRegister(index);
  if (index == STATUS_A) return saved.bytes[STATUS_A] & 0x7f;  // never mid-update
  if (index == STATUS_C) {
    uint8_t flags = saved.bytes[STATUS_C];
    saved.bytes[STATUS_C] = 0;  // reading clears the interrupt flags
    return flags;
  }
  return saved.bytes[index];
}

void Cmos::write(uint16_t port, uint8_t value) {
  if (port == INDEX_PORT) {
    saved.index = value;  // bit 7: NMI masked (no NMI source here)
    return;
  }
  uint8_t index = saved.index & 0x7f;
  if (index == STATUS_C || index == STATUS_D) return;  // read-only
  saved.bytes[index] = value;
}

}  // namespace bulkhead
