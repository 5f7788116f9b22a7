/*
 * guestlib: a freestanding library for tiny guest programs (32- and 64-bit C; 16-bit guests are
 * plain assembly). Port I/O, the COM1 serial port, exit through debug-exit, string helpers.
 */
#ifndef GUESTLIB_GUEST_H
#define GUESTLIB_GUEST_H

#include <stddef.h>
#include <stdint.h>

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4

static inline void outb(uint16_t port, uint8_t value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
  uint8_t value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}
static inline void outl(uint16_t port, uint32_t value) {
  __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}
static inline uint32_t inl(uint16_t port) {
  uint32_t value;
  __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}

/* The serial port: 8N1, FIFOs on; output waits for THRE as a real driver must. */
void serial_init(void);
void serial_putc(char c);
void serial_puts(const char* text);
void serial_put_dec(uint64_t value);
void serial_put_hex(uint64_t value);

/* Ends the VM through debug-exit: the VMM exits with status (code << 1) | 1. */
__attribute__((noreturn)) void guest_exit(uint8_t code);

/* A failed check: prints "FAIL <what>" and exits with `code`. */
__attribute__((noreturn)) void guest_fail(uint8_t code, const char* what);

void* memset(void* target, int value, size_t count);
void* memcpy(void* target, const void* source, size_t count);
size_t strlen(const char* text);
/* Value of "key=NUMBER" in a command line, or `fallback`. */
uint64_t cmdline_number(const char* cmdline, const char* key, uint64_t fallback);

struct multiboot_info;
/* The Multiboot command line, or "" when the loader gave none. */
const char* multiboot_cmdline(uint32_t magic, const struct multiboot_info* info);

/* The `index`th byte of the numbered stream the stream tests use: lines "%07u\n". */
char numbered_stream_byte(uint32_t index);

static inline uint64_t rdtsc(void) {
  uint32_t low, high;
  __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
  return (uint64_t)high << 32 | low;
}

/* Multiboot v1 information, as far as guests here read it. */
struct multiboot_info {
  uint32_t flags;
  uint32_t mem_lower;
  uint32_t mem_upper;
  uint32_t boot_device;
  uint32_t cmdline;
  uint32_t mods_count;
  uint32_t mods_addr;
  uint32_t syms[4];
  uint32_t mmap_length;
  uint32_t mmap_addr;
} __attribute__((packed));

struct multiboot_mmap_entry {
  uint32_t size;
  uint64_t base;
  uint64_t length;
  uint32_t type;
} __attribute__((packed));

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2badb002

#endif
