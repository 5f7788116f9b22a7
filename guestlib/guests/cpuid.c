/*
 * Prints what the guest's CPUID says: "cpuid 1 ecx=HEX edx=HEX" and "cpuid 7 ebx=HEX", then
 * exits 0. The test compares --cpu models through it.
 */
#include "guest.h"

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t* a, uint32_t* b, uint32_t* c, uint32_t* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  serial_init();
  uint32_t a, b, c, d;
  cpuid(1, 0, &a, &b, &c, &d);
  serial_puts("cpuid 1 ecx=");
  serial_put_hex(c);
  serial_puts(" edx=");
  serial_put_hex(d);
  serial_putc('\n');
  cpuid(7, 0, &a, &b, &c, &d);
  serial_puts("cpuid 7 ebx=");
  serial_put_hex(b);
  serial_putc('\n');
  guest_exit(0);
}
