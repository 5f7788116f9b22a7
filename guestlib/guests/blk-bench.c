/*
 * virtio-blk throughput, timed inside the guest with the TSC so that a VMM's start-up does not
 * count: sequential writes then reads of 64 KiB requests over the first 16 MiB of the disk
 * (passes=N, default 2), then random 4 KiB writes and reads (random=N each, default 1000).
 * Prints "blk-bench seq-write cycles=C bytes=B", "... seq-read ...", "... rand-write ...",
 * "... rand-read ..." and exits 0. Runs on bulkhead and on QEMU (-kernel, isa-debug-exit at
 * 0xf4) alike, so tests/bench/blk-bench.c++ can compare them.
 */
#include "guest.h"
#include "virtio.h"

enum { SEQ_BYTES = 65536, RAND_BYTES = 4096, SPAN_SECTORS = 16 * 1024 * 1024 / 512 };

static struct virtq_memory queue;
static uint8_t buffer[SEQ_BYTES] __attribute__((aligned(4096)));
static uint32_t rng = 12345;

static uint32_t next_random(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

static void report(const char* what, uint64_t cycles, uint64_t bytes) {
  serial_puts("blk-bench ");
  serial_puts(what);
  serial_puts(" cycles=");
  serial_put_dec(cycles);
  serial_puts(" bytes=");
  serial_put_dec(bytes);
  serial_putc('\n');
}

static void sequential(struct virtio_device* dev, int write, uint32_t passes) {
  uint64_t start = rdtsc();
  for (uint32_t pass = 0; pass < passes; ++pass) {
    for (uint32_t sector = 0; sector < SPAN_SECTORS; sector += SEQ_BYTES / 512) {
      uint8_t status = write ? virtio_blk_write(dev, sector, buffer, SEQ_BYTES)
                             : virtio_blk_read(dev, sector, buffer, SEQ_BYTES);
      if (status != 0) guest_fail(3, "sequential request");
    }
  }
  report(write ? "seq-write" : "seq-read", rdtsc() - start, (uint64_t)passes * SPAN_SECTORS * 512);
}

static void random_io(struct virtio_device* dev, int write, uint32_t count) {
  uint64_t start = rdtsc();
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t sector = (next_random() % (SPAN_SECTORS / 8)) * 8;
    uint8_t status = write ? virtio_blk_write(dev, sector, buffer, RAND_BYTES)
                           : virtio_blk_read(dev, sector, buffer, RAND_BYTES);
    if (status != 0) guest_fail(4, "random request");
  }
  report(write ? "rand-write" : "rand-read", rdtsc() - start, (uint64_t)count * RAND_BYTES);
}

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  const char* cmdline = multiboot_cmdline(magic, info);
  uint32_t passes = (uint32_t)cmdline_number(cmdline, "passes", 2);
  uint32_t count = (uint32_t)cmdline_number(cmdline, "random", 1000);
  struct virtio_device dev;
  virtio_init_or_fail(&dev, 2, 0, &queue, 1, 2, "virtio-blk init");
  if (virtio_blk_capacity(&dev) < SPAN_SECTORS) guest_fail(5, "the disk is smaller than 16 MiB");
  for (uint32_t i = 0; i < SEQ_BYTES; ++i) buffer[i] = (uint8_t)i;
  sequential(&dev, 1, passes);
  sequential(&dev, 0, passes);
  random_io(&dev, 1, count);
  random_io(&dev, 0, count);
  guest_exit(0);
}
