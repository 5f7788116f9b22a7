// Flag evaluation shared by the software CPU's interpreters; the architectural bit names
// themselves (RFLAGS, CR0, CR4, EFER) are the x86 layer's (kernel/x86/registers.h).
#pragma once

#include <cstdint>

#include "kernel/x86/registers.h"

namespace bulkhead::emu {

// The bits an access of `size` bytes covers.
constexpr uint64_t mask(unsigned size) { return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1; }

using namespace x86;  // the software CPU speaks the SDM's names

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

}  // namespace bulkhead::emu
