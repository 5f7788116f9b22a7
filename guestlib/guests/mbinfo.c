/*
 * Prints what the Multiboot loader handed over: "loader NAME" (when given), "cmdline TEXT",
 * "mem lower=KiB upper=KiB" and one "mmap BASE LENGTH TYPE" line per memory-map entry (hex),
 * then "mbinfo done" and exits 0. Used to check bootloaders (GRUB through SeaBIOS) and
 * bulkhead's own Multiboot loader alike.
 */
#include "guest.h"

void main32(uint32_t magic, struct multiboot_info* info) {
  serial_init();
  if (magic != MULTIBOOT_BOOTLOADER_MAGIC) guest_fail(2, "not booted by a Multiboot loader");
  if (info->flags & (1u << 9)) {
    serial_puts("loader ");
    serial_puts((const char*)(uintptr_t) * ((uint32_t*)info + 16));
    serial_putc('\n');
  }
  serial_puts("cmdline ");
  serial_puts(multiboot_cmdline(magic, info));
  serial_putc('\n');
  if (info->flags & 1u) {
    serial_puts("mem lower=");
    serial_put_dec(info->mem_lower);
    serial_puts(" upper=");
    serial_put_dec(info->mem_upper);
    serial_putc('\n');
  }
  if (info->flags & (1u << 6)) {
    uint32_t at = info->mmap_addr;
    while (at < info->mmap_addr + info->mmap_length) {
      const struct multiboot_mmap_entry* entry = (const struct multiboot_mmap_entry*)(uintptr_t)at;
      serial_puts("mmap ");
      serial_put_hex(entry->base);
      serial_putc(' ');
      serial_put_hex(entry->length);
      serial_putc(' ');
      serial_put_dec(entry->type);
      serial_putc('\n');
      at += entry->size + 4;
    }
  }
  serial_puts("mbinfo done\n");
  guest_exit(0);
}
