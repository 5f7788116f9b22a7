/*
 * A guest for the guest-view tests, flat 64-bit: sets up its own 4-level page tables (the low
 * 1 GiB identity-mapped by 2 MiB pages; linear 0x40000000 -> physical 0x400000 by a 2 MiB page;
 * linear 0x40200000 -> physical 0x123000 by a read-only user 4 KiB page), GDT (with a DPL-3
 * data segment and a 64-bit TSS) and IDT (an interrupt gate at 0x20, a DPL-3 trap gate with
 * IST 1 at 0x80), prints where everything is, then waits forever for the test to look.
 * (64-bit because KVM on this project's machines runs only 64-bit paging.)
 */
#include "guest.h"

struct gate {
  uint16_t offset_low, selector;
  uint8_t ist, type;
  uint16_t offset_middle;
  uint32_t offset_high, reserved;
} __attribute__((packed));

static uint64_t gdt[7] __attribute__((aligned(8)));
static struct gate idt[0x81] __attribute__((aligned(16)));
static uint8_t tss[0x68] __attribute__((aligned(16)));
static uint64_t pml4[512] __attribute__((aligned(4096)));
static uint64_t pdpt[512] __attribute__((aligned(4096)));
static uint64_t low_pd[512] __attribute__((aligned(4096)));
static uint64_t high_pd[512] __attribute__((aligned(4096)));
static uint64_t table[512] __attribute__((aligned(4096)));

void interrupt_handler(void) {
  for (;;) __asm__ volatile("hlt");
}

static struct gate make_gate(void (*handler)(void), uint8_t type, uint8_t ist) {
  uint64_t offset = (uint64_t)(uintptr_t)handler;
  return (struct gate){(uint16_t)offset,         0x18, ist, type, (uint16_t)(offset >> 16),
                       (uint32_t)(offset >> 32), 0};
}

void main64(void) {
  serial_init();
  uint64_t base = (uint64_t)(uintptr_t)tss;
  uint64_t limit = sizeof(tss) - 1;
  gdt[1] = 0x00cf9b000000ffffull; /* 0x08 code 32 */
  gdt[2] = 0x00cf93000000ffffull; /* 0x10 data */
  gdt[3] = 0x00af9b000000ffffull; /* 0x18 code 64 */
  gdt[4] = 0x00cff3000000ffffull; /* 0x20 data, DPL 3 */
  gdt[5] = (limit & 0xffff) | (base & 0xffffff) << 16 | (uint64_t)0x89 << 40 |
           ((base >> 24) & 0xff) << 56; /* 0x28 64-bit TSS, available */
  gdt[6] = base >> 32;
  struct {
    uint16_t limit;
    uint64_t base;
  } __attribute__((packed)) gdtr = {sizeof(gdt) - 1, (uint64_t)(uintptr_t)gdt},
                            idtr = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt};
  __asm__ volatile("lgdt %0" : : "m"(gdtr));
  idt[0x20] = make_gate(interrupt_handler, 0x8e, 0); /* interrupt gate, DPL 0 */
  idt[0x80] = make_gate(interrupt_handler, 0xef, 1); /* trap gate, DPL 3, IST 1 */
  __asm__ volatile("lidt %0" : : "m"(idtr));

  for (uint64_t i = 0; i < 512; ++i) low_pd[i] = (i << 21) | 0x83; /* 2 MiB, writable */
  high_pd[0] = 0x400000 | 0x83;
  high_pd[1] = (uint64_t)(uintptr_t)table | 0x07;
  table[0] = 0x123000 | 0x05; /* present, read-only, user */
  pdpt[0] = (uint64_t)(uintptr_t)low_pd | 0x03;
  pdpt[1] = (uint64_t)(uintptr_t)high_pd | 0x07;
  pml4[0] = (uint64_t)(uintptr_t)pdpt | 0x07;
  __asm__ volatile("mov %0, %%cr3" : : "r"(pml4) : "memory");

  serial_puts("views ready gdt=");
  serial_put_hex((uint64_t)(uintptr_t)gdt);
  serial_puts(" idt=");
  serial_put_hex((uint64_t)(uintptr_t)idt);
  serial_puts(" tss=");
  serial_put_hex(base);
  serial_puts(" handler=");
  serial_put_hex((uint64_t)(uintptr_t)interrupt_handler);
  serial_puts(" pml4=");
  serial_put_hex((uint64_t)(uintptr_t)pml4);
  serial_putc('\n');
  for (;;) __asm__ volatile("pause");
}
