// String instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) with their REP prefixes.
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/executor.h"

namespace bulkhead::emu {

unsigned stringElement(ZydisMnemonic m) {
  switch (m) {
    case ZYDIS_MNEMONIC_MOVSB:
    case ZYDIS_MNEMONIC_STOSB:
    case ZYDIS_MNEMONIC_LODSB:
    case ZYDIS_MNEMONIC_CMPSB:
    case ZYDIS_MNEMONIC_SCASB:
    case ZYDIS_MNEMONIC_INSB:
    case ZYDIS_MNEMONIC_OUTSB:
      return 1;
    case ZYDIS_MNEMONIC_MOVSW:
    case ZYDIS_MNEMONIC_STOSW:
    case ZYDIS_MNEMONIC_LODSW:
    case ZYDIS_MNEMONIC_CMPSW:
    case ZYDIS_MNEMONIC_SCASW:
    case ZYDIS_MNEMONIC_INSW:
    case ZYDIS_MNEMONIC_OUTSW:
      return 2;
    case ZYDIS_MNEMONIC_MOVSD:
    case ZYDIS_MNEMONIC_STOSD:
    case ZYDIS_MNEMONIC_LODSD:
    case ZYDIS_MNEMONIC_CMPSD:
    case ZYDIS_MNEMONIC_SCASD:
    case ZYDIS_MNEMONIC_INSD:
    case ZYDIS_MNEMONIC_OUTSD:
      return 4;
    case ZYDIS_MNEMONIC_MOVSQ:
    case ZYDIS_MNEMONIC_STOSQ:
    case ZYDIS_MNEMONIC_LODSQ:
    case ZYDIS_MNEMONIC_CMPSQ:
    case ZYDIS_MNEMONIC_SCASQ:
      return 8;
    default:
      return 0;
  }
}

void Executor::advance(unsigned reg, unsigned element) {
  uint64_t value = s.gpr[reg];
  value = (s.rflags & FLAG_DF) ? value - element : value + element;
  setReg(reg, in.addressSize, value);
}

bool Executor::string(unsigned element) {
  bool rep = in.prefixes & (PREFIX_REP | PREFIX_REPNE);
  if (rep && counter() == 0) return true;
  SegmentIndex source = sourceSegment();
  ZydisMnemonic m = in.mnemonic;
  for (;;) {
    switch (m) {
      case ZYDIS_MNEMONIC_MOVSB:
      case ZYDIS_MNEMONIC_MOVSW:
      case ZYDIS_MNEMONIC_MOVSD:
      case ZYDIS_MNEMONIC_MOVSQ:
        c.write(ES, di(), element, c.read(source, si(), element));
        advance(6, element);
        advance(7, element);
        break;
      case ZYDIS_MNEMONIC_STOSB:
      case ZYDIS_MNEMONIC_STOSW:
      case ZYDIS_MNEMONIC_STOSD:
      case ZYDIS_MNEMONIC_STOSQ:
        c.write(ES, di(), element, s.gpr[0] & mask(element));
        advance(7, element);
        break;
      case ZYDIS_MNEMONIC_LODSB:
      case ZYDIS_MNEMONIC_LODSW:
      case ZYDIS_MNEMONIC_LODSD:
      case ZYDIS_MNEMONIC_LODSQ:
        setReg(0, element, c.read(source, si(), element));
        advance(6, element);
        break;
      case ZYDIS_MNEMONIC_CMPSB:
      case ZYDIS_MNEMONIC_CMPSW:
      case ZYDIS_MNEMONIC_CMPSD:
      case ZYDIS_MNEMONIC_CMPSQ:
        sub(c.read(source, si(), element), c.read(ES, di(), element), 0, element);
        advance(6, element);
        advance(7, element);
        break;
      case ZYDIS_MNEMONIC_SCASB:
      case ZYDIS_MNEMONIC_SCASW:
      case ZYDIS_MNEMONIC_SCASD:
      case ZYDIS_MNEMONIC_SCASQ:
        sub(s.gpr[0], c.read(ES, di(), element), 0, element);
        advance(7, element);
        break;
      case ZYDIS_MNEMONIC_INSB:
      case ZYDIS_MNEMONIC_INSW:
      case ZYDIS_MNEMONIC_INSD:
        requireIo();
        c.write(ES, di(), element, c.portIn(static_cast<uint16_t>(s.gpr[2]), element));
        advance(7, element);
        break;
      default:  // OUTS
        requireIo();
        c.portOut(static_cast<uint16_t>(s.gpr[2]), element, c.read(source, si(), element));
        advance(6, element);
        break;
    }
    if (!rep) return true;
    setCounter(counter() - 1);
    bool compares = m == ZYDIS_MNEMONIC_CMPSB || m == ZYDIS_MNEMONIC_CMPSW ||
                    m == ZYDIS_MNEMONIC_CMPSD || m == ZYDIS_MNEMONIC_CMPSQ ||
                    m == ZYDIS_MNEMONIC_SCASB || m == ZYDIS_MNEMONIC_SCASW ||
                    m == ZYDIS_MNEMONIC_SCASD || m == ZYDIS_MNEMONIC_SCASQ;
    if (counter() == 0) return true;
    if (compares) {
      bool zero = s.rflags & FLAG_ZF;
      if ((in.prefixes & PREFIX_REP) && !zero) return true;
      if ((in.prefixes & PREFIX_REPNE) && zero) return true;
    }
  }
}

}  // namespace bulkhead::emu
