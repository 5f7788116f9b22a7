/*
 * The exit benchmark's guest: three phases of `count=N` exits each, marked by writes to the
 * benchmark's in-process marker port so the host can time them:
 *   1: reads of an in-process port (the baseline: exit handling in the core alone)
 *   2: reads of the UART scratch register (a round trip to the serial server)
 *   3: writes of the UART scratch register (posted to the serial server)
 */
#include "guest.h"

#define MARKER_PORT 0x5f0
#define BASELINE_PORT 0x5f1

void main32(uint32_t magic, struct multiboot_info* info) {
  const char* cmdline = multiboot_cmdline(magic, info);
  uint32_t count = (uint32_t)cmdline_number(cmdline, "count", 20000);
  uint32_t sink = 0;
  outb(MARKER_PORT, 1);
  for (uint32_t i = 0; i < count; ++i) sink += inb(BASELINE_PORT);
  outb(MARKER_PORT, 2);
  for (uint32_t i = 0; i < count; ++i) sink += inb(COM1 + 7);
  outb(MARKER_PORT, 3);
  for (uint32_t i = 0; i < count; ++i) outb(COM1 + 7, (uint8_t)i);
  outb(MARKER_PORT, 4);
  guest_exit((uint8_t)(sink == 0xffffffff));
}
