/*
 * Reads UART registers back and checks them against the PC16550D datasheet. Every read is a
 * round trip to the serial server. Exits with value 0 (status 1) when all checks pass, or
 * prints the failed check and exits with its number.
 */
#include "guest.h"

enum { RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

static void expect(uint8_t code, const char* what, uint8_t got, uint8_t want) {
  if (got == want) return;
  serial_puts("got ");
  serial_put_hex(got);
  serial_puts(" want ");
  serial_put_hex(want);
  serial_putc(' ');
  guest_fail(code, what);
}

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  serial_init();
  /* Scratch register: every bit pattern reads back. */
  for (unsigned value = 0; value < 256; value += 17) {
    outb(COM1 + SCR, (uint8_t)value);
    expect(2, "scratch", inb(COM1 + SCR), (uint8_t)value);
  }
  /* Divisor latch behind DLAB, and IER in front of it. */
  outb(COM1 + LCR, 0x83);
  outb(COM1 + 0, 0x34);
  outb(COM1 + 1, 0x12);
  expect(3, "DLL", inb(COM1 + 0), 0x34);
  expect(4, "DLM", inb(COM1 + 1), 0x12);
  outb(COM1 + LCR, 0x03);
  expect(5, "LCR", inb(COM1 + LCR), 0x03);
  outb(COM1 + IER, 0x00);
  expect(6, "IER", inb(COM1 + IER), 0x00);
  /* FIFOs on: IIR reports them and no interrupt. */
  outb(COM1 + FCR, 0x07);
  expect(7, "IIR with FIFOs", inb(COM1 + IIR), 0xc1);
  expect(8, "LSR idle", inb(COM1 + LSR), 0x60);
  expect(9, "MSR", inb(COM1 + MSR), 0xb0);
  /* Enabling the THR-empty interrupt raises it at once; reading IIR acknowledges it. */
  outb(COM1 + IER, 0x02);
  expect(10, "IIR THRE", inb(COM1 + IIR), 0xc2);
  expect(11, "IIR after ack", inb(COM1 + IIR), 0xc1);
  outb(COM1 + IER, 0x00);
  /* Loopback: bytes written come back through the receiver, in order. */
  outb(COM1 + MCR, 0x13);
  expect(12, "MSR loopback", inb(COM1 + MSR) & 0xf0, 0x30);
  outb(COM1 + RBR, 'x');
  outb(COM1 + RBR, 'y');
  expect(13, "LSR data ready", inb(COM1 + LSR), 0x61);
  expect(14, "loopback byte 1", inb(COM1 + RBR), 'x');
  expect(15, "loopback byte 2", inb(COM1 + RBR), 'y');
  expect(16, "LSR drained", inb(COM1 + LSR), 0x60);
  outb(COM1 + MCR, 0x03);
  serial_puts("uart registers ok\n");
  guest_exit(0);
}
