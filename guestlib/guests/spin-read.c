/*
 * The restart benchmark's guest: reads the UART scratch register (a round trip to the serial
 * server) and then writes the benchmark's in-process marker port, forever. The host times the
 * markers; a gap in them is the guest waiting for its device.
 */
#include "guest.h"

#define MARKER_PORT 0x5f0

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  for (;;) {
    outb(MARKER_PORT, inb(COM1 + 7));
  }
}
