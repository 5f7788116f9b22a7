#include "virtio.h"

#include "guest.h"

enum {
  PCI_ADDRESS = 0xcf8,
  PCI_DATA = 0xcfc,
  CAP_VENDOR = 0x09,
  CAP_COMMON = 1,
  CAP_NOTIFY = 2,
  CAP_ISR = 3,
  CAP_DEVICE = 4,
  /* common configuration */
  DEVICE_FEATURE_SELECT = 0x00,
  DEVICE_FEATURE = 0x04,
  DRIVER_FEATURE_SELECT = 0x08,
  DRIVER_FEATURE = 0x0c,
  DEVICE_STATUS = 0x14,
  QUEUE_SELECT = 0x16,
  QUEUE_SIZE = 0x18,
  QUEUE_ENABLE = 0x1c,
  QUEUE_NOTIFY_OFF = 0x1e,
  QUEUE_DESC = 0x20,
  QUEUE_DRIVER = 0x28,
  QUEUE_DEVICE = 0x30,
  /* status bits */
  ACKNOWLEDGE = 1,
  DRIVER = 2,
  DRIVER_OK = 4,
  FEATURES_OK = 8,
  NEEDS_RESET = 0x40,
};

uint32_t pci_read32(unsigned slot, unsigned offset) {
  outl(PCI_ADDRESS, 0x80000000u | slot << 11 | (offset & 0xfc));
  return inl(PCI_DATA);
}

void pci_write32(unsigned slot, unsigned offset, uint32_t value) {
  outl(PCI_ADDRESS, 0x80000000u | slot << 11 | (offset & 0xfc));
  outl(PCI_DATA, value);
}

int pci_find(uint16_t vendor, uint16_t device) {
  for (unsigned slot = 0; slot < 32; ++slot) {
    if (pci_read32(slot, 0) == ((uint32_t)device << 16 | vendor)) return (int)slot;
  }
  return -1;
}

static void w8(volatile uint8_t* base, unsigned offset, uint8_t value) {
  *(volatile uint8_t*)(base + offset) = value;
}
static void w16(volatile uint8_t* base, unsigned offset, uint16_t value) {
  *(volatile uint16_t*)(base + offset) = value;
}
static void w32(volatile uint8_t* base, unsigned offset, uint32_t value) {
  *(volatile uint32_t*)(base + offset) = value;
}
static uint8_t r8(volatile uint8_t* base, unsigned offset) {
  return *(volatile uint8_t*)(base + offset);
}
static uint16_t r16(volatile uint8_t* base, unsigned offset) {
  return *(volatile uint16_t*)(base + offset);
}
static uint32_t r32(volatile uint8_t* base, unsigned offset) {
  return *(volatile uint32_t*)(base + offset);
}
static void w64(volatile uint8_t* base, unsigned offset, uint64_t value) {
  w32(base, offset, (uint32_t)value);
  w32(base, offset + 4, (uint32_t)(value >> 32));
}

