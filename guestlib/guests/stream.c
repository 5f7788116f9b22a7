/*
 * Writes `bytes=N` bytes (default 100000) to the serial port as lines "%07u\n", so the host can
 * check that every byte arrived once, in order. Exits with value 0 (status 1).
 */
#include "guest.h"

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  const char* cmdline = (magic == MULTIBOOT_BOOTLOADER_MAGIC && (info->flags & (1u << 2)))
                            ? (const char*)(uintptr_t)info->cmdline
                            : "";
  uint32_t total = (uint32_t)cmdline_number(cmdline, "bytes", 100000);
  uint32_t sent = 0;
  for (uint32_t line = 0; sent < total; ++line) {
    char text[8];
    uint32_t value = line;
    for (int i = 6; i >= 0; --i) {
      text[i] = (char)('0' + value % 10);
      value /= 10;
    }
    text[7] = '\n';
    for (int i = 0; i < 8 && sent < total; ++i, ++sent) {
      /* THR is always empty on this UART; a real driver still checks, as this one does. */
      serial_putc(text[i]);
    }
  }
  guest_exit(0);
}
