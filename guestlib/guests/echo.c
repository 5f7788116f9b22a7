/*
 * Echoes the serial line's input: prints "echo ready", then each byte received as "[xx]" (hex)
 * on a line of its own; on 'q' prints "echo done" and exits with value 0 (status 1). Shows
 * exactly which bytes reached the guest (the console test types Ctrl-C, Ctrl-A, ...).
 */
#include "guest.h"

enum { LSR_DATA_READY = 0x01 };

static void put_hex_byte(uint8_t value) {
  static const char digits[] = "0123456789abcdef";
  serial_putc('[');
  serial_putc(digits[value >> 4]);
  serial_putc(digits[value & 15]);
  serial_puts("]\n");
}

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  serial_init();
  serial_puts("echo ready\n");
  for (;;) {
    while (!(inb(COM1 + 5) & LSR_DATA_READY)) {
    }
    uint8_t byte = inb(COM1);
    if (byte == 'q') break;
    put_hex_byte(byte);
  }
  serial_puts("echo done\n");
  guest_exit(0);
}
