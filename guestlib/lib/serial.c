#include "guest.h"

enum { THR = 0, IER = 1, FCR = 2, LCR = 3, MCR = 4, LSR = 5 };
#define LSR_THRE 0x20

void serial_init(void) {
  outb(COM1 + IER, 0x00);
  outb(COM1 + LCR, 0x80); /* DLAB: divisor 1 = 115200 baud */
  outb(COM1 + 0, 0x01);
  outb(COM1 + 1, 0x00);
  outb(COM1 + LCR, 0x03); /* 8N1 */
  outb(COM1 + FCR, 0x07); /* FIFOs on and cleared */
  outb(COM1 + MCR, 0x03); /* DTR, RTS */
}

void serial_putc(char c) {
  while (!(inb(COM1 + LSR) & LSR_THRE)) {
  }
  outb(COM1 + THR, (uint8_t)c);
}

void serial_puts(const char* text) {
  while (*text) serial_putc(*text++);
}

void serial_put_dec(uint64_t value) {
  char digits[21];
  int n = 0;
  do {
    digits[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) serial_putc(digits[--n]);
}

void serial_put_hex(uint64_t value) {
  serial_puts("0x");
  int shift = 60;
  while (shift > 0 && ((value >> shift) & 0xf) == 0) shift -= 4;
  for (; shift >= 0; shift -= 4) serial_putc("0123456789abcdef"[(value >> shift) & 0xf]);
}
