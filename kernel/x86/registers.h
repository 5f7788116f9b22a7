// Architectural bit names, as the SDM spells them, shared by the CPU backends, the boot code and
// the guest views: RFLAGS (Vol. 1, 3.4.3), CR0/CR4 (Vol. 3, 2.5), EFER (Vol. 3, 2.2.1),
// paging-structure entries (Vol. 3, 4.5), the #PF error code (Vol. 3, 4.7) and the exception
// vectors (Vol. 3, 6.3.1).
#pragma once

#include <cstdint>

namespace bulkhead::x86 {

constexpr uint64_t bit(unsigned n) { return uint64_t{1} << n; }
// Bits `high` down to `low`, inclusive.
constexpr uint64_t bitRange(unsigned high, unsigned low) {
  return ((high == 63 ? ~uint64_t{0} : bit(high + 1) - 1) >> low) << low;
}

// RFLAGS.
constexpr uint64_t FLAG_CF = bit(0), FLAG_RESERVED1 = bit(1), FLAG_PF = bit(2), FLAG_AF = bit(4),
                   FLAG_ZF = bit(6), FLAG_SF = bit(7), FLAG_TF = bit(8), FLAG_IF = bit(9),
                   FLAG_DF = bit(10), FLAG_OF = bit(11), FLAG_IOPL = bitRange(13, 12),
                   FLAG_NT = bit(14), FLAG_RF = bit(16), FLAG_VM = bit(17), FLAG_AC = bit(18),
                   FLAG_VIF = bit(19), FLAG_VIP = bit(20), FLAG_ID = bit(21);

// CR0 and CR4.
constexpr uint64_t CR0_PE = bit(0), CR0_MP = bit(1), CR0_EM = bit(2), CR0_TS = bit(3),
                   CR0_ET = bit(4), CR0_NE = bit(5), CR0_WP = bit(16), CR0_AM = bit(18),
                   CR0_NW = bit(29), CR0_CD = bit(30), CR0_PG = bit(31);
constexpr uint64_t CR4_VME = bit(0), CR4_PSE = bit(4), CR4_PAE = bit(5), CR4_PGE = bit(7),
                   CR4_OSFXSR = bit(9), CR4_OSXMMEXCPT = bit(10), CR4_LA57 = bit(12);

// IA32_EFER.
constexpr uint64_t EFER_SCE = bit(0), EFER_LME = bit(8), EFER_LMA = bit(10), EFER_NXE = bit(11);

// Paging-structure entries.
constexpr uint64_t PTE_P = bit(0), PTE_RW = bit(1), PTE_US = bit(2), PTE_A = bit(5), PTE_D = bit(6),
                   PTE_PS = bit(7), PTE_XD = bit(63);
constexpr uint64_t PTE_ADDRESS = bitRange(51, 12);

// The #PF error code.
constexpr uint32_t PF_P = 1 << 0, PF_W = 1 << 1, PF_U = 1 << 2, PF_RSVD = 1 << 3, PF_I = 1 << 4;

enum class Vector : uint8_t {
  DE = 0,   // divide error
  DB = 1,   // debug
  NMI = 2,  // non-maskable interrupt
  BP = 3,   // breakpoint (INT3)
  OF = 4,   // overflow (INTO)
  BR = 5,   // BOUND range exceeded
  UD = 6,   // invalid opcode
  NM = 7,   // device not available
  DF = 8,   // double fault
  TS = 10,  // invalid TSS
  NP = 11,  // segment not present
  SS = 12,  // stack-segment fault
  GP = 13,  // general protection
  PF = 14,  // page fault
  MF = 16,  // x87 floating-point error
  AC = 17,  // alignment check
  MC = 18,  // machine check
  XM = 19,  // SIMD floating-point exception
};
constexpr uint8_t vectorNumber(Vector vector) { return static_cast<uint8_t>(vector); }

// 48-bit canonical form (4-level paging): bits 63..47 all equal.
constexpr bool canonical(uint64_t linear) {
  return static_cast<uint64_t>(static_cast<int64_t>(linear << 16) >> 16) == linear;
}

}  // namespace bulkhead::x86