int virtio_init(struct virtio_device* dev, uint16_t type, uint64_t wanted,
                struct virtq_memory* memory, unsigned count) {
  memset(dev, 0, sizeof(*dev));
  if (count == 0 || count > VIRTIO_MAX_QUEUES) return -8;
  dev->slot = pci_find(0x1af4, 0x1040 + type);
  if (dev->slot < 0) return -1;
  /* Memory decoding and bus mastering on. */
  pci_write32(dev->slot, 0x04, pci_read32(dev->slot, 0x04) | 0x6);
  uint32_t notify_multiplier = 0;
  uint32_t notify_base = 0;
  for (unsigned cap = pci_read32(dev->slot, 0x34) & 0xfc; cap != 0;
       cap = (pci_read32(dev->slot, cap) >> 8) & 0xfc) {
    uint32_t head = pci_read32(dev->slot, cap);
    if ((head & 0xff) != CAP_VENDOR) continue;
    unsigned cfg_type = (head >> 24) & 0xff;
    unsigned bar = pci_read32(dev->slot, cap + 4) & 0xff;
    uint32_t offset = pci_read32(dev->slot, cap + 8);
    if (bar > 5) return -2;
    uint32_t base = pci_read32(dev->slot, 0x10 + 4 * bar) & ~0xfu;
    volatile uint8_t* at = (volatile uint8_t*)(uintptr_t)(base + offset);
    if (cfg_type == CAP_COMMON) dev->common = at;
    if (cfg_type == CAP_ISR) dev->isr = at;
    if (cfg_type == CAP_DEVICE) dev->config = at;
    if (cfg_type == CAP_NOTIFY) {
      notify_base = base + offset;
      notify_multiplier = pci_read32(dev->slot, cap + 16);
    }
  }
  if (dev->common == 0 || notify_base == 0 || dev->isr == 0) return -3;

  w8(dev->common, DEVICE_STATUS, 0);
  while (r8(dev->common, DEVICE_STATUS) != 0) {
  }
  w8(dev->common, DEVICE_STATUS, ACKNOWLEDGE);
  w8(dev->common, DEVICE_STATUS, ACKNOWLEDGE | DRIVER);
  w32(dev->common, DEVICE_FEATURE_SELECT, 0);
  uint64_t offered = r32(dev->common, DEVICE_FEATURE);
  w32(dev->common, DEVICE_FEATURE_SELECT, 1);
  offered |= (uint64_t)r32(dev->common, DEVICE_FEATURE) << 32;
  const uint64_t version_1 = 1ull << 32;
  if (!(offered & version_1)) return -4;
  dev->features = (wanted & offered) | version_1;
  w32(dev->common, DRIVER_FEATURE_SELECT, 0);
  w32(dev->common, DRIVER_FEATURE, (uint32_t)dev->features);
  w32(dev->common, DRIVER_FEATURE_SELECT, 1);
  w32(dev->common, DRIVER_FEATURE, (uint32_t)(dev->features >> 32));
  w8(dev->common, DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
  if (!(r8(dev->common, DEVICE_STATUS) & FEATURES_OK)) return -5;

  for (unsigned i = 0; i < count; ++i) {
    struct virtio_queue* q = &dev->queues[i];
    w16(dev->common, QUEUE_SELECT, (uint16_t)i);
    if (r16(dev->common, QUEUE_SIZE) < VIRTQ_SIZE) return -6;
    w16(dev->common, QUEUE_SIZE, VIRTQ_SIZE);
    q->memory = &memory[i];
    q->index = (uint16_t)i;
    memset(q->memory, 0, sizeof(*q->memory));
    w64(dev->common, QUEUE_DESC, (uintptr_t)q->memory->desc);
    w64(dev->common, QUEUE_DRIVER, (uintptr_t)&q->memory->avail);
    w64(dev->common, QUEUE_DEVICE, (uintptr_t)&q->memory->used);
    uint16_t notify_index = r16(dev->common, QUEUE_NOTIFY_OFF);
    q->notify = (volatile uint16_t*)(uintptr_t)(notify_base + notify_index * notify_multiplier);
    w16(dev->common, QUEUE_ENABLE, 1);
    if (r16(dev->common, QUEUE_ENABLE) != 1) return -7;
  }
  w8(dev->common, DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
  return 0;
}

void virtio_init_or_fail(struct virtio_device* dev, uint16_t type, uint64_t wanted,
                         struct virtq_memory* memory, unsigned count, uint8_t code,
                         const char* what) {
  int init = virtio_init(dev, type, wanted, memory, count);
  if (init == 0) return;
  serial_puts("virtio_init step ");
  serial_put_dec((uint64_t)-init);
  serial_putc('\n');
  guest_fail(code, what);
}

uint8_t virtio_status(struct virtio_device* dev) { return r8(dev->common, DEVICE_STATUS); }

uint8_t virtio_ack_interrupt(struct virtio_device* dev) { return r8(dev->isr, 0); }

void virtio_post(struct virtio_device* dev, unsigned queue, const struct virtio_buffer* buffers,
                 unsigned count, uint16_t first) {
  struct virtio_queue* q = &dev->queues[queue];
  struct virtq_memory* m = q->memory;
  for (unsigned i = 0; i < count; ++i) {
    uint16_t at = (uint16_t)((first + i) % VIRTQ_SIZE);
    m->desc[at].addr = (uintptr_t)buffers[i].data;
    m->desc[at].len = buffers[i].length;
    m->desc[at].flags =
        (buffers[i].writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0);
    m->desc[at].next = (uint16_t)((at + 1) % VIRTQ_SIZE);
  }
  m->avail.ring[q->avail_idx % VIRTQ_SIZE] = first;
  __asm__ volatile("" ::: "memory"); /* x86: stores are not reordered with stores */
  m->avail.idx = ++q->avail_idx;
  __asm__ volatile("" ::: "memory");
  *q->notify = q->index;
}

int virtio_take_used(struct virtio_device* dev, unsigned queue, uint16_t* head, uint32_t* length) {
  struct virtio_queue* q = &dev->queues[queue];
  struct virtq_memory* m = q->memory;
  if (*(volatile uint16_t*)&m->used.idx == q->used_idx) return 0;
  __asm__ volatile("" ::: "memory");
  *head = (uint16_t)m->used.ring[q->used_idx % VIRTQ_SIZE].id;
  *length = m->used.ring[q->used_idx % VIRTQ_SIZE].len;
  ++q->used_idx;
  return 1;
}

int64_t virtio_request(struct virtio_device* dev, const struct virtio_buffer* buffers,
                       unsigned count) {
  virtio_post(dev, 0, buffers, count, 0);
  /* Poll the used ring (guest memory); look at the device status (an exit) only now and then. */
  uint16_t head;
  uint32_t length;
  for (uint32_t spins = 1; !virtio_take_used(dev, 0, &head, &length); ++spins) {
    if (spins % 4096 == 0 && (r8(dev->common, DEVICE_STATUS) & NEEDS_RESET)) return -1;
  }
  return length;
}

uint64_t virtio_blk_capacity(struct virtio_device* dev) {
  return r32(dev->config, 0) | (uint64_t)r32(dev->config, 4) << 32;
}

struct blk_header {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};

static uint8_t blk_request(struct virtio_device* dev, uint32_t type, uint64_t sector, void* data,
                           uint32_t bytes, int device_writes) {
  static struct blk_header header;
  static uint8_t status;
  header.type = type;
  header.reserved = 0;
  header.sector = sector;
  status = 0xee;
  struct virtio_buffer buffers[3] = {
      {&header, sizeof(header), 0}, {data, bytes, device_writes}, {&status, 1, 1}};
  if (bytes == 0) {
    buffers[1] = buffers[2];
    if (virtio_request(dev, buffers, 2) < 0) return 0xff;
  } else if (virtio_request(dev, buffers, 3) < 0) {
    return 0xff;
  }
  return status;
}

uint8_t virtio_blk_read(struct virtio_device* dev, uint64_t sector, void* data, uint32_t bytes) {
  return blk_request(dev, 0, sector, data, bytes, 1);
}

uint8_t virtio_blk_write(struct virtio_device* dev, uint64_t sector, const void* data,
                         uint32_t bytes) {
  return blk_request(dev, 1, sector, (void*)data, bytes, 0);
}

uint8_t virtio_blk_flush(struct virtio_device* dev) { return blk_request(dev, 4, 0, 0, 0, 0); }
