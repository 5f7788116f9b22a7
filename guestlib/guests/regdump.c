/*
 * A compute guest for the differential test (tests/kvm/guests-test.c++): runs a fixed mix of
 * arithmetic, shifts, multiplies and divides, flag-producing compares, string instructions and
 * a memory scramble, then prints every general register, RFLAGS and a hash of the 64 KiB it
 * wrote. The same binary must print the same under --accel kvm and --accel emu.
 */
#include "guest.h"

static uint8_t area[65536];

static uint64_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x7fb5d329728ea185ull;
  x ^= x >> 27;
  x *= 0x81dadef4bc2dd44dull;
  return x ^ (x >> 33);
}

void main64(void) {
  serial_init();
  uint64_t state = 0x20261127;
  uint64_t flagsHash = 0;
  for (uint32_t i = 0; i < 20000; ++i) {
    state = mix(state + i);
    uint64_t a = state, b = mix(state) | 1, flags;
    uint32_t shift = (uint32_t)(b & 63);
    uint64_t r = (a << shift) ^ (a >> (63 - shift)) ^ ((int64_t)a >> (shift & 31));
    r += a / b + a % b + (uint64_t)((int64_t)a / (int64_t)(b | 0x100));
    __asm__ volatile("add %2, %0\n\tpushfq\n\tpopq %1" : "+r"(r), "=r"(flags) : "r"(b) : "cc");
    flagsHash = mix(flagsHash ^ (flags & 0x8d5));
    uint32_t at = (uint32_t)(r % (sizeof(area) - 16));
    for (uint32_t k = 0; k < 8; ++k) area[at + k] ^= (uint8_t)(r >> (8 * k));
  }
  /* String instructions: copy one half onto the other, backwards, then scan. */
  __asm__ volatile("std\n\trep movsb\n\tcld"
                   :
                   : "S"(area + 32767), "D"(area + 65535), "c"(32768)
                   : "memory");
  uint64_t hash = 1469598103934665603ull;
  for (uint32_t i = 0; i < sizeof(area); ++i) hash = (hash ^ area[i]) * 1099511628211ull;
  uint64_t regs[17], rflags;
  __asm__ volatile(
      "mov %%rax, 0(%0)\n\tmov %%rcx, 8(%0)\n\tmov %%rdx, 16(%0)\n\tmov %%rbx, 24(%0)\n\t"
      "mov %%rsp, 32(%0)\n\tmov %%rbp, 40(%0)\n\tmov %%rsi, 48(%0)\n\tmov %%rdi, 56(%0)\n\t"
      "mov %%r8, 64(%0)\n\tmov %%r9, 72(%0)\n\tmov %%r10, 80(%0)\n\tmov %%r11, 88(%0)\n\t"
      "mov %%r12, 96(%0)\n\tmov %%r13, 104(%0)\n\tmov %%r14, 112(%0)\n\tmov %%r15, 120(%0)\n\t"
      "pushfq\n\tpopq 128(%0)"
      :
      : "r"(regs)
      : "memory");
  rflags = regs[16];
  for (int i = 0; i < 16; ++i) {
    serial_puts("r");
    serial_put_dec((uint64_t)i);
    serial_puts("=");
    serial_put_hex(regs[i]);
    serial_puts("\n");
  }
  serial_puts("rflags=");
  serial_put_hex(rflags);
  serial_puts("\nflags-hash=");
  serial_put_hex(flagsHash);
  serial_puts("\nmemory-hash=");
  serial_put_hex(hash);
  serial_puts("\n");
  guest_exit(0);
}
