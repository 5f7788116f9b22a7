/*
 * The fault-injection workload: exercises the UART and reports what it observed, so a test or
 * a campaign can see a fault from the guest's side. The command line picks what to do:
 *   mode=0  write the scratch register 0..15 and print what each read-back returned
 *   mode=1  time 16 reads of the scratch register (TSC cycles); print the median and slowest
 * Always ends with a line "done" and debug-exit value 0 (status 1). (Interrupts are probed by
 * the 16-bit guest irq16.S: KVM here cannot emulate a protected-mode IRET.)
 */
#include "guest.h"

enum { SCR = 7 };

static void print_hex8(uint8_t value) {
  serial_putc("0123456789abcdef"[value >> 4]);
  serial_putc("0123456789abcdef"[value & 15]);
}

static void values(void) {
  serial_puts("scr");
  for (unsigned i = 0; i < 16; ++i) {
    outb(COM1 + SCR, (uint8_t)i);
    serial_putc(' ');
    print_hex8(inb(COM1 + SCR));
  }
  serial_putc('\n');
}

static void timing(void) {
  uint64_t cycles[16];
  for (unsigned i = 0; i < 16; ++i) {
    uint64_t start = rdtsc();
    (void)inb(COM1 + SCR);
    cycles[i] = rdtsc() - start;
  }
  for (unsigned i = 0; i < 16; ++i) { /* insertion sort */
    for (unsigned j = i; j > 0 && cycles[j - 1] > cycles[j]; --j) {
      uint64_t t = cycles[j];
      cycles[j] = cycles[j - 1];
      cycles[j - 1] = t;
    }
  }
  serial_puts("read cycles median=");
  serial_put_dec(cycles[8]);
  serial_puts(" max=");
  serial_put_dec(cycles[15]);
  serial_putc('\n');
}

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  const char* cmdline = multiboot_cmdline(magic, info);
  uint64_t mode = cmdline_number(cmdline, "mode", 0);
  if (mode == 1) {
    timing();
  } else {
    values();
  }
  serial_puts("done\n");
  guest_exit(0);
}
