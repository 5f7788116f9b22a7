/* Reads the 32-bit port 0x510 four times and prints each value; exits with value 0 (status 1). */
#include "guest.h"

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  serial_init();
  for (int i = 0; i < 4; ++i) {
    serial_puts("value=");
    serial_put_hex(inl(0x510));
    serial_putc('\n');
  }
  guest_exit(0);
}
