#include "guest.h"

void guest_exit(uint8_t code) {
  outb(DEBUG_EXIT_PORT, code);
  for (;;) __asm__ volatile("cli; hlt");
}

void guest_fail(uint8_t code, const char* what) {
  serial_puts("FAIL ");
  serial_puts(what);
  serial_putc('\n');
  guest_exit(code);
}

void* memset(void* target, int value, size_t count) {
  uint8_t* bytes = target;
  while (count--) *bytes++ = (uint8_t)value;
  return target;
}

void* memcpy(void* target, const void* source, size_t count) {
  uint8_t* to = target;
  const uint8_t* from = source;
  while (count--) *to++ = *from++;
  return target;
}

size_t strlen(const char* text) {
  size_t n = 0;
  while (text[n]) ++n;
  return n;
}

uint64_t cmdline_number(const char* cmdline, const char* key, uint64_t fallback) {
  size_t keyLength = strlen(key);
  for (const char* p = cmdline; p && *p; ++p) {
    if ((p == cmdline || p[-1] == ' ') && p[keyLength] == '=') {
      size_t i = 0;
      while (i < keyLength && p[i] == key[i]) ++i;
      if (i != keyLength) continue;
      uint64_t value = 0;
      const char* digit = p + keyLength + 1;
      if (*digit < '0' || *digit > '9') return fallback;
      while (*digit >= '0' && *digit <= '9') value = value * 10 + (uint64_t)(*digit++ - '0');
      return value;
    }
  }
  return fallback;
}

const char* multiboot_cmdline(uint32_t magic, const struct multiboot_info* info) {
  if (magic != MULTIBOOT_BOOTLOADER_MAGIC || !(info->flags & (1u << 2))) return "";
  return (const char*)(uintptr_t)info->cmdline;
}

char numbered_stream_byte(uint32_t index) {
  uint32_t line = index / 8, column = index % 8;
  if (column == 7) return '\n';
  for (uint32_t digit = 6; digit > column; --digit) line /= 10;
  return (char)('0' + line % 10);
}
