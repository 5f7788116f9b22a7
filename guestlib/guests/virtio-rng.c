/*
 * Reads the virtio entropy device: two 32-byte requests, printed in hex on one line each
 * ("rng HEX"), then "rng ok" and exit 0. Fails when a request returns no bytes, when a buffer
 * stays all zeros, or when the two are the same.
 */
#include "guest.h"
#include "virtio.h"

static struct virtq_memory queue;
static uint8_t bytes[2][32];

static void print_line(const uint8_t* data) {
  serial_puts("rng ");
  for (unsigned i = 0; i < 32; ++i) {
    serial_putc("0123456789abcdef"[data[i] >> 4]);
    serial_putc("0123456789abcdef"[data[i] & 15]);
  }
  serial_putc('\n');
}

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  serial_init();
  struct virtio_device dev;
  virtio_init_or_fail(&dev, 4, 0, &queue, 1, 2, "virtio-rng init");
  for (unsigned i = 0; i < 2; ++i) {
    struct virtio_buffer buffer = {bytes[i], sizeof(bytes[i]), 1};
    if (virtio_request(&dev, &buffer, 1) != 32) guest_fail(3, "a short or failed request");
    unsigned nonzero = 0;
    for (unsigned j = 0; j < 32; ++j) nonzero |= bytes[i][j];
    if (nonzero == 0) guest_fail(4, "all zeros");
    print_line(bytes[i]);
  }
  unsigned same = 1;
  for (unsigned j = 0; j < 32; ++j) same &= bytes[0][j] == bytes[1][j];
  if (same) guest_fail(5, "the same bytes twice");
  serial_puts("rng ok\n");
  guest_exit(0);
}
