/*
 * Drives a virtio-blk disk with guestlib's driver. Command line:
 *   count=N  seed=S  (defaults 1000, 1)
 * Runs N requests drawn from a xorshift32 generator seeded with S: writes (60 %) of 1-8
 * sectors filled with a pattern naming the request and the sector, reads (35 %) checked
 * against what the guest last wrote to each sector (what the sector held at the start if never),
 * flushes (5 %), all inside the first 2048 sectors, so it can run again on the same image. The
 * host test starts from a zero image and replays the same generator to know what it must hold.
 * Prints "progress N" every 1000 requests, then "blk ok requests=N writes=W reads=R flushes=F" and
 * exits 0, or "FAIL ..." and a non-zero code.
 */
#include "guest.h"
#include "virtio.h"

enum { SECTORS = 2048, MAX_RUN = 8, WORDS = 128 };

static struct virtq_memory queue;
static uint32_t version[SECTORS]; /* request number (from 1) that last wrote each sector */
static uint32_t buffer[MAX_RUN * WORDS];
static uint32_t initial[SECTORS * WORDS]; /* the first 2048 sectors as the run found them */

static uint32_t rng;
static uint32_t next_random(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

/* The word a sector holds after request `v` wrote it (what it held at the start when v is 0). */
static uint32_t pattern(uint32_t v, uint32_t sector, uint32_t word) {
  return v == 0 ? initial[sector * WORDS + word] : v * 0x9e3779b1u + sector * 0x85ebca6bu + word;
}

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  const char* cmdline = multiboot_cmdline(magic, info);
  uint32_t count = (uint32_t)cmdline_number(cmdline, "count", 1000);
  rng = (uint32_t)cmdline_number(cmdline, "seed", 1) | 1;

  struct virtio_device dev;
  virtio_init_or_fail(&dev, 2, 1ull << 9 /* FLUSH */, &queue, 1, 2, "virtio-blk init");
  if (virtio_blk_capacity(&dev) < SECTORS) guest_fail(3, "disk smaller than 1 MiB");
  for (uint32_t sector = 0; sector < SECTORS; sector += MAX_RUN)
    if (virtio_blk_read(&dev, sector, &initial[sector * WORDS], MAX_RUN * 512) != 0)
      guest_fail(5, "read");

  uint32_t writes = 0, reads = 0, flushes = 0;
  for (uint32_t request = 1; request <= count; ++request) {
    uint32_t kind = next_random() % 100;
    uint32_t run = 1 + next_random() % MAX_RUN;
    uint32_t sector = next_random() % (SECTORS - run + 1);
    if (kind < 60) {
      for (uint32_t s = 0; s < run; ++s) {
        for (uint32_t w = 0; w < WORDS; ++w)
          buffer[s * WORDS + w] = pattern(request, sector + s, w);
        version[sector + s] = request;
      }
      if (virtio_blk_write(&dev, sector, buffer, run * 512) != 0) guest_fail(4, "write");
      ++writes;
    } else if (kind < 95) {
      if (virtio_blk_read(&dev, sector, buffer, run * 512) != 0) guest_fail(5, "read");
      for (uint32_t s = 0; s < run; ++s) {
        for (uint32_t w = 0; w < WORDS; ++w) {
          if (buffer[s * WORDS + w] != pattern(version[sector + s], sector + s, w)) {
            serial_puts("sector ");
            serial_put_dec(sector + s);
            serial_puts(" request ");
            serial_put_dec(request);
            serial_putc('\n');
            guest_fail(6, "read back other data");
          }
        }
      }
      ++reads;
    } else {
      if (virtio_blk_flush(&dev) != 0) guest_fail(7, "flush");
      ++flushes;
    }
    if (request % 1000 == 0) {
      serial_puts("progress ");
      serial_put_dec(request);
      serial_putc('\n');
    }
  }
  if (virtio_blk_flush(&dev) != 0) guest_fail(7, "flush");
  serial_puts("blk ok requests=");
  serial_put_dec(count);
  serial_puts(" writes=");
  serial_put_dec(writes);
  serial_puts(" reads=");
  serial_put_dec(reads);
  serial_puts(" flushes=");
  serial_put_dec(flushes);
  serial_putc('\n');
  guest_exit(0);
}
