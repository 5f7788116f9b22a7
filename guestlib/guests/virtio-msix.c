/*
 * MSI-X from a virtio device server to the local APIC: enables the APIC, turns on the entropy
 * device's MSI-X, points table entry 1 at APIC 0 with vector 0x51 and queue 0 at entry 1, makes
 * one request, and looks for vector 0x51 in the APIC's interrupt request register (interrupts
 * stay off, so the message waits there). Prints "msix vector 0x51 pending" and exits 0; fails
 * when the vector is pending before the request or never arrives.
 */
#include "guest.h"
#include "virtio.h"

#define LAPIC 0xfee00000u
#define LAPIC_SVR 0xf0
#define LAPIC_IRR 0x200
#define VECTOR 0x51
#define QUEUE_SELECT 0x16
#define QUEUE_MSIX_VECTOR 0x1a

static struct virtq_memory queue;
static uint8_t bytes[32];

static volatile uint32_t* lapic(unsigned offset) { return (volatile uint32_t*)(LAPIC + offset); }

static int pending(void) { return (*lapic(LAPIC_IRR + 0x10 * (VECTOR / 32)) >> (VECTOR % 32)) & 1; }

void main32(uint32_t magic, struct multiboot_info* info) {
  (void)magic;
  (void)info;
  serial_init();
  *lapic(LAPIC_SVR) = 0x1ff; /* software-enabled, spurious vector 0xff */
  struct virtio_device dev;
  virtio_init_or_fail(&dev, 4, 0, &queue, 1, 2, "virtio-rng init");
  unsigned cap = pci_read32(dev.slot, 0x34) & 0xfc;
  while (cap != 0 && (pci_read32(dev.slot, cap) & 0xff) != 0x11) {
    cap = (pci_read32(dev.slot, cap) >> 8) & 0xfc;
  }
  if (cap == 0) guest_fail(3, "no MSI-X capability");
  uint32_t table = pci_read32(dev.slot, cap + 4);
  uint32_t bar = pci_read32(dev.slot, 0x10 + 4 * (table & 7)) & ~0xfu;
  volatile uint32_t* entry = (volatile uint32_t*)(uintptr_t)(bar + (table & ~7u) + 16);
  pci_write32(dev.slot, cap, pci_read32(dev.slot, cap) | 0x80000000u); /* MSI-X enable */
  entry[0] = LAPIC;                                                    /* to APIC 0 */
  entry[1] = 0;
  entry[2] = VECTOR; /* fixed delivery, edge */
  entry[3] = 0;      /* unmasked */
  *(volatile uint16_t*)(dev.common + QUEUE_SELECT) = 0;
  *(volatile uint16_t*)(dev.common + QUEUE_MSIX_VECTOR) = 1;
  if (*(volatile uint16_t*)(dev.common + QUEUE_MSIX_VECTOR) != 1) guest_fail(4, "vector refused");
  if (pending()) guest_fail(5, "the vector was pending before any request");
  struct virtio_buffer buffer = {bytes, sizeof(bytes), 1};
  if (virtio_request(&dev, &buffer, 1) != 32) guest_fail(6, "a short or failed request");
  /* The message may trail the used ring's update by a little. */
  for (unsigned i = 0; i < 100000 && !pending(); ++i) {
  }
  if (!pending()) guest_fail(7, "no MSI-X message reached the APIC");
  serial_puts("msix vector 0x51 pending\n");
  guest_exit(0);
}
