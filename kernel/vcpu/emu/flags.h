// Architectural bit names the software CPU uses (SDM Vol. 1, 3.4.3; Vol. 3, 2.5 and 2.2.1).
#pragma once

#include <cstdint>

namespace bulkhead::emu {

constexpr uint64_t FLAG_CF = 1 << 0, FLAG_PF = 1 << 2, FLAG_AF = 1 << 4, FLAG_ZF = 1 << 6,
                   FLAG_SF = 1 << 7, FLAG_TF = 1 << 8, FLAG_IF = 1 << 9, FLAG_DF = 1 << 10,
                   FLAG_OF = 1 << 11, FLAG_IOPL = 3 << 12, FLAG_NT = 1 << 14, FLAG_RF = 1 << 16,
                   FLAG_VM = 1 << 17, FLAG_AC = 1 << 18, FLAG_VIF = 1 << 19, FLAG_VIP = 1 << 20,
                   FLAG_ID = 1 << 21;
constexpr uint64_t FLAGS_ARITH = FLAG_CF | FLAG_PF | FLAG_AF | FLAG_ZF | FLAG_SF | FLAG_OF;

// Whether condition `cc` (the SDM's tttn encoding of Jcc, SETcc and CMOVcc) holds for `f`.
constexpr bool conditionHolds(int cc, uint64_t f) {
  bool result;
  switch (cc >> 1) {
    case 0:
      result = f & FLAG_OF;
      break;
    case 1:
      result = f & FLAG_CF;
      break;
    case 2:
      result = f & FLAG_ZF;
      break;
    case 3:
      result = f & (FLAG_CF | FLAG_ZF);
      break;
    case 4:
      result = f & FLAG_SF;
      break;
    case 5:
      result = f & FLAG_PF;
      break;
    case 6:
      result = !(f & FLAG_SF) != !(f & FLAG_OF);
      break;
    default:
      result = (f & FLAG_ZF) || (!(f & FLAG_SF) != !(f & FLAG_OF));
      break;
  }
  return (cc & 1) ? !result : result;
}

// The arithmetic flags as RFLAGS bits from LAHF's AH (SF ZF 0 AF 0 PF 1 CF) and SETO's AL
// (the form the fast path reads them from the host in: fast.c++).
constexpr uint64_t arithFromLahf(uint16_t ax) { return ((ax >> 8) & 0xd5) | ((ax & 1ull) << 11); }

constexpr uint64_t CR0_PE = 1 << 0, CR0_MP = 1 << 1, CR0_EM = 1 << 2, CR0_TS = 1 << 3,
                   CR0_ET = 1 << 4, CR0_NE = 1 << 5, CR0_WP = 1 << 16, CR0_AM = 1 << 18,
                   CR0_NW = 1 << 29, CR0_CD = 1 << 30, CR0_PG = 1ull << 31;
constexpr uint64_t CR4_VME = 1 << 0, CR4_PSE = 1 << 4, CR4_PAE = 1 << 5, CR4_PGE = 1 << 7,
                   CR4_OSFXSR = 1 << 9, CR4_OSXMMEXCPT = 1 << 10;
constexpr uint64_t EFER_SCE = 1 << 0, EFER_LME = 1 << 8, EFER_LMA = 1 << 10, EFER_NXE = 1 << 11;

}  // namespace bulkhead::emu
