/* Prints "hello" and exits through debug-exit with value 1 (VMM exit status 3). */
#include "guest.h"

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)info;
  serial_init();
  if (magic != MULTIBOOT_BOOTLOADER_MAGIC) guest_fail(0x7e, "multiboot magic");
  serial_puts("hello\n");
  guest_exit(1);
}
