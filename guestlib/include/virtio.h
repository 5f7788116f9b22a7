/*
 * guestlib's PCI and virtio driver: enough of a virtio 1.x (modern PCI) driver for tiny test
 * guests to drive virtio-blk, virtio-rng and virtio-net servers. One queue set up at a time per
 * device, requests made one at a time and waited for by polling the used ring (no interrupts:
 * KVM here cannot emulate the protected-mode IRET an interrupt handler ends with).
 * 32-bit guests, paging off: BARs are reached at their physical addresses.
 */
#ifndef GUESTLIB_VIRTIO_H
#define GUESTLIB_VIRTIO_H

#include <stdint.h>

/* PCI configuration mechanism #1, bus 0. */
uint32_t pci_read32(unsigned slot, unsigned offset);
void pci_write32(unsigned slot, unsigned offset, uint32_t value);
/* The slot of the first function with these IDs, or -1. */
int pci_find(uint16_t vendor, uint16_t device);

struct virtq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_SIZE 16

/* One split virtqueue's memory: put it in .bss, 4 KiB aligned. */
struct virtq_memory {
  struct virtq_desc desc[VIRTQ_SIZE];
  struct {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[VIRTQ_SIZE];
  } avail;
  uint8_t pad[4096 - 16 * VIRTQ_SIZE - 4 - 2 * VIRTQ_SIZE];
  struct {
    uint16_t flags;
    uint16_t idx;
    struct {
      uint32_t id;
      uint32_t len;
    } ring[VIRTQ_SIZE];
  } used;
} __attribute__((aligned(4096)));

#define VIRTIO_MAX_QUEUES 2

struct virtio_queue {
  struct virtq_memory* memory;
  volatile uint16_t* notify;
  uint16_t index;
  uint16_t avail_idx;
  uint16_t used_idx;
};

struct virtio_device {
  int slot;
  volatile uint8_t* common;
  volatile uint8_t* isr;
  volatile uint8_t* config;
  uint64_t features; /* negotiated */
  struct virtio_queue queues[VIRTIO_MAX_QUEUES];
};

/* Finds the virtio device of `type` (2 block, 4 entropy, 1 net), resets it, negotiates
 * VERSION_1 plus whatever of `wanted` it offers, and sets up queues 0..count-1 in
 * memory[0..count-1]. Returns 0, or a negative step number saying what failed. */
int virtio_init(struct virtio_device* dev, uint16_t type, uint64_t wanted,
                struct virtq_memory* memory, unsigned count);
/* virtio_init, or "virtio_init step N" and "FAIL <what>" and exit `code` when it fails. */
void virtio_init_or_fail(struct virtio_device* dev, uint16_t type, uint64_t wanted,
                         struct virtq_memory* memory, unsigned count, uint8_t code,
                         const char* what);

/* The device status register (0x40 NEEDS_RESET). */
uint8_t virtio_status(struct virtio_device* dev);
/* Reads (and so clears) the ISR status, lowering the INTx line; returns it. Polling guests need
 * not call it. */
uint8_t virtio_ack_interrupt(struct virtio_device* dev);

/* Makes a chain of `count` buffers available on queue 0, notifies, and waits for it. Returns
 * the used length, or -1 if the device set NEEDS_RESET instead of answering (noticed within
 * 4096 polls of the used ring). */
struct virtio_buffer {
  void* data;
  uint32_t length;
  int writable;
};
int64_t virtio_request(struct virtio_device* dev, const struct virtio_buffer* buffers,
                       unsigned count);

/* Without waiting: makes a chain of `count` buffers, written at descriptors first.., available
 * on queue `q` and notifies. The caller keeps track of which descriptors are in use. */
void virtio_post(struct virtio_device* dev, unsigned q, const struct virtio_buffer* buffers,
                 unsigned count, uint16_t first);
/* Takes the next used element of queue `q`: 1 and its head and length, or 0 if none yet. */
int virtio_take_used(struct virtio_device* dev, unsigned q, uint16_t* head, uint32_t* length);

/* virtio-blk: 512-byte sectors. Return the status byte (0 ok, 1 I/O error, 2 unsupported),
 * or 0xff when the device broke. */
uint64_t virtio_blk_capacity(struct virtio_device* dev);
uint8_t virtio_blk_read(struct virtio_device* dev, uint64_t sector, void* data, uint32_t bytes);
uint8_t virtio_blk_write(struct virtio_device* dev, uint64_t sector, const void* data,
                         uint32_t bytes);
uint8_t virtio_blk_flush(struct virtio_device* dev);

#endif
