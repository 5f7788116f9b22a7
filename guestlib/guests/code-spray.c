/*
 * A hostile guest for the software CPU's code cache: fills `mib=N` MiB (default 4, at most 8) with
 * NOPs, a RET every 64 bytes, and calls every byte offset of it, so the core decodes a new block at
 * each of N million addresses. Prints "code spray done calls=N" and exits with value 0
 * (status 1). The host checks that the core's memory stayed bounded (docs/emu.md).
 */
#include "guest.h"

enum { CHUNK = 64 };

static uint8_t area[8u << 20] __attribute__((aligned(4096)));

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  uint32_t mib = (uint32_t)cmdline_number(multiboot_cmdline(magic, info), "mib", 4);
  if (mib == 0 || mib > sizeof(area) >> 20) guest_fail(2, "mib must be 1-8");
  uint32_t size = mib << 20;
  for (uint32_t i = 0; i < size; ++i) area[i] = (i % CHUNK == CHUNK - 1) ? 0xc3 : 0x90;
  uint32_t calls = 0;
  for (uint32_t i = 0; i < size; ++i) {
    ((void (*)(void))(uintptr_t)&area[i])();
    ++calls;
  }
  serial_puts("code spray done calls=");
  serial_put_dec(calls);
  serial_putc('\n');
  guest_exit(0);
}
