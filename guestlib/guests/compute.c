/*
 * A compute-bound guest for the software CPU's benchmark (tests/bench/emu-bench.py): `rounds=N`
 * rounds of integer mixing, division and a memory scramble over 256 KiB, then the hash.
 * No I/O inside the loop, so the run measures the CPU alone.
 */
#include "guest.h"

static uint32_t area[65536];

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  uint32_t rounds = (uint32_t)cmdline_number(multiboot_cmdline(magic, info), "rounds", 1000);
  uint32_t state = 0x20261127, hash = 2166136261u;
  for (uint32_t round = 0; round < rounds; ++round) {
    for (uint32_t i = 0; i < 1024; ++i) {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      uint32_t at = state & 0xffff;
      area[at] += state / ((i | 1) + 7) + (state % 13);
      hash = (hash ^ area[at]) * 16777619u;
    }
  }
  serial_puts("compute hash=");
  serial_put_hex(hash);
  serial_putc('\n');
  guest_exit(0);
}
