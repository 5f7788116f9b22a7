/* A flat 64-bit guest: proves it runs in 64-bit mode, prints, exits with value 7 (status 15). */
#include "guest.h"

void main64(void) {
  serial_init();
  uint64_t efer_lma_check;
  __asm__ volatile("mov %%cr4, %0" : "=r"(efer_lma_check));
  if (!(efer_lma_check & (1u << 5))) guest_fail(0x7e, "CR4.PAE is clear in 64-bit mode");
  volatile uint64_t wide = 0x123456789ull;
  if ((wide << 8) >> 8 != 0x123456789ull) guest_fail(0x7d, "64-bit arithmetic");
  serial_puts("long mode ok\n");
  guest_exit(7);
}
