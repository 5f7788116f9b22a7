/*
 * The crash-isolation workload: streams `bytes=N` numbered bytes (lines "%07u\n") through the
 * UART while checking that every register value it reads is one a real 16550A could show
 * here: LSR reads 0x60 (transmitter empty, nothing received, no error) before each byte, and
 * every 256 bytes the scratch register holds what was last written and LCR and IER read back.
 * Ends with "sum=XXXXXXXX" (Adler-32 of the stream) and debug-exit value 0 (status 1); a wrong
 * register value prints FAIL and exits with value 9 (status 19).
 */
#include "guest.h"

enum { THR = 0, IER = 1, LCR = 3, LSR = 5, SCR = 7 };

static uint32_t sumA = 1, sumB = 0;

static void send(uint8_t byte) {
  uint8_t lsr = inb(COM1 + LSR);
  if (lsr != 0x60) {
    serial_puts("\nLSR ");
    serial_put_hex(lsr);
    guest_fail(9, "impossible LSR value");
  }
  outb(COM1 + THR, byte);
  sumA = (sumA + byte) % 65521;
  sumB = (sumB + sumA) % 65521;
}

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  uint32_t total = (uint32_t)cmdline_number(multiboot_cmdline(magic, info), "bytes", 1u << 20);
  for (uint32_t sent = 0; sent < total; ++sent) {
    if ((sent & 0xff) == 0) {
      uint8_t mark = (uint8_t)(sent >> 8);
      outb(COM1 + SCR, mark);
      if (inb(COM1 + SCR) != mark) guest_fail(9, "scratch register lost its value");
      if (inb(COM1 + LCR) != 0x03) guest_fail(9, "LCR lost its value");
      if (inb(COM1 + IER) != 0x00) guest_fail(9, "IER lost its value");
    }
    send((uint8_t)numbered_stream_byte(sent));
  }
  serial_puts("sum=");
  uint32_t sum = sumB << 16 | sumA;
  for (int shift = 28; shift >= 0; shift -= 4)
    serial_putc("0123456789abcdef"[(sum >> shift) & 0xf]);
  serial_putc('\n');
  guest_exit(0);
}
