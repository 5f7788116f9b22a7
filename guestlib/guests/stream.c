/*
 * Writes `bytes=N` bytes (default 100000) to the serial port as lines "%07u\n", so the host can
 * check that every byte arrived once, in order. Exits with value 0 (status 1).
 */
#include "guest.h"

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  uint32_t total = (uint32_t)cmdline_number(multiboot_cmdline(magic, info), "bytes", 100000);
  /* THR is always empty on this UART; a real driver still checks, as serial_putc does. */
  for (uint32_t sent = 0; sent < total; ++sent) serial_putc(numbered_stream_byte(sent));
  guest_exit(0);
}
