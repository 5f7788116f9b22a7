/*
 * The built-in demo guest (`bulkhead demo`): a Multiboot kernel that greets, shows what the
 * loader gave it and talks to its devices, each of which runs in a process of its own.
 */
#include "guest.h"

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  serial_puts("\nHello from a Bulkhead guest.\n");
  serial_puts(
      "This text travels: guest OUT -> trapped by the core (KVM or its software CPU) -> "
      "shared ring -> serial server process -> your terminal.\n\n");
  if (magic != MULTIBOOT_BOOTLOADER_MAGIC) guest_fail(0x7e, "not booted by a Multiboot loader");
  if (info->flags & (1u << 2)) {
    serial_puts("command line: ");
    serial_puts((const char*)(uintptr_t)info->cmdline);
    serial_putc('\n');
  }
  serial_puts("memory: ");
  serial_put_dec(info->mem_lower);
  serial_puts(" KiB low, ");
  serial_put_dec(info->mem_upper);
  serial_puts(" KiB upper\nmemory map:\n");
  if (info->flags & (1u << 6)) {
    uint32_t offset = 0;
    while (offset < info->mmap_length) {
      struct multiboot_mmap_entry* entry =
          (struct multiboot_mmap_entry*)(uintptr_t)(info->mmap_addr + offset);
      serial_puts("  ");
      serial_put_hex(entry->base);
      serial_puts(" + ");
      serial_put_hex(entry->length);
      serial_puts(entry->type == 1 ? "  usable\n" : "  reserved\n");
      offset += entry->size + 4;
    }
  }
  /* A round trip: the scratch register lives in the serial server's process. */
  outb(COM1 + 7, 0x5a);
  serial_puts(inb(COM1 + 7) == 0x5a ? "serial scratch register round trip: ok\n"
                                    : "serial scratch register round trip: WRONG\n");
  serial_puts("Leaving through the debug-exit device (value 0, so bulkhead exits with 1).\n");
  guest_exit(0);
}
