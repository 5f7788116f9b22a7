/*
 * Writes through the virtio console: "hello from virtio-console" and the command line's count=N
 * numbered lines ("line 0".."line N-1"), each a request of its own, then exits 0.
 */
#include "guest.h"
#include "virtio.h"

static struct virtq_memory queues[2];
static char line[32];

static void send(struct virtio_device* dev, const char* text, uint32_t length) {
  struct virtio_buffer buffer = {(void*)text, length, 0};
  virtio_post(dev, 1, &buffer, 1, 0);
  uint16_t head;
  uint32_t used;
  while (!virtio_take_used(dev, 1, &head, &used)) {
  }
}

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  uint32_t count = (uint32_t)cmdline_number(multiboot_cmdline(magic, info), "count", 3);
  struct virtio_device dev;
  if (virtio_init(&dev, 3, 0, queues, 2) != 0) guest_fail(2, "virtio-console init");
  const char* hello = "hello from virtio-console\n";
  send(&dev, hello, strlen(hello));
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t n = 0;
    const char* prefix = "line ";
    while (prefix[n]) {
      line[n] = prefix[n];
      ++n;
    }
    char digits[12];
    uint32_t d = 0, v = i;
    do {
      digits[d++] = (char)('0' + v % 10);
      v /= 10;
    } while (v);
    while (d) line[n++] = digits[--d];
    line[n++] = '\n';
    send(&dev, line, n);
  }
  guest_exit(0);
}
