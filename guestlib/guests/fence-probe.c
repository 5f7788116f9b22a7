/*
 * Prints "ready", then waits to see its serial port fenced: writes and reads back the scratch
 * register until the read returns all-ones, then checks LSR and IIR read all-ones too, and
 * exits with value 9
 * (status 19). Exits with value 5 (status 11) if the port never changes within ~10^8 reads.
 */
#include "guest.h"

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  serial_init();
  serial_puts("ready\n");
  for (uint32_t i = 0; i < 100000000u; ++i) {
    outb(COM1 + 7, 0x5a);
    uint8_t value = inb(COM1 + 7);
    if (value == 0x5a) continue;
    if (value != 0xff) guest_exit(7);
    if (inb(COM1 + 5) != 0xff || inb(COM1 + 2) != 0xff) guest_exit(8);
    guest_exit(9);
  }
  guest_exit(5);
}
