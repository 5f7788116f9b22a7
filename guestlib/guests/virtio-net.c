/*
 * Two of these guests, connected by bulkhead's socket network backend, each send `bytes` of
 * frames (frame=4096 payload bytes each, default bytes=10485760) and check every frame they
 * receive: in order, whole, and holding the peer's pattern. role=0 or role=1 picks whose pattern
 * is whose. Prints "net ok sent=N received=N" (frames) and exits 0, or "FAIL ..." with a code.
 */
#include "guest.h"
#include "virtio.h"

enum { RX = 0, TX = 1, HEADER = 12, MAX_FRAME = 8192, RX_BUFFERS = 8 };

static struct virtq_memory queues[2];
static uint8_t rx_buffers[RX_BUFFERS][HEADER + MAX_FRAME] __attribute__((aligned(16)));
static uint8_t tx_header[HEADER];
static uint32_t tx_frame[MAX_FRAME / 4];

/* Word w of frame n from sender `role`. Word 0 is the frame number. */
static uint32_t pattern(uint32_t role, uint32_t n, uint32_t w) {
  return w == 0 ? n : (n * 0x9e3779b1u) ^ (w * 0x85ebca6bu) ^ (role + 1) * 0xc2b2ae35u;
}

static void post_rx(struct virtio_device* dev, uint16_t buffer) {
  struct virtio_buffer b = {rx_buffers[buffer], sizeof(rx_buffers[buffer]), 1};
  virtio_post(dev, RX, &b, 1, buffer);
}

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  const char* cmdline = multiboot_cmdline(magic, info);
  uint32_t role = (uint32_t)cmdline_number(cmdline, "role", 0);
  uint32_t frame = (uint32_t)cmdline_number(cmdline, "frame", 4096);
  uint32_t bytes = (uint32_t)cmdline_number(cmdline, "bytes", 10485760);
  if (frame < 8 || frame > MAX_FRAME || frame % 4 != 0) guest_fail(2, "frame size");
  uint32_t frames = (uint32_t)((bytes + frame - 1) / frame);

  struct virtio_device dev;
  virtio_init_or_fail(&dev, 1, 1ull << 5 /* MAC */, queues, 2, 3, "virtio-net init");
  for (uint16_t i = 0; i < RX_BUFFERS; ++i) post_rx(&dev, i);
  /* Wait for the link (the status word after the MAC): the peer VM may not be there yet. */
  while (!(*(volatile uint16_t*)(dev.config + 6) & 1)) {
    for (volatile int i = 0; i < 1000; ++i) {
    }
  }

  uint32_t sent = 0, received = 0;
  int tx_busy = 0;
  while (sent < frames || received < frames || tx_busy) {
    uint16_t head;
    uint32_t length;
    if (tx_busy && virtio_take_used(&dev, TX, &head, &length)) tx_busy = 0;
    if (!tx_busy && sent < frames) {
      for (uint32_t w = 0; w < frame / 4; ++w) tx_frame[w] = pattern(role, sent, w);
      struct virtio_buffer chain[2] = {{tx_header, HEADER, 0}, {tx_frame, frame, 0}};
      virtio_post(&dev, TX, chain, 2, 0);
      tx_busy = 1;
      ++sent;
    }
    if (virtio_take_used(&dev, RX, &head, &length)) {
      if (head >= RX_BUFFERS || length != HEADER + frame) guest_fail(4, "a frame of another size");
      const uint32_t* words = (const uint32_t*)(rx_buffers[head] + HEADER);
      for (uint32_t w = 0; w < frame / 4; ++w) {
        if (words[w] != pattern(1 - role, received, w)) {
          serial_puts("frame ");
          serial_put_dec(received);
          serial_puts(" word ");
          serial_put_dec(w);
          serial_putc('\n');
          guest_fail(5, "a frame out of order or changed");
        }
      }
      ++received;
      post_rx(&dev, head);
    }
  }
  serial_puts("net ok sent=");
  serial_put_dec(sent);
  serial_puts(" received=");
  serial_put_dec(received);
  serial_putc('\n');
  guest_exit(0);
}
