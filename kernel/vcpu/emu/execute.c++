// The software CPU's instruction semantics (SDM Vol. 2): one case per mnemonic. Flags are
// computed eagerly; an instruction either completes or throws a GuestFault before changing
// architectural state (the run loop then restores RIP and delivers it).
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/cpu.h"
#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

namespace {

constexpr uint64_t mask(unsigned size) { return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1; }
constexpr uint64_t signBit(unsigned size) { return 1ull << (size * 8 - 1); }
int64_t signExtend(uint64_t value, unsigned size) {
  unsigned shift = 64 - size * 8;
  return static_cast<int64_t>(value << shift) >> shift;
}

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

}  // namespace

struct Executor {
  Cpu& c;
  CpuState& s;
  const Insn& in;

  // --- Operands ---
  uint64_t reg(uint8_t id, unsigned size) const {
    if (id >= REG_HIGH8 && id < REG_HIGH8 + 4) return (s.gpr[id - REG_HIGH8] >> 8) & 0xff;
    return s.gpr[id] & mask(size);
  }
  void setReg(uint8_t id, unsigned size, uint64_t value) {
    if (id >= REG_HIGH8 && id < REG_HIGH8 + 4) {
      uint64_t& r = s.gpr[id - REG_HIGH8];
      r = (r & ~0xff00ull) | ((value & 0xff) << 8);
      return;
    }
    uint64_t& r = s.gpr[id];
    if (size == 4) {
      r = value & 0xffffffff;
    } else if (size == 8) {
      r = value;
    } else {
      r = (r & ~mask(size)) | (value & mask(size));
    }
  }
  uint64_t offset(const Operand& o) const {
    uint64_t address = o.value;
    if (o.base == REG_IP) {
      address += s.rip;
    } else if (o.base != REG_NONE) {
      address += s.gpr[o.base];
    }
    if (o.index != REG_NONE) address += s.gpr[o.index] * o.scale;
    return address & mask(in.addressSize);
  }
  SegmentIndex segmentOf(const Operand& o) const { return static_cast<SegmentIndex>(o.segment); }
  uint64_t get(const Operand& o) {
    switch (o.kind) {
      case OperandKind::REG:
        if (o.reg >= REG_SEGMENT && o.reg < REG_SEGMENT + 6) {
          return s.segment[o.reg - REG_SEGMENT].selector;
        }
        if (o.reg >= REG_CR && o.reg < REG_CR + 16) return controlRegister(o.reg - REG_CR);
        if (o.reg >= REG_DR && o.reg < REG_DR + 8) return s.dr[o.reg - REG_DR];
        return reg(o.reg, o.size);
      case OperandKind::MEM:
        if (o.agen) return offset(o);
        return c.read(segmentOf(o), offset(o), o.size);
      case OperandKind::IMM:
        return static_cast<uint64_t>(o.value) & mask(o.size);
      default:
        return 0;
    }
  }
  void set(const Operand& o, uint64_t value) {
    if (o.kind == OperandKind::MEM) {
      c.write(segmentOf(o), offset(o), o.size, value & mask(o.size));
      return;
    }
    if (o.reg >= REG_SEGMENT && o.reg < REG_SEGMENT + 6) {
      SegmentIndex index = static_cast<SegmentIndex>(o.reg - REG_SEGMENT);
      if (index == CS) throw GuestFault{6, false, 0};
      c.loadSegment(index, static_cast<uint16_t>(value));
      return;
    }
    if (o.reg >= REG_CR && o.reg < REG_CR + 16) {
      c.writeControl(o.reg - REG_CR, value);
      return;
    }
    if (o.reg >= REG_DR && o.reg < REG_DR + 8) {
      s.dr[o.reg - REG_DR] = value;
      return;
    }
    setReg(o.reg, o.size, value);
  }
  uint64_t controlRegister(unsigned index) const {
    switch (index) {
      case 0:
        return s.cr0;
      case 2:
        return s.cr2;
      case 3:
        return s.cr3;
      case 4:
        return s.cr4;
      case 8:
        return s.cr8;
      default:
        throw GuestFault{6, false, 0};
    }
  }

  // --- Flags ---
  void setFlags(uint64_t bits, uint64_t which) { s.rflags = (s.rflags & ~which) | (bits & which); }
  uint64_t szp(uint64_t result, unsigned size) const {
    result &= mask(size);
    uint64_t f = 0;
    if (result == 0) f |= FLAG_ZF;
    if (result & signBit(size)) f |= FLAG_SF;
    if (!__builtin_parity(static_cast<unsigned>(result & 0xff))) f |= FLAG_PF;
    return f;
  }
  uint64_t add(uint64_t a, uint64_t b, uint64_t carry, unsigned size, bool keepCarry = false) {
    uint64_t m = mask(size);
    a &= m;
    b &= m;
    uint64_t r = (a + b + carry) & m;
    uint64_t f = szp(r, size);
    bool cf = size == 8 ? (r < a || (carry && r == a)) : ((a + b + carry) >> (size * 8)) & 1;
    if (cf) f |= FLAG_CF;
    if (((a ^ r) & (b ^ r)) & signBit(size)) f |= FLAG_OF;
    if ((a ^ b ^ r) & 0x10) f |= FLAG_AF;
    setFlags(f, keepCarry ? FLAGS_ARITH & ~FLAG_CF : FLAGS_ARITH);
    return r;
  }
  uint64_t sub(uint64_t a, uint64_t b, uint64_t borrow, unsigned size, bool keepCarry = false) {
    uint64_t m = mask(size);
    a &= m;
    b &= m;
    uint64_t r = (a - b - borrow) & m;
    uint64_t f = szp(r, size);
    if (a < b || (borrow && a == b)) f |= FLAG_CF;
    if (((a ^ b) & (a ^ r)) & signBit(size)) f |= FLAG_OF;
    if ((a ^ b ^ r) & 0x10) f |= FLAG_AF;
    setFlags(f, keepCarry ? FLAGS_ARITH & ~FLAG_CF : FLAGS_ARITH);
    return r;
  }
  uint64_t logic(uint64_t r, unsigned size) {
    setFlags(szp(r, size), FLAGS_ARITH);
    return r & mask(size);
  }
  bool condition(int cc) const { return conditionHolds(cc, s.rflags); }

  // --- Helpers ---
  struct FarPointer {
    uint16_t selector;
    uint64_t offset;
  };
  // An immediate ptr16:xx, or the memory form: an `size`-byte offset then a 16-bit selector.
  FarPointer farPointer(const Operand& o, unsigned size) {
    if (o.kind == OperandKind::PTR) return {o.selector, static_cast<uint64_t>(o.value)};
    uint64_t at = offset(o);
    uint64_t target = c.read(segmentOf(o), at, size);
    return {static_cast<uint16_t>(c.read(segmentOf(o), at + size, 2)), target};
  }
  unsigned osize() const { return in.operandSize; }
  bool protectedMode() const { return s.cr0 & CR0_PE; }
  void requireCpl0() const {
    if (protectedMode() && c.cpl() != 0) throw GuestFault{13, true, 0};
  }
  void requireIo() const {
    unsigned iopl = (s.rflags & FLAG_IOPL) >> 12;
    if (protectedMode() && c.cpl() > iopl) throw GuestFault{13, true, 0};
  }
  void jumpTo(uint64_t target) {
    if (c.modeKey != 2) target &= mask(osize());
    s.rip = target;
  }
  uint64_t branchTarget() { return in.relative ? s.rip + in.op[0].value : get(in.op[0]); }
  uint64_t counter() const { return s.gpr[1] & mask(in.addressSize); }
  void setCounter(uint64_t value) { setReg(1, in.addressSize, value); }
  void advance(unsigned reg, unsigned element) {
    uint64_t value = s.gpr[reg];
    value = (s.rflags & FLAG_DF) ? value - element : value + element;
    setReg(reg, in.addressSize, value);
  }
  SegmentIndex sourceSegment() const {
    for (unsigned i = 0; i < in.operandCount; ++i) {
      const Operand& o = in.op[i];
      if (o.kind == OperandKind::MEM && o.base == 6) return segmentOf(o);
    }
    return DS;
  }
  uint64_t si() const { return s.gpr[6] & mask(in.addressSize); }
  uint64_t di() const { return s.gpr[7] & mask(in.addressSize); }

  bool string(unsigned element) {
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

  void shift(ZydisMnemonic m) {
    unsigned size = in.op[0].size;
    unsigned bits = size * 8;
    uint64_t count = (in.operandCount > 1 ? get(in.op[1]) : 1) & (size == 8 ? 63 : 31);
    uint64_t value = get(in.op[0]);
    if (count == 0) {
      if (size == 4) set(in.op[0], value);  // a 32-bit destination is still zero-extended
      return;
    }
    uint64_t m_ = mask(size);
    uint64_t r = 0, f = s.rflags;
    switch (m) {
      case ZYDIS_MNEMONIC_SHL: {
        r = count >= bits ? 0 : (value << count) & m_;
        bool cf = count <= bits && ((value >> (bits - count)) & 1);
        f = szp(r, size) | (cf ? FLAG_CF : 0);
        if (((r & signBit(size)) != 0) != cf) f |= FLAG_OF;
        break;
      }
      case ZYDIS_MNEMONIC_SHR: {
        r = count >= bits ? 0 : value >> count;
        bool cf = (value >> (count - 1)) & 1;
        f = szp(r, size) | (cf ? FLAG_CF : 0);
        if (value & signBit(size)) f |= count == 1 ? FLAG_OF : 0;
        break;
      }
      case ZYDIS_MNEMONIC_SAR: {
        int64_t v = signExtend(value, size);
        r = static_cast<uint64_t>(v >> (count >= bits ? bits - 1 : count)) & m_;
        bool cf = (v >> (count - 1 >= bits ? bits - 1 : count - 1)) & 1;
        f = szp(r, size) | (cf ? FLAG_CF : 0);
        break;
      }
      case ZYDIS_MNEMONIC_ROL: {
        unsigned n = count % bits;
        r = n == 0 ? value : ((value << n) | (value >> (bits - n))) & m_;
        f = s.rflags & ~(FLAG_CF | FLAG_OF);
        if (r & 1) f |= FLAG_CF;
        if (((r >> (bits - 1)) & 1) != (r & 1)) f |= FLAG_OF;
        setFlags(f, FLAG_CF | FLAG_OF);
        set(in.op[0], r);
        return;
      }
      case ZYDIS_MNEMONIC_ROR: {
        unsigned n = count % bits;
        r = n == 0 ? value : ((value >> n) | (value << (bits - n))) & m_;
        f = 0;
        if (r & signBit(size)) f |= FLAG_CF;
        if (((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1) f |= FLAG_OF;
        setFlags(f, FLAG_CF | FLAG_OF);
        set(in.op[0], r);
        return;
      }
      case ZYDIS_MNEMONIC_RCL:
      case ZYDIS_MNEMONIC_RCR: {
        unsigned n = count % (bits + 1);
        uint64_t carry = s.rflags & FLAG_CF ? 1 : 0;
        r = value;
        for (unsigned i = 0; i < n; ++i) {
          if (m == ZYDIS_MNEMONIC_RCL) {
            uint64_t out = (r >> (bits - 1)) & 1;
            r = ((r << 1) | carry) & m_;
            carry = out;
          } else {
            uint64_t out = r & 1;
            r = (r >> 1) | (carry << (bits - 1));
            carry = out;
          }
        }
        f = carry ? FLAG_CF : 0;
        if (m == ZYDIS_MNEMONIC_RCL) {
          if (((r >> (bits - 1)) & 1) != carry) f |= FLAG_OF;
        } else if (((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1) {
          f |= FLAG_OF;
        }
        setFlags(f, FLAG_CF | FLAG_OF);
        set(in.op[0], r);
        return;
      }
      default:
        break;
    }
    setFlags(f, FLAGS_ARITH);
    set(in.op[0], r);
  }

  void doubleShift(bool left) {
    unsigned size = in.op[0].size;
    unsigned bits = size * 8;
    uint64_t count = get(in.op[2]) & (size == 8 ? 63 : 31);
    if (count == 0) {
      if (size == 4) set(in.op[0], get(in.op[0]));  // still zero-extended
      return;
    }
    uint64_t dest = get(in.op[0]), source = get(in.op[1]);
    unsigned __int128 wide;
    uint64_t r;
    bool cf;
    if (left) {
      wide = (static_cast<unsigned __int128>(dest) << bits) | source;
      r = static_cast<uint64_t>(wide >> (bits - count)) & mask(size);
      cf = (dest >> (bits - count)) & 1;
    } else {
      wide = (static_cast<unsigned __int128>(source) << bits) | dest;
      r = static_cast<uint64_t>(wide >> count) & mask(size);
      cf = (dest >> (count - 1)) & 1;
    }
    uint64_t f = szp(r, size) | (cf ? FLAG_CF : 0);
    if ((r ^ dest) & signBit(size)) f |= FLAG_OF;
    setFlags(f, FLAGS_ARITH);
    set(in.op[0], r);
  }

  void multiply(bool isSigned) {
    unsigned size = in.op[0].size;
    if (in.operandCount >= 2 && isSigned) {  // IMUL r, r/m[, imm]
      const Operand& a = in.operandCount == 3 ? in.op[1] : in.op[0];
      const Operand& b = in.operandCount == 3 ? in.op[2] : in.op[1];
      __int128 product =
          static_cast<__int128>(signExtend(get(a), size)) * signExtend(get(b) & mask(size), size);
      uint64_t r = static_cast<uint64_t>(product) & mask(size);
      bool overflow = product != signExtend(r, size);
      setFlags(szp(r, size) | (overflow ? FLAG_CF | FLAG_OF : 0), FLAGS_ARITH);
      set(in.op[0], r);
      return;
    }
    uint64_t a = s.gpr[0] & mask(size), b = get(in.op[0]);
    unsigned __int128 product;
    bool overflow;
    if (isSigned) {
      __int128 p = static_cast<__int128>(signExtend(a, size)) * signExtend(b, size);
      product = static_cast<unsigned __int128>(p);
      overflow = p != signExtend(static_cast<uint64_t>(p) & mask(size), size);
    } else {
      product = static_cast<unsigned __int128>(a) * b;
      overflow = (product >> (size * 8)) != 0;
    }
    uint64_t low = static_cast<uint64_t>(product) & mask(size);
    uint64_t high = static_cast<uint64_t>(product >> (size * 8)) & mask(size);
    if (size == 1) {
      setReg(0, 2, static_cast<uint64_t>(product) & 0xffff);
    } else {
      setReg(0, size, low);
      setReg(2, size, high);
    }
    setFlags(szp(low, size) | (overflow ? FLAG_CF | FLAG_OF : 0), FLAGS_ARITH);
  }

  void divide(bool isSigned) {
    unsigned size = in.op[0].size;
    uint64_t divisor = get(in.op[0]);
    if (divisor == 0) throw GuestFault{0, false, 0};
    unsigned __int128 dividend;
    if (size == 1) {
      dividend = s.gpr[0] & 0xffff;
    } else {
      dividend = (static_cast<unsigned __int128>(s.gpr[2] & mask(size)) << (size * 8)) |
                 (s.gpr[0] & mask(size));
    }
    uint64_t quotient, remainder;
    if (isSigned) {
      unsigned bits = size * 16;
      __int128 n = static_cast<__int128>(dividend << (128 - bits)) >> (128 - bits);
      __int128 d = signExtend(divisor, size);
      __int128 q = n / d;
      __int128 r = n % d;
      __int128 limit = static_cast<__int128>(1) << (size * 8 - 1);
      if (q >= limit || q < -limit) throw GuestFault{0, false, 0};
      quotient = static_cast<uint64_t>(q) & mask(size);
      remainder = static_cast<uint64_t>(r) & mask(size);
    } else {
      unsigned __int128 q = dividend / divisor;
      if (q >> (size * 8)) throw GuestFault{0, false, 0};
      quotient = static_cast<uint64_t>(q);
      remainder = static_cast<uint64_t>(dividend % divisor);
    }
    if (size == 1) {
      setReg(0, 2, (remainder << 8) | quotient);
    } else {
      setReg(0, size, quotient);
      setReg(2, size, remainder);
    }
  }

  void bitTest(ZydisMnemonic m) {
    unsigned size = in.op[0].size;
    uint64_t bit = get(in.op[1]);
    uint64_t value;
    Operand target = in.op[0];
    if (target.kind == OperandKind::MEM && in.op[1].kind == OperandKind::REG) {
      // A register bit offset reaches beyond the operand (SDM Vol. 2, BT).
      int64_t offsetBits = signExtend(bit, in.op[1].size);
      int64_t step = (offsetBits >> (size == 8 ? 6 : size == 4 ? 5 : 4)) * size;
      target.value += step;
      bit = static_cast<uint64_t>(offsetBits) & (size * 8 - 1);
    } else {
      bit &= size * 8 - 1;
    }
    value = get(target);
    bool was = (value >> bit) & 1;
    setFlags(was ? FLAG_CF : 0, FLAG_CF);
    if (m == ZYDIS_MNEMONIC_BT) return;
    if (m == ZYDIS_MNEMONIC_BTS) value |= 1ull << bit;
    if (m == ZYDIS_MNEMONIC_BTR) value &= ~(1ull << bit);
    if (m == ZYDIS_MNEMONIC_BTC) value ^= 1ull << bit;
    set(target, value);
  }

  void pushValue(uint64_t value, unsigned size) { c.push(value, size); }
  unsigned pushSize() const {
    if (c.modeKey == 2) return osize() == 2 ? 2 : 8;
    return osize();
  }

  uint64_t readFlagsImage() const { return (s.rflags & ~(FLAG_VM | FLAG_RF)) | 2; }
  void writeFlagsImage(uint64_t value, unsigned size) {
    uint64_t changeable = FLAGS_ARITH | FLAG_TF | FLAG_DF | FLAG_NT | FLAG_AC | FLAG_ID;
    unsigned iopl = (s.rflags & FLAG_IOPL) >> 12;
    if (!protectedMode() || c.cpl() <= iopl) changeable |= FLAG_IF;
    if (!protectedMode() || c.cpl() == 0) changeable |= FLAG_IOPL;
    changeable &= mask(size);
    s.rflags = (s.rflags & ~changeable) | (value & changeable) | 2;
  }

  void descriptorTable(bool load, bool interrupts) {
    uint64_t at = offset(in.op[0]);
    SegmentIndex segment = segmentOf(in.op[0]);
    uint64_t& base = interrupts ? s.idtBase : s.gdtBase;
    uint16_t& limit = interrupts ? s.idtLimit : s.gdtLimit;
    unsigned baseBytes = c.modeKey == 2 ? 8 : 4;
    if (load) {
      requireCpl0();
      uint16_t newLimit = static_cast<uint16_t>(c.read(segment, at, 2));
      uint64_t newBase = c.read(segment, at + 2, baseBytes);
      if (c.modeKey != 2 && osize() == 2) newBase &= 0xffffff;
      limit = newLimit;
      base = newBase;
    } else {
      c.write(segment, at, 2, limit);
      c.write(segment, at + 2, baseBytes, base);
    }
  }

  void loadSystemSegment(bool task) {
    requireCpl0();
    if (!protectedMode()) throw GuestFault{6, false, 0};
    uint16_t selector = static_cast<uint16_t>(get(in.op[0]));
    SegmentState& target = task ? s.tr : s.ldtr;
    if ((selector & ~3u) == 0) {
      if (task) throw GuestFault{13, true, 0};
      target = SegmentState{};
      return;
    }
    if (selector & 4) throw GuestFault{13, true, static_cast<uint32_t>(selector & ~3u)};
    uint64_t address;
    uint32_t high;
    SegmentState loaded = c.descriptorAt(selector, &address, &high);
    bool ok = loaded.system && (task ? (loaded.type == 9 || loaded.type == 1) : loaded.type == 2);
    if (!ok) throw GuestFault{13, true, static_cast<uint32_t>(selector & ~3u)};
    if (!loaded.present) throw GuestFault{11, true, static_cast<uint32_t>(selector & ~3u)};
    if (s.efer & EFER_LMA) loaded.base |= static_cast<uint64_t>(high) << 32;
    if (task) {
      loaded.type |= 2;  // busy
      uint64_t raw = c.readSystem(address, 8) | (2ull << 40);
      c.writeSystem(address, 8, raw);
    }
    target = loaded;
  }

  // VERR, VERW, LAR, LSL: ZF says whether `selector` names a descriptor of a kind `accepts`
  // that the current privilege may see (SDM Vol. 2 for each). A bad selector only clears ZF.
  template <typename Accepts>
  bool inspectSelector(uint16_t selector, Accepts accepts, SegmentState* found, uint64_t* raw) {
    if (!protectedMode()) throw GuestFault{6, false, 0};
    std::optional<uint64_t> slot =
        (selector & ~3u) != 0 ? c.descriptorSlot(selector, 8) : std::nullopt;
    bool visible = slot.has_value();
    if (visible) {
      *raw = c.readSystem(*slot, 8);
      *found = fromDescriptor(selector, *raw);
      bool conformingCode = !found->system && (found->type & 0xc) == 0xc;
      unsigned rpl = selector & 3;
      visible = accepts(*found) && (conformingCode || (found->dpl >= c.cpl() && found->dpl >= rpl));
    }
    setFlags(visible ? FLAG_ZF : 0, FLAG_ZF);
    return visible;
  }
  void verifySegment(bool write) {
    SegmentState found;
    uint64_t raw;
    inspectSelector(
        static_cast<uint16_t>(get(in.op[0])),
        [&](const SegmentState& d) {
          bool code = d.type & 8;
          if (d.system) return false;
          return write ? !code && (d.type & 2) : !code || (d.type & 2);
        },
        &found, &raw);
  }
  void segmentAccessOrLimit(bool limit) {
    SegmentState found;
    uint64_t raw;
    auto accepts = [&](const SegmentState& d) {
      if (!d.system) return true;
      bool longMode = s.efer & EFER_LMA;
      switch (d.type) {
        case 2:
        case 9:
        case 11:
          return true;  // LDT, TSS
        case 1:
        case 3:
          return !longMode;  // 16-bit TSS
        case 4:
        case 5:
          return !limit && !longMode;  // 16-bit call gate, task gate
        case 12:
          return !limit;  // call gate
        default:
          return false;
      }
    };
    if (!inspectSelector(static_cast<uint16_t>(get(in.op[1])), accepts, &found, &raw)) return;
    set(in.op[0], limit ? found.limit : (raw >> 32) & 0x00f0ff00);
  }

  // --- SSE (128-bit registers; scalar and packed integer and floating point) ---
  struct Vec {
    uint64_t q[2] = {0, 0};
  };
  bool isXmm(const Operand& o) const {
    return o.kind == OperandKind::REG && o.reg >= REG_XMM && o.reg < REG_XMM + 16;
  }
  // A float to an integer of `size` bytes, as CVT(T)xx2xx convert: rounded as MXCSR.RC says,
  // or truncated; NaN and out of range give the "integer indefinite" (the sign bit alone).
  uint64_t toInteger(double value, unsigned size, bool truncate) const {
    if (!truncate) {
      switch ((s.mxcsr >> 13) & 3) {
        case 0:
          value = std::nearbyint(value);  // to nearest even: the host's own mode
          break;
        case 1:
          value = std::floor(value);
          break;
        case 2:
          value = std::ceil(value);
          break;
        default:
          value = std::trunc(value);
          break;
      }
    }
    double limit = size == 8 ? 9223372036854775808.0 : 2147483648.0;
    if (value != value || value >= limit || value < -limit) return signBit(size);
    return static_cast<uint64_t>(static_cast<int64_t>(value)) & mask(size);
  }
  void requireSse() const {
    if ((s.cr0 & CR0_EM) || !(s.cr4 & CR4_OSFXSR)) throw GuestFault{6, false, 0};
    if (s.cr0 & CR0_TS) throw GuestFault{7, false, 0};
  }
  // `bytes` of the operand, zero-extended to 128 bits; aligned: 16-byte memory alignment.
  Vec getVec(const Operand& o, unsigned bytes, bool aligned = false) {
    Vec v;
    if (isXmm(o)) {
      v.q[0] = s.xmm[o.reg - REG_XMM][0];
      v.q[1] = s.xmm[o.reg - REG_XMM][1];
      if (bytes < 16) v.q[1] = 0;
      if (bytes < 8) v.q[0] &= mask(bytes);
      return v;
    }
    if (o.kind == OperandKind::MEM) {
      uint64_t at = offset(o);
      if (aligned && (at & 15)) throw GuestFault{13, true, 0};
      v.q[0] = c.read(segmentOf(o), at, bytes < 8 ? bytes : 8);
      if (bytes == 16) v.q[1] = c.read(segmentOf(o), at + 8, 8);
      return v;
    }
    v.q[0] = get(o) & mask(bytes);
    return v;
  }
  // Writes the low `bytes`; an XMM destination keeps its upper part unless `zeroUpper`.
  void setVec(const Operand& o, Vec v, unsigned bytes, bool zeroUpper, bool aligned = false) {
    if (isXmm(o)) {
      uint64_t* x = s.xmm[o.reg - REG_XMM];
      if (bytes == 16 || zeroUpper) {
        x[0] = bytes < 8 ? v.q[0] & mask(bytes) : v.q[0];
        x[1] = bytes == 16 ? v.q[1] : 0;
      } else {
        x[0] = (x[0] & ~mask(bytes)) | (v.q[0] & mask(bytes));
      }
      return;
    }
    if (o.kind == OperandKind::MEM) {
      uint64_t at = offset(o);
      if (aligned && (at & 15)) throw GuestFault{13, true, 0};
      if (bytes == 16) {
        // Both halves must be writable before either is written.
        c.linearAddress(segmentOf(o), at, 16, true);
        c.write(segmentOf(o), at, 8, v.q[0]);
        c.write(segmentOf(o), at + 8, 8, v.q[1]);
      } else {
        c.write(segmentOf(o), at, bytes, v.q[0] & mask(bytes));
      }
      return;
    }
    set(o, v.q[0]);
  }
  // Lane-wise integer operation on `lane`-byte lanes.
  template <typename F>
  Vec lanes(Vec a, Vec b, unsigned lane, F f) {
    Vec r;
    for (unsigned half = 0; half < 2; ++half) {
      for (unsigned at = 0; at < 64; at += lane * 8) {
        uint64_t x = (a.q[half] >> at) & mask(lane), y = (b.q[half] >> at) & mask(lane);
        r.q[half] |= (f(x, y) & mask(lane)) << at;
      }
    }
    return r;
  }
  template <typename T, typename F>
  uint64_t floatOp(uint64_t a, uint64_t b, F f) {
    T x, y;
    memcpy(&x, &a, sizeof(T));
    memcpy(&y, &b, sizeof(T));
    T r = f(x, y);
    uint64_t out = 0;
    memcpy(&out, &r, sizeof(T));
    return out;
  }
  // Element `i` of `width` bytes.
  static uint64_t element(const Vec& v, unsigned i, unsigned width) {
    unsigned bit = i * width * 8;
    return (v.q[bit / 64] >> (bit % 64)) & mask(width);
  }
  static void setElement(Vec& v, unsigned i, unsigned width, uint64_t value) {
    unsigned bit = i * width * 8;
    uint64_t& q = v.q[bit / 64];
    q = (q & ~(mask(width) << (bit % 64))) | ((value & mask(width)) << (bit % 64));
  }
  bool sse2(ZydisMnemonic m);
  bool floatLanes(ZydisMnemonic m);
  static double toDouble(uint64_t bits, bool single) {
    if (single) {
      float f;
      uint32_t raw = static_cast<uint32_t>(bits);
      memcpy(&f, &raw, 4);
      return f;
    }
    double d;
    memcpy(&d, &bits, 8);
    return d;
  }
  static uint64_t fromDouble(double value, bool single) {
    if (single) {
      float f = static_cast<float>(value);
      uint32_t raw;
      memcpy(&raw, &f, 4);
      return raw;
    }
    uint64_t raw;
    memcpy(&raw, &value, 8);
    return raw;
  }
  bool sse(ZydisMnemonic m);
  void fxsave(bool restore);
  // x87 (x87.h runs the arithmetic on the host's FPU).
  bool x87();
  bool x87Control(uint8_t opcode, uint8_t modrm);
  void x87Pending() const {  // a waiting instruction with an unmasked exception flagged: #MF
    // With CR0.NE clear a PC raises IRQ 13 through FERR#; this CPU ignores the exception
    // instead (as with IGNNE# asserted). docs/emu.md.
    if (s.x87.exceptionPending() && (s.cr0 & CR0_NE)) throw GuestFault{16, false, 0};
  }
  void x87Environment(SegmentIndex segment, uint64_t at, bool restore);
  bool mmx();
  // MASKMOVQ and MASKMOVDQU: the bytes of `data` whose byte in `select` has its top bit set,
  // to the implicit [rDI] (op[2]); `high`, `selectHigh`: MASKMOVDQU's upper eight.
  void maskedStore(uint64_t data, uint64_t select, uint64_t high, uint64_t selectHigh) {
    const Operand& to = in.op[2];
    uint64_t at = offset(to);
    unsigned bytes = to.size;
    c.linearAddress(segmentOf(to), at, bytes, true);
    for (unsigned i = 0; i < bytes; ++i) {
      uint64_t value = i < 8 ? data >> (8 * i) : high >> (8 * (i - 8));
      uint64_t chosen = i < 8 ? select >> (8 * i) : selectHigh >> (8 * (i - 8));
      if (chosen & 0x80) c.write(segmentOf(to), at + i, 1, value & 0xff);
    }
  }

  // Returns false for an instruction the interpreter does not implement.
  bool run();
};

bool Executor::run() {
  if (in.unit == Insn::Unit::X87) return x87();
  if (in.unit == Insn::Unit::MMX) return mmx();
  ZydisMnemonic m = in.mnemonic;
  const Operand* op = in.op;
  switch (m) {
    case ZYDIS_MNEMONIC_NOP:
    case ZYDIS_MNEMONIC_PAUSE:
    case ZYDIS_MNEMONIC_LFENCE:
    case ZYDIS_MNEMONIC_MFENCE:
    case ZYDIS_MNEMONIC_SFENCE:
    case ZYDIS_MNEMONIC_PREFETCHT0:
    case ZYDIS_MNEMONIC_PREFETCHT1:
    case ZYDIS_MNEMONIC_PREFETCHT2:
    case ZYDIS_MNEMONIC_PREFETCHNTA:
    case ZYDIS_MNEMONIC_PREFETCHW:
    case ZYDIS_MNEMONIC_ENDBR32:
    case ZYDIS_MNEMONIC_ENDBR64:
    case ZYDIS_MNEMONIC_CLFLUSH:
      return true;
    case ZYDIS_MNEMONIC_FWAIT:
      if ((s.cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS)) throw GuestFault{7, false, 0};
      x87Pending();
      return true;
    case ZYDIS_MNEMONIC_MOV:
    case ZYDIS_MNEMONIC_MOVNTI:
      set(op[0], get(op[1]));
      return true;
    case ZYDIS_MNEMONIC_MOVZX:
      set(op[0], get(op[1]));
      return true;
    case ZYDIS_MNEMONIC_MOVSX:
    case ZYDIS_MNEMONIC_MOVSXD:
      set(op[0], static_cast<uint64_t>(signExtend(get(op[1]), op[1].size)));
      return true;
    case ZYDIS_MNEMONIC_LEA:
      set(op[0], offset(op[1]));
      return true;
    case ZYDIS_MNEMONIC_XCHG: {
      uint64_t a = get(op[0]), b = get(op[1]);
      set(op[0], b);
      set(op[1], a);
      return true;
    }
    case ZYDIS_MNEMONIC_ADD:
      set(op[0], add(get(op[0]), get(op[1]), 0, op[0].size));
      return true;
    case ZYDIS_MNEMONIC_ADC:
      set(op[0], add(get(op[0]), get(op[1]), s.rflags & FLAG_CF ? 1 : 0, op[0].size));
      return true;
    case ZYDIS_MNEMONIC_SUB:
      set(op[0], sub(get(op[0]), get(op[1]), 0, op[0].size));
      return true;
    case ZYDIS_MNEMONIC_SBB:
      set(op[0], sub(get(op[0]), get(op[1]), s.rflags & FLAG_CF ? 1 : 0, op[0].size));
      return true;
    case ZYDIS_MNEMONIC_CMP:
      sub(get(op[0]), get(op[1]), 0, op[0].size);
      return true;
    case ZYDIS_MNEMONIC_INC:
      set(op[0], add(get(op[0]), 1, 0, op[0].size, true));
      return true;
    case ZYDIS_MNEMONIC_DEC:
      set(op[0], sub(get(op[0]), 1, 0, op[0].size, true));
      return true;
    case ZYDIS_MNEMONIC_NEG: {
      uint64_t value = get(op[0]);
      set(op[0], sub(0, value, 0, op[0].size));
      return true;
    }
    case ZYDIS_MNEMONIC_NOT:
      set(op[0], ~get(op[0]));
      return true;
    case ZYDIS_MNEMONIC_AND:
      set(op[0], logic(get(op[0]) & get(op[1]), op[0].size));
      return true;
    case ZYDIS_MNEMONIC_OR:
      set(op[0], logic(get(op[0]) | get(op[1]), op[0].size));
      return true;
    case ZYDIS_MNEMONIC_XOR:
      set(op[0], logic(get(op[0]) ^ get(op[1]), op[0].size));
      return true;
    case ZYDIS_MNEMONIC_TEST:
      logic(get(op[0]) & get(op[1]), op[0].size);
      return true;
    case ZYDIS_MNEMONIC_MUL:
      multiply(false);
      return true;
    case ZYDIS_MNEMONIC_IMUL:
      multiply(true);
      return true;
    case ZYDIS_MNEMONIC_DIV:
      divide(false);
      return true;
    case ZYDIS_MNEMONIC_IDIV:
      divide(true);
      return true;
    case ZYDIS_MNEMONIC_SHL:
    case ZYDIS_MNEMONIC_SHR:
    case ZYDIS_MNEMONIC_SAR:
    case ZYDIS_MNEMONIC_ROL:
    case ZYDIS_MNEMONIC_ROR:
    case ZYDIS_MNEMONIC_RCL:
    case ZYDIS_MNEMONIC_RCR:
      shift(m);
      return true;
    case ZYDIS_MNEMONIC_SHLD:
      doubleShift(true);
      return true;
    case ZYDIS_MNEMONIC_SHRD:
      doubleShift(false);
      return true;
    case ZYDIS_MNEMONIC_BT:
    case ZYDIS_MNEMONIC_BTS:
    case ZYDIS_MNEMONIC_BTR:
    case ZYDIS_MNEMONIC_BTC:
      bitTest(m);
      return true;
    case ZYDIS_MNEMONIC_BSF:
    case ZYDIS_MNEMONIC_TZCNT: {
      // TZCNT is REP BSF on a CPU without BMI1, which the software CPU does not report.
      uint64_t value = get(op[1]);
      if (value == 0) {
        setFlags(FLAG_ZF, FLAG_ZF);
        return true;
      }
      setFlags(0, FLAG_ZF);
      set(op[0], __builtin_ctzll(value));
      return true;
    }
    case ZYDIS_MNEMONIC_BSR:
    case ZYDIS_MNEMONIC_LZCNT: {
      uint64_t value = get(op[1]);
      if (value == 0) {
        setFlags(FLAG_ZF, FLAG_ZF);
        return true;
      }
      setFlags(0, FLAG_ZF);
      set(op[0], 63 - __builtin_clzll(value));
      return true;
    }
    case ZYDIS_MNEMONIC_BSWAP: {
      uint64_t value = get(op[0]);
      set(op[0], op[0].size == 8 ? __builtin_bswap64(value) : __builtin_bswap32(value));
      return true;
    }
    case ZYDIS_MNEMONIC_XADD: {
      uint64_t a = get(op[0]), b = get(op[1]);
      uint64_t sum = add(a, b, 0, op[0].size);
      set(op[1], a);
      set(op[0], sum);
      return true;
    }
    case ZYDIS_MNEMONIC_CMPXCHG: {
      uint64_t current = get(op[0]);
      uint64_t accumulator = s.gpr[0] & mask(op[0].size);
      sub(accumulator, current, 0, op[0].size);
      if (accumulator == current) {
        set(op[0], get(op[1]));
      } else {
        set(op[0], current);  // the destination is always written (SDM)
        setReg(0, op[0].size, current);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_CMPXCHG8B:
    case ZYDIS_MNEMONIC_CMPXCHG16B: {
      unsigned half = m == ZYDIS_MNEMONIC_CMPXCHG8B ? 4 : 8;
      Operand low = op[0], high = op[0];
      low.size = high.size = half;
      high.value += half;
      uint64_t currentLow = get(low), currentHigh = get(high);
      if (currentLow == (s.gpr[0] & mask(half)) && currentHigh == (s.gpr[2] & mask(half))) {
        set(low, s.gpr[3]);
        set(high, s.gpr[1]);
        setFlags(FLAG_ZF, FLAG_ZF);
      } else {
        setReg(0, half, currentLow);
        setReg(2, half, currentHigh);
        setFlags(0, FLAG_ZF);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_CBW:
      setReg(0, 2, signExtend(s.gpr[0], 1));
      return true;
    case ZYDIS_MNEMONIC_CWDE:
      setReg(0, 4, signExtend(s.gpr[0], 2));
      return true;
    case ZYDIS_MNEMONIC_CDQE:
      setReg(0, 8, signExtend(s.gpr[0], 4));
      return true;
    case ZYDIS_MNEMONIC_CWD:
    case ZYDIS_MNEMONIC_CDQ:
    case ZYDIS_MNEMONIC_CQO: {
      unsigned size = m == ZYDIS_MNEMONIC_CWD ? 2 : m == ZYDIS_MNEMONIC_CDQ ? 4 : 8;
      setReg(2, size, (s.gpr[0] & signBit(size)) ? ~0ull : 0);
      return true;
    }
    case ZYDIS_MNEMONIC_PUSH: {
      unsigned size = pushSize();
      // An immediate is sign-extended to the stack width.
      uint64_t value =
          op[0].kind == OperandKind::IMM ? static_cast<uint64_t>(op[0].value) : get(op[0]);
      pushValue(value & mask(size), size);
      return true;
    }
    case ZYDIS_MNEMONIC_POP: {
      unsigned size = pushSize();
      uint64_t saved = s.gpr[4];
      uint64_t value = c.pop(size);
      try {
        if (op[0].kind == OperandKind::MEM) {
          Operand target = op[0];
          target.size = static_cast<uint8_t>(size);
          set(target, value);
        } else if (op[0].reg >= REG_SEGMENT && op[0].reg < REG_SEGMENT + 6) {
          set(op[0], value);
        } else {
          setReg(op[0].reg, size, value);
        }
      } catch (const GuestFault&) {
        s.gpr[4] = saved;
        throw;
      }
      return true;
    }
    case ZYDIS_MNEMONIC_PUSHA:
    case ZYDIS_MNEMONIC_PUSHAD: {
      unsigned size = m == ZYDIS_MNEMONIC_PUSHA ? 2 : 4;
      uint64_t sp = s.gpr[4];
      for (unsigned r = 0; r < 8; ++r) pushValue((r == 4 ? sp : s.gpr[r]) & mask(size), size);
      return true;
    }
    case ZYDIS_MNEMONIC_POPA:
    case ZYDIS_MNEMONIC_POPAD: {
      unsigned size = m == ZYDIS_MNEMONIC_POPA ? 2 : 4;
      for (int r = 7; r >= 0; --r) {
        uint64_t value = c.pop(size);
        if (r != 4) setReg(static_cast<uint8_t>(r), size, value);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_PUSHF:
    case ZYDIS_MNEMONIC_PUSHFD:
    case ZYDIS_MNEMONIC_PUSHFQ: {
      unsigned size = pushSize();
      pushValue(readFlagsImage() & mask(size), size);
      return true;
    }
    case ZYDIS_MNEMONIC_POPF:
    case ZYDIS_MNEMONIC_POPFD:
    case ZYDIS_MNEMONIC_POPFQ: {
      unsigned size = pushSize();
      uint64_t wasIf = s.rflags & FLAG_IF;
      writeFlagsImage(c.pop(size), size);
      if (!wasIf && (s.rflags & FLAG_IF)) c.shadow = true;
      c.endBlock = true;
      return true;
    }
    case ZYDIS_MNEMONIC_LAHF:
      setReg(REG_HIGH8, 1, (s.rflags & 0xd5) | 2);
      return true;
    case ZYDIS_MNEMONIC_SAHF:
      setFlags((s.gpr[0] >> 8) & 0xd5, 0xd5);
      return true;
    case ZYDIS_MNEMONIC_CLC:
      setFlags(0, FLAG_CF);
      return true;
    case ZYDIS_MNEMONIC_STC:
      setFlags(FLAG_CF, FLAG_CF);
      return true;
    case ZYDIS_MNEMONIC_CMC:
      s.rflags ^= FLAG_CF;
      return true;
    case ZYDIS_MNEMONIC_CLD:
      setFlags(0, FLAG_DF);
      return true;
    case ZYDIS_MNEMONIC_STD:
      setFlags(FLAG_DF, FLAG_DF);
      return true;
    case ZYDIS_MNEMONIC_CLI:
      requireIo();
      setFlags(0, FLAG_IF);
      return true;
    case ZYDIS_MNEMONIC_STI:
      requireIo();
      if (!(s.rflags & FLAG_IF)) c.shadow = true;
      setFlags(FLAG_IF, FLAG_IF);
      c.endBlock = true;
      return true;
    case ZYDIS_MNEMONIC_JMP:
      if (in.far) {
        FarPointer target = farPointer(op[0], osize());
        c.farJump(target.selector, target.offset, osize());
        return true;
      }
      jumpTo(branchTarget());
      return true;
    case ZYDIS_MNEMONIC_CALL:
      if (in.far) {
        FarPointer target = farPointer(op[0], osize());
        c.farCall(target.selector, target.offset, osize());
        return true;
      } else {
        uint64_t target = branchTarget();
        unsigned size = pushSize();
        pushValue(s.rip & mask(size), size);
        jumpTo(target);
      }
      return true;
    case ZYDIS_MNEMONIC_RET: {
      uint16_t release = in.operandCount > 0 ? static_cast<uint16_t>(op[0].value) : 0;
      if (in.far) {
        c.farReturn(osize(), release);
        return true;
      }
      unsigned size = pushSize();
      uint64_t target = c.pop(size);
      setReg(4, c.stackWidth(), s.gpr[4] + release);
      jumpTo(target);
      return true;
    }
    case ZYDIS_MNEMONIC_IRET:
    case ZYDIS_MNEMONIC_IRETD:
    case ZYDIS_MNEMONIC_IRETQ:
      c.interruptReturn(m == ZYDIS_MNEMONIC_IRET ? 2 : m == ZYDIS_MNEMONIC_IRETD ? 4 : 8);
      return true;
    case ZYDIS_MNEMONIC_INT:
      c.deliver(static_cast<uint8_t>(op[0].value), false, 0, true, s.rip);
      return true;
    case ZYDIS_MNEMONIC_INT3:
      c.deliver(3, false, 0, true, s.rip);
      return true;
    case ZYDIS_MNEMONIC_INTO:
      if (s.rflags & FLAG_OF) c.deliver(4, false, 0, true, s.rip);
      return true;
    case ZYDIS_MNEMONIC_INT1:
      c.deliver(1, false, 0, false, s.rip);
      return true;
    case ZYDIS_MNEMONIC_UD0:
    case ZYDIS_MNEMONIC_UD1:
    case ZYDIS_MNEMONIC_UD2:
      throw GuestFault{6, false, 0};
    case ZYDIS_MNEMONIC_LOOP:
    case ZYDIS_MNEMONIC_LOOPE:
    case ZYDIS_MNEMONIC_LOOPNE: {
      uint64_t count = (counter() - 1) & mask(in.addressSize);
      setCounter(count);
      bool zero = s.rflags & FLAG_ZF;
      bool taken = count != 0 && (m == ZYDIS_MNEMONIC_LOOP || (m == ZYDIS_MNEMONIC_LOOPE && zero) ||
                                  (m == ZYDIS_MNEMONIC_LOOPNE && !zero));
      if (taken) jumpTo(branchTarget());
      return true;
    }
    case ZYDIS_MNEMONIC_JCXZ:
    case ZYDIS_MNEMONIC_JECXZ:
    case ZYDIS_MNEMONIC_JRCXZ:
      if (counter() == 0) jumpTo(branchTarget());
      return true;
    case ZYDIS_MNEMONIC_LEAVE: {
      unsigned width = c.stackWidth();
      setReg(4, width, s.gpr[5]);
      setReg(5, pushSize(), c.pop(pushSize()));
      return true;
    }
    case ZYDIS_MNEMONIC_ENTER: {
      unsigned size = pushSize();
      if (op[1].value != 0) return false;  // nested frames: not implemented
      pushValue(s.gpr[5] & mask(size), size);
      uint64_t frame = s.gpr[4];
      setReg(4, c.stackWidth(), s.gpr[4] - op[0].value);
      setReg(5, size, frame);
      return true;
    }
    case ZYDIS_MNEMONIC_HLT:
      requireCpl0();
      s.halted = true;
      return true;
    case ZYDIS_MNEMONIC_IN: {
      requireIo();
      uint16_t port = static_cast<uint16_t>(get(op[1]));
      set(op[0], c.portIn(port, op[0].size));
      return true;
    }
    case ZYDIS_MNEMONIC_OUT: {
      requireIo();
      uint16_t port = static_cast<uint16_t>(get(op[0]));
      c.portOut(port, op[1].size, get(op[1]));
      return true;
    }
    case ZYDIS_MNEMONIC_XLAT: {
      uint64_t address = (s.gpr[3] + (s.gpr[0] & 0xff)) & mask(in.addressSize);
      setReg(0, 1, c.read(sourceSegment(), address, 1));
      return true;
    }
    case ZYDIS_MNEMONIC_LGDT:
      descriptorTable(true, false);
      return true;
    case ZYDIS_MNEMONIC_LIDT:
      descriptorTable(true, true);
      return true;
    case ZYDIS_MNEMONIC_SGDT:
      descriptorTable(false, false);
      return true;
    case ZYDIS_MNEMONIC_SIDT:
      descriptorTable(false, true);
      return true;
    case ZYDIS_MNEMONIC_LLDT:
      loadSystemSegment(false);
      return true;
    case ZYDIS_MNEMONIC_LTR:
      loadSystemSegment(true);
      return true;
    case ZYDIS_MNEMONIC_VERR:
      verifySegment(false);
      return true;
    case ZYDIS_MNEMONIC_VERW:
      verifySegment(true);
      return true;
    case ZYDIS_MNEMONIC_LAR:
      segmentAccessOrLimit(false);
      return true;
    case ZYDIS_MNEMONIC_LSL:
      segmentAccessOrLimit(true);
      return true;
    case ZYDIS_MNEMONIC_SLDT:
      set(op[0], s.ldtr.selector);
      return true;
    case ZYDIS_MNEMONIC_STR:
      set(op[0], s.tr.selector);
      return true;
    case ZYDIS_MNEMONIC_SMSW:
      set(op[0], s.cr0 & mask(op[0].size));
      return true;
    case ZYDIS_MNEMONIC_LMSW: {
      requireCpl0();
      uint64_t value = get(op[0]) & 0xf;
      // LMSW sets PE but cannot clear it.
      c.writeControl(0, (s.cr0 & ~0xeull) | value | (s.cr0 & CR0_PE));
      return true;
    }
    case ZYDIS_MNEMONIC_CLTS:
      requireCpl0();
      s.cr0 &= ~CR0_TS;
      return true;
    case ZYDIS_MNEMONIC_INVLPG:
      requireCpl0();
      c.invalidatePage(c.modeKey == 2
                           ? offset(op[0])
                           : (s.segment[segmentOf(op[0])].base + offset(op[0])) & 0xffffffff);
      return true;
    case ZYDIS_MNEMONIC_WBINVD:
    case ZYDIS_MNEMONIC_INVD:
      requireCpl0();
      return true;
    case ZYDIS_MNEMONIC_RDMSR: {
      requireCpl0();
      uint64_t value = c.readMsr(static_cast<uint32_t>(s.gpr[1]));
      s.gpr[0] = value & 0xffffffff;
      s.gpr[2] = value >> 32;
      return true;
    }
    case ZYDIS_MNEMONIC_WRMSR:
      requireCpl0();
      c.writeMsr(static_cast<uint32_t>(s.gpr[1]),
                 (s.gpr[0] & 0xffffffff) | ((s.gpr[2] & 0xffffffff) << 32));
      c.endBlock = true;
      return true;
    case ZYDIS_MNEMONIC_RDTSC:
    case ZYDIS_MNEMONIC_RDTSCP: {
      if ((s.cr4 & 4) && c.cpl() != 0 && protectedMode()) throw GuestFault{13, true, 0};
      uint64_t tsc = c.bus.timestamp() + s.tscAdjust;
      s.gpr[0] = tsc & 0xffffffff;
      s.gpr[2] = tsc >> 32;
      if (m == ZYDIS_MNEMONIC_RDTSCP) s.gpr[1] = 0;
      return true;
    }
    case ZYDIS_MNEMONIC_CPUID:
      c.cpuidInstruction();
      return true;
    case ZYDIS_MNEMONIC_SWAPGS: {
      if (c.modeKey != 2) throw GuestFault{6, false, 0};
      requireCpl0();
      std::swap(s.segment[GS].base, s.kernelGsBase);
      return true;
    }
    case ZYDIS_MNEMONIC_SYSCALL:
      c.syscall();
      return true;
    case ZYDIS_MNEMONIC_SYSRET:
      c.sysret(osize());
      return true;
    case ZYDIS_MNEMONIC_SYSENTER:
      c.sysenter();
      return true;
    case ZYDIS_MNEMONIC_SYSEXIT:
      c.sysexit(osize());
      return true;
    case ZYDIS_MNEMONIC_LDS:
    case ZYDIS_MNEMONIC_LES:
    case ZYDIS_MNEMONIC_LSS:
    case ZYDIS_MNEMONIC_LFS:
    case ZYDIS_MNEMONIC_LGS: {
      SegmentIndex target = m == ZYDIS_MNEMONIC_LDS   ? DS
                            : m == ZYDIS_MNEMONIC_LES ? ES
                            : m == ZYDIS_MNEMONIC_LSS ? SS
                            : m == ZYDIS_MNEMONIC_LFS ? FS
                                                      : GS;
      FarPointer pointer = farPointer(op[1], op[0].size);
      c.loadSegment(target, pointer.selector);
      setReg(op[0].reg, op[0].size, pointer.offset);
      return true;
    }
    default:
      break;
  }
  int cc = conditionOf(m);
  if (cc >= 0) {
    switch (m) {
      case ZYDIS_MNEMONIC_JO:
      case ZYDIS_MNEMONIC_JNO:
      case ZYDIS_MNEMONIC_JB:
      case ZYDIS_MNEMONIC_JNB:
      case ZYDIS_MNEMONIC_JZ:
      case ZYDIS_MNEMONIC_JNZ:
      case ZYDIS_MNEMONIC_JBE:
      case ZYDIS_MNEMONIC_JNBE:
      case ZYDIS_MNEMONIC_JS:
      case ZYDIS_MNEMONIC_JNS:
      case ZYDIS_MNEMONIC_JP:
      case ZYDIS_MNEMONIC_JNP:
      case ZYDIS_MNEMONIC_JL:
      case ZYDIS_MNEMONIC_JNL:
      case ZYDIS_MNEMONIC_JLE:
      case ZYDIS_MNEMONIC_JNLE:
        if (condition(cc)) jumpTo(branchTarget());
        return true;
      case ZYDIS_MNEMONIC_SETO:
      case ZYDIS_MNEMONIC_SETNO:
      case ZYDIS_MNEMONIC_SETB:
      case ZYDIS_MNEMONIC_SETNB:
      case ZYDIS_MNEMONIC_SETZ:
      case ZYDIS_MNEMONIC_SETNZ:
      case ZYDIS_MNEMONIC_SETBE:
      case ZYDIS_MNEMONIC_SETNBE:
      case ZYDIS_MNEMONIC_SETS:
      case ZYDIS_MNEMONIC_SETNS:
      case ZYDIS_MNEMONIC_SETP:
      case ZYDIS_MNEMONIC_SETNP:
      case ZYDIS_MNEMONIC_SETL:
      case ZYDIS_MNEMONIC_SETNL:
      case ZYDIS_MNEMONIC_SETLE:
      case ZYDIS_MNEMONIC_SETNLE:
        set(op[0], condition(cc) ? 1 : 0);
        return true;
      default: {  // CMOVcc: the source is read (and may fault) either way
        uint64_t value = get(op[1]);
        if (condition(cc)) {
          set(op[0], value);
        } else if (op[0].size == 4) {
          set(op[0], get(op[0]));  // a 32-bit CMOV clears the upper half regardless
        }
        return true;
      }
    }
  }
  unsigned element = stringElement(m);
  bool vector = false;
  for (unsigned i = 0; i < in.operandCount; ++i) vector = vector || isXmm(op[i]);
  if (element != 0 && !vector) return string(element);
  if (m == ZYDIS_MNEMONIC_FXSAVE || m == ZYDIS_MNEMONIC_FXSAVE64 || m == ZYDIS_MNEMONIC_FXRSTOR ||
      m == ZYDIS_MNEMONIC_FXRSTOR64) {
    if (s.cr0 & (CR0_EM | CR0_TS))
      throw GuestFault{static_cast<uint8_t>(s.cr0 & CR0_EM ? 6 : 7), false, 0};
    fxsave(m == ZYDIS_MNEMONIC_FXRSTOR || m == ZYDIS_MNEMONIC_FXRSTOR64);
    return true;
  }
  // (The conversions to a general register name no XMM register when they read memory.)
  if (vector || m == ZYDIS_MNEMONIC_LDMXCSR || m == ZYDIS_MNEMONIC_STMXCSR ||
      m == ZYDIS_MNEMONIC_CVTSS2SI || m == ZYDIS_MNEMONIC_CVTSD2SI ||
      m == ZYDIS_MNEMONIC_CVTTSS2SI || m == ZYDIS_MNEMONIC_CVTTSD2SI) {
    requireSse();
    return sse(m);
  }
  return false;
}

bool Executor::sse(ZydisMnemonic m) {
  const Operand* op = in.op;
  auto arith = [&](unsigned bytes, bool packed, auto f32, auto f64) {
    Vec a = getVec(op[0], 16), b = getVec(op[1], packed ? 16 : bytes, packed);
    Vec r = a;
    unsigned count = packed ? 16 / bytes : 1;
    for (unsigned i = 0; i < count; ++i) {
      unsigned half = (i * bytes) / 8, shift = (i * bytes * 8) % 64;
      uint64_t x = (a.q[half] >> shift) & mask(bytes), y = (b.q[half] >> shift) & mask(bytes);
      uint64_t z = bytes == 4 ? floatOp<float>(x, y, f32) : floatOp<double>(x, y, f64);
      r.q[half] = (r.q[half] & ~(mask(bytes) << shift)) | ((z & mask(bytes)) << shift);
    }
    setVec(op[0], r, 16, false);
  };
  auto addF = [](auto x, auto y) { return x + y; };
  auto subF = [](auto x, auto y) { return x - y; };
  auto mulF = [](auto x, auto y) { return x * y; };
  auto divF = [](auto x, auto y) { return x / y; };
  switch (m) {
    case ZYDIS_MNEMONIC_MOVAPS:
    case ZYDIS_MNEMONIC_MOVAPD:
    case ZYDIS_MNEMONIC_MOVDQA:
    case ZYDIS_MNEMONIC_MOVNTDQ:
    case ZYDIS_MNEMONIC_MOVNTPS:
    case ZYDIS_MNEMONIC_MOVNTPD:
      setVec(op[0], getVec(op[1], 16, true), 16, true, true);
      return true;
    case ZYDIS_MNEMONIC_MOVUPS:
    case ZYDIS_MNEMONIC_MOVUPD:
    case ZYDIS_MNEMONIC_MOVDQU:
    case ZYDIS_MNEMONIC_LDDQU:
      setVec(op[0], getVec(op[1], 16), 16, true);
      return true;
    case ZYDIS_MNEMONIC_MOVD:
    case ZYDIS_MNEMONIC_MOVQ: {
      unsigned bytes = m == ZYDIS_MNEMONIC_MOVD ? 4 : 8;
      if (!isXmm(op[0]) && op[0].kind == OperandKind::REG) {
        setReg(op[0].reg, bytes, getVec(op[1], bytes).q[0]);
      } else {
        setVec(op[0], getVec(op[1], bytes), bytes, true);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_MOVSS:
    case ZYDIS_MNEMONIC_MOVSD: {
      unsigned bytes = m == ZYDIS_MNEMONIC_MOVSS ? 4 : 8;
      setVec(op[0], getVec(op[1], bytes), bytes, op[1].kind == OperandKind::MEM);
      return true;
    }
    case ZYDIS_MNEMONIC_PXOR:
    case ZYDIS_MNEMONIC_XORPS:
    case ZYDIS_MNEMONIC_XORPD:
    case ZYDIS_MNEMONIC_PAND:
    case ZYDIS_MNEMONIC_ANDPS:
    case ZYDIS_MNEMONIC_ANDPD:
    case ZYDIS_MNEMONIC_POR:
    case ZYDIS_MNEMONIC_ORPS:
    case ZYDIS_MNEMONIC_ORPD:
    case ZYDIS_MNEMONIC_PANDN:
    case ZYDIS_MNEMONIC_ANDNPS:
    case ZYDIS_MNEMONIC_ANDNPD: {
      Vec a = getVec(op[0], 16), b = getVec(op[1], 16, true), r;
      for (unsigned i = 0; i < 2; ++i) {
        bool isXor =
            m == ZYDIS_MNEMONIC_PXOR || m == ZYDIS_MNEMONIC_XORPS || m == ZYDIS_MNEMONIC_XORPD;
        bool isAnd =
            m == ZYDIS_MNEMONIC_PAND || m == ZYDIS_MNEMONIC_ANDPS || m == ZYDIS_MNEMONIC_ANDPD;
        bool isOr = m == ZYDIS_MNEMONIC_POR || m == ZYDIS_MNEMONIC_ORPS || m == ZYDIS_MNEMONIC_ORPD;
        r.q[i] = isXor   ? a.q[i] ^ b.q[i]
                 : isAnd ? a.q[i] & b.q[i]
                 : isOr  ? a.q[i] | b.q[i]
                         : ~a.q[i] & b.q[i];
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PADDB:
    case ZYDIS_MNEMONIC_PADDW:
    case ZYDIS_MNEMONIC_PADDD:
    case ZYDIS_MNEMONIC_PADDQ:
    case ZYDIS_MNEMONIC_PSUBB:
    case ZYDIS_MNEMONIC_PSUBW:
    case ZYDIS_MNEMONIC_PSUBD:
    case ZYDIS_MNEMONIC_PSUBQ:
    case ZYDIS_MNEMONIC_PCMPEQB:
    case ZYDIS_MNEMONIC_PCMPEQW:
    case ZYDIS_MNEMONIC_PCMPEQD: {
      unsigned lane =
          (m == ZYDIS_MNEMONIC_PADDB || m == ZYDIS_MNEMONIC_PSUBB || m == ZYDIS_MNEMONIC_PCMPEQB)
              ? 1
          : (m == ZYDIS_MNEMONIC_PADDW || m == ZYDIS_MNEMONIC_PSUBW || m == ZYDIS_MNEMONIC_PCMPEQW)
              ? 2
          : (m == ZYDIS_MNEMONIC_PADDQ || m == ZYDIS_MNEMONIC_PSUBQ) ? 8
                                                                     : 4;
      bool add = m == ZYDIS_MNEMONIC_PADDB || m == ZYDIS_MNEMONIC_PADDW ||
                 m == ZYDIS_MNEMONIC_PADDD || m == ZYDIS_MNEMONIC_PADDQ;
      bool compare =
          m == ZYDIS_MNEMONIC_PCMPEQB || m == ZYDIS_MNEMONIC_PCMPEQW || m == ZYDIS_MNEMONIC_PCMPEQD;
      Vec r = lanes(getVec(op[0], 16), getVec(op[1], 16, true), lane, [&](uint64_t x, uint64_t y) {
        return compare ? (x == y ? ~0ull : 0) : add ? x + y : x - y;
      });
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_MASKMOVDQU: {
      Vec data = getVec(op[0], 16), select = getVec(op[1], 16);
      maskedStore(data.q[0], select.q[0], data.q[1], select.q[1]);
      return true;
    }
    case ZYDIS_MNEMONIC_PMOVMSKB: {
      Vec v = getVec(op[1], 16);
      uint64_t bits = 0;
      for (unsigned i = 0; i < 16; ++i) bits |= ((v.q[i / 8] >> ((i % 8) * 8 + 7)) & 1) << i;
      setReg(op[0].reg, op[0].size, bits);
      return true;
    }
    case ZYDIS_MNEMONIC_ADDSS:
      arith(4, false, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_SUBSS:
      arith(4, false, subF, subF);
      return true;
    case ZYDIS_MNEMONIC_MULSS:
      arith(4, false, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_DIVSS:
      arith(4, false, divF, divF);
      return true;
    case ZYDIS_MNEMONIC_ADDSD:
      arith(8, false, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_SUBSD:
      arith(8, false, subF, subF);
      return true;
    case ZYDIS_MNEMONIC_MULSD:
      arith(8, false, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_DIVSD:
      arith(8, false, divF, divF);
      return true;
    case ZYDIS_MNEMONIC_ADDPS:
      arith(4, true, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_ADDPD:
      arith(8, true, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_MULPS:
      arith(4, true, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_MULPD:
      arith(8, true, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_CVTSI2SD:
    case ZYDIS_MNEMONIC_CVTSI2SS: {
      int64_t value = signExtend(get(op[1]), op[1].size);
      Vec r;
      if (m == ZYDIS_MNEMONIC_CVTSI2SD) {
        double d = static_cast<double>(value);
        memcpy(&r.q[0], &d, 8);
        setVec(op[0], r, 8, false);
      } else {
        float f = static_cast<float>(value);
        memcpy(&r.q[0], &f, 4);
        setVec(op[0], r, 4, false);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_CVTTSD2SI:
    case ZYDIS_MNEMONIC_CVTTSS2SI:
    case ZYDIS_MNEMONIC_CVTSD2SI:
    case ZYDIS_MNEMONIC_CVTSS2SI: {
      bool single = m == ZYDIS_MNEMONIC_CVTTSS2SI || m == ZYDIS_MNEMONIC_CVTSS2SI;
      bool truncate = m == ZYDIS_MNEMONIC_CVTTSD2SI || m == ZYDIS_MNEMONIC_CVTTSS2SI;
      double value = toDouble(getVec(op[1], single ? 4 : 8).q[0], single);
      setReg(op[0].reg, op[0].size, toInteger(value, op[0].size, truncate));
      return true;
    }
    case ZYDIS_MNEMONIC_LDMXCSR: {
      uint64_t value = get(op[0]);
      if (value & ~0xffffull) throw GuestFault{13, true, 0};
      s.mxcsr = static_cast<uint32_t>(value);
      return true;
    }
    case ZYDIS_MNEMONIC_STMXCSR:
      set(op[0], s.mxcsr);
      return true;
    default:
      return sse2(m);
  }
}

// Shuffles, unpacks, shifts, saturating and min/max integer lanes, comparisons and conversions:
// the rest of SSE and SSE2 that a kernel and glibc's baseline (x86-64 v1) code use.
bool Executor::sse2(ZydisMnemonic m) {
  const Operand* op = in.op;
  auto source = [&]() { return getVec(op[1], 16, true); };
  auto imm = [&](unsigned index) { return static_cast<unsigned>(get(op[index]) & 0xff); };
  // A lane-wise operation on `width`-byte lanes of destination and source.
  auto laneOp = [&](unsigned width, auto f) {
    setVec(op[0], lanes(getVec(op[0], 16), source(), width, f), 16, true);
  };
  auto signedLane = [](uint64_t x, unsigned width) { return signExtend(x, width); };
  auto saturate = [](int64_t x, int64_t low, int64_t high) {
    return static_cast<uint64_t>(x < low ? low : x > high ? high : x);
  };
  switch (m) {
    case ZYDIS_MNEMONIC_PUNPCKLBW:
    case ZYDIS_MNEMONIC_PUNPCKLWD:
    case ZYDIS_MNEMONIC_PUNPCKLDQ:
    case ZYDIS_MNEMONIC_PUNPCKLQDQ:
    case ZYDIS_MNEMONIC_PUNPCKHBW:
    case ZYDIS_MNEMONIC_PUNPCKHWD:
    case ZYDIS_MNEMONIC_PUNPCKHDQ:
    case ZYDIS_MNEMONIC_PUNPCKHQDQ:
    case ZYDIS_MNEMONIC_UNPCKLPS:
    case ZYDIS_MNEMONIC_UNPCKLPD:
    case ZYDIS_MNEMONIC_UNPCKHPS:
    case ZYDIS_MNEMONIC_UNPCKHPD: {
      unsigned width = (m == ZYDIS_MNEMONIC_PUNPCKLBW || m == ZYDIS_MNEMONIC_PUNPCKHBW)   ? 1
                       : (m == ZYDIS_MNEMONIC_PUNPCKLWD || m == ZYDIS_MNEMONIC_PUNPCKHWD) ? 2
                       : (m == ZYDIS_MNEMONIC_PUNPCKLDQ || m == ZYDIS_MNEMONIC_PUNPCKHDQ ||
                          m == ZYDIS_MNEMONIC_UNPCKLPS || m == ZYDIS_MNEMONIC_UNPCKHPS)
                           ? 4
                           : 8;
      bool high = m == ZYDIS_MNEMONIC_PUNPCKHBW || m == ZYDIS_MNEMONIC_PUNPCKHWD ||
                  m == ZYDIS_MNEMONIC_PUNPCKHDQ || m == ZYDIS_MNEMONIC_PUNPCKHQDQ ||
                  m == ZYDIS_MNEMONIC_UNPCKHPS || m == ZYDIS_MNEMONIC_UNPCKHPD;
      Vec a = getVec(op[0], 16), b = source(), r;
      unsigned half = 8 / width, base = high ? half : 0;
      for (unsigned i = 0; i < half; ++i) {
        setElement(r, 2 * i, width, element(a, base + i, width));
        setElement(r, 2 * i + 1, width, element(b, base + i, width));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PACKUSWB:
    case ZYDIS_MNEMONIC_PACKSSWB:
    case ZYDIS_MNEMONIC_PACKSSDW: {
      unsigned width = m == ZYDIS_MNEMONIC_PACKSSDW ? 4 : 2;
      int64_t low = m == ZYDIS_MNEMONIC_PACKUSWB ? 0 : m == ZYDIS_MNEMONIC_PACKSSWB ? -128 : -32768;
      int64_t high = m == ZYDIS_MNEMONIC_PACKUSWB   ? 255
                     : m == ZYDIS_MNEMONIC_PACKSSWB ? 127
                                                    : 32767;
      Vec in2[2] = {getVec(op[0], 16), source()}, r;
      unsigned count = 16 / width;
      for (unsigned i = 0; i < 2 * count; ++i) {
        int64_t x = signExtend(element(in2[i / count], i % count, width), width);
        setElement(r, i, width / 2, saturate(x, low, high));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSHUFD: {
      Vec b = source(), r;
      unsigned order = imm(2);
      for (unsigned i = 0; i < 4; ++i) setElement(r, i, 4, element(b, (order >> (2 * i)) & 3, 4));
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSHUFLW:
    case ZYDIS_MNEMONIC_PSHUFHW: {
      Vec b = source(), r = b;
      unsigned order = imm(2), base = m == ZYDIS_MNEMONIC_PSHUFHW ? 4 : 0;
      for (unsigned i = 0; i < 4; ++i) {
        setElement(r, base + i, 2, element(b, base + ((order >> (2 * i)) & 3), 2));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_SHUFPS: {
      Vec a = getVec(op[0], 16), b = source(), r;
      unsigned order = imm(2);
      for (unsigned i = 0; i < 4; ++i) {
        setElement(r, i, 4, element(i < 2 ? a : b, (order >> (2 * i)) & 3, 4));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_SHUFPD: {
      Vec a = getVec(op[0], 16), b = source(), r;
      unsigned order = imm(2);
      r.q[0] = a.q[order & 1];
      r.q[1] = b.q[(order >> 1) & 1];
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PMINUB:
      laneOp(1, [](uint64_t x, uint64_t y) { return x < y ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PMAXUB:
      laneOp(1, [](uint64_t x, uint64_t y) { return x > y ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PMINSW:
      laneOp(2,
             [&](uint64_t x, uint64_t y) { return signedLane(x, 2) < signedLane(y, 2) ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PMAXSW:
      laneOp(2,
             [&](uint64_t x, uint64_t y) { return signedLane(x, 2) > signedLane(y, 2) ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PCMPGTB:
    case ZYDIS_MNEMONIC_PCMPGTW:
    case ZYDIS_MNEMONIC_PCMPGTD: {
      unsigned width = m == ZYDIS_MNEMONIC_PCMPGTB ? 1 : m == ZYDIS_MNEMONIC_PCMPGTW ? 2 : 4;
      laneOp(width, [&](uint64_t x, uint64_t y) {
        return signedLane(x, width) > signedLane(y, width) ? ~0ull : 0;
      });
      return true;
    }
    case ZYDIS_MNEMONIC_PADDUSB:
    case ZYDIS_MNEMONIC_PADDUSW:
    case ZYDIS_MNEMONIC_PSUBUSB:
    case ZYDIS_MNEMONIC_PSUBUSW:
    case ZYDIS_MNEMONIC_PADDSB:
    case ZYDIS_MNEMONIC_PADDSW:
    case ZYDIS_MNEMONIC_PSUBSB:
    case ZYDIS_MNEMONIC_PSUBSW: {
      bool byte = m == ZYDIS_MNEMONIC_PADDUSB || m == ZYDIS_MNEMONIC_PSUBUSB ||
                  m == ZYDIS_MNEMONIC_PADDSB || m == ZYDIS_MNEMONIC_PSUBSB;
      bool add = m == ZYDIS_MNEMONIC_PADDUSB || m == ZYDIS_MNEMONIC_PADDUSW ||
                 m == ZYDIS_MNEMONIC_PADDSB || m == ZYDIS_MNEMONIC_PADDSW;
      bool isSigned = m == ZYDIS_MNEMONIC_PADDSB || m == ZYDIS_MNEMONIC_PADDSW ||
                      m == ZYDIS_MNEMONIC_PSUBSB || m == ZYDIS_MNEMONIC_PSUBSW;
      unsigned width = byte ? 1 : 2;
      int64_t low = isSigned ? -static_cast<int64_t>(signBit(width)) : 0;
      int64_t high = isSigned ? static_cast<int64_t>(signBit(width)) - 1 : mask(width);
      laneOp(width, [&](uint64_t x, uint64_t y) {
        int64_t a = isSigned ? signExtend(x, width) : static_cast<int64_t>(x);
        int64_t b = isSigned ? signExtend(y, width) : static_cast<int64_t>(y);
        return saturate(add ? a + b : a - b, low, high);
      });
      return true;
    }
    case ZYDIS_MNEMONIC_PAVGB:
      laneOp(1, [](uint64_t x, uint64_t y) { return (x + y + 1) >> 1; });
      return true;
    case ZYDIS_MNEMONIC_PAVGW:
      laneOp(2, [](uint64_t x, uint64_t y) { return (x + y + 1) >> 1; });
      return true;
    case ZYDIS_MNEMONIC_PMULLW:
      laneOp(2, [](uint64_t x, uint64_t y) { return x * y; });
      return true;
    case ZYDIS_MNEMONIC_PMULHW:
      laneOp(2, [&](uint64_t x, uint64_t y) {
        return static_cast<uint64_t>(signedLane(x, 2) * signedLane(y, 2)) >> 16;
      });
      return true;
    case ZYDIS_MNEMONIC_PMULHUW:
      laneOp(2, [](uint64_t x, uint64_t y) { return (x * y) >> 16; });
      return true;
    case ZYDIS_MNEMONIC_PMULUDQ: {
      Vec a = getVec(op[0], 16), b = source(), r;
      for (unsigned i = 0; i < 2; ++i) r.q[i] = (a.q[i] & 0xffffffff) * (b.q[i] & 0xffffffff);
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSADBW: {
      Vec a = getVec(op[0], 16), b = source(), r;
      for (unsigned i = 0; i < 16; ++i) {
        uint64_t x = element(a, i, 1), y = element(b, i, 1);
        r.q[i / 8] += x > y ? x - y : y - x;
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSLLW:
    case ZYDIS_MNEMONIC_PSLLD:
    case ZYDIS_MNEMONIC_PSLLQ:
    case ZYDIS_MNEMONIC_PSRLW:
    case ZYDIS_MNEMONIC_PSRLD:
    case ZYDIS_MNEMONIC_PSRLQ:
    case ZYDIS_MNEMONIC_PSRAW:
    case ZYDIS_MNEMONIC_PSRAD: {
      unsigned width =
          (m == ZYDIS_MNEMONIC_PSLLW || m == ZYDIS_MNEMONIC_PSRLW || m == ZYDIS_MNEMONIC_PSRAW) ? 2
          : (m == ZYDIS_MNEMONIC_PSLLQ || m == ZYDIS_MNEMONIC_PSRLQ)                            ? 8
                                                                                                : 4;
      bool left =
          m == ZYDIS_MNEMONIC_PSLLW || m == ZYDIS_MNEMONIC_PSLLD || m == ZYDIS_MNEMONIC_PSLLQ;
      bool arithmetic = m == ZYDIS_MNEMONIC_PSRAW || m == ZYDIS_MNEMONIC_PSRAD;
      uint64_t count = op[1].kind == OperandKind::IMM ? imm(1) : source().q[0];
      unsigned bits = width * 8;
      Vec a = getVec(op[0], 16), r;
      for (unsigned i = 0; i < 16 / width; ++i) {
        uint64_t x = element(a, i, width);
        uint64_t y =
            arithmetic
                ? static_cast<uint64_t>(signExtend(x, width) >> (count >= bits ? bits - 1 : count))
            : count >= bits ? 0
            : left          ? x << count
                            : x >> count;
        setElement(r, i, width, y);
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSLLDQ:
    case ZYDIS_MNEMONIC_PSRLDQ: {
      unsigned count = imm(1);
      Vec a = getVec(op[0], 16), r;
      for (unsigned i = 0; i < 16; ++i) {
        int from = m == ZYDIS_MNEMONIC_PSLLDQ ? static_cast<int>(i) - static_cast<int>(count)
                                              : static_cast<int>(i + count);
        if (count < 16 && from >= 0 && from < 16) setElement(r, i, 1, element(a, from, 1));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PEXTRW:
      setReg(op[0].reg, op[0].size, element(getVec(op[1], 16), imm(2) & 7, 2));
      return true;
    case ZYDIS_MNEMONIC_PINSRW: {
      Vec a = getVec(op[0], 16);
      setElement(a, imm(2) & 7, 2, get(op[1]));
      setVec(op[0], a, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_MOVHLPS:
    case ZYDIS_MNEMONIC_MOVLHPS: {
      Vec a = getVec(op[0], 16), b = getVec(op[1], 16);
      if (m == ZYDIS_MNEMONIC_MOVHLPS) {
        a.q[0] = b.q[1];
      } else {
        a.q[1] = b.q[0];
      }
      setVec(op[0], a, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_MOVHPS:
    case ZYDIS_MNEMONIC_MOVHPD:
    case ZYDIS_MNEMONIC_MOVLPS:
    case ZYDIS_MNEMONIC_MOVLPD: {
      bool high = m == ZYDIS_MNEMONIC_MOVHPS || m == ZYDIS_MNEMONIC_MOVHPD;
      if (isXmm(op[0])) {
        Vec a = getVec(op[0], 16);
        a.q[high ? 1 : 0] = getVec(op[1], 8).q[0];
        setVec(op[0], a, 16, true);
      } else {
        Vec r;
        r.q[0] = getVec(op[1], 16).q[high ? 1 : 0];
        setVec(op[0], r, 8, false);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_MOVMSKPS:
    case ZYDIS_MNEMONIC_MOVMSKPD: {
      unsigned width = m == ZYDIS_MNEMONIC_MOVMSKPS ? 4 : 8;
      Vec v = getVec(op[1], 16);
      uint64_t bits = 0;
      for (unsigned i = 0; i < 16 / width; ++i)
        bits |= (element(v, i, width) >> (width * 8 - 1)) << i;
      setReg(op[0].reg, op[0].size, bits);
      return true;
    }
    case ZYDIS_MNEMONIC_UCOMISS:
    case ZYDIS_MNEMONIC_COMISS:
    case ZYDIS_MNEMONIC_UCOMISD:
    case ZYDIS_MNEMONIC_COMISD: {
      bool single = m == ZYDIS_MNEMONIC_UCOMISS || m == ZYDIS_MNEMONIC_COMISS;
      unsigned width = single ? 4 : 8;
      double x = toDouble(getVec(op[0], width).q[0], single);
      double y = toDouble(getVec(op[1], width).q[0], single);
      uint64_t f = x != x || y != y ? FLAG_ZF | FLAG_PF | FLAG_CF
                   : x < y          ? FLAG_CF
                   : x == y         ? FLAG_ZF
                                    : 0;
      setFlags(f, FLAGS_ARITH);
      return true;
    }
    case ZYDIS_MNEMONIC_MINSS:
    case ZYDIS_MNEMONIC_MINSD:
    case ZYDIS_MNEMONIC_MINPS:
    case ZYDIS_MNEMONIC_MINPD:
    case ZYDIS_MNEMONIC_MAXSS:
    case ZYDIS_MNEMONIC_MAXSD:
    case ZYDIS_MNEMONIC_MAXPS:
    case ZYDIS_MNEMONIC_MAXPD:
    case ZYDIS_MNEMONIC_SQRTSS:
    case ZYDIS_MNEMONIC_SQRTSD:
    case ZYDIS_MNEMONIC_SQRTPS:
    case ZYDIS_MNEMONIC_SQRTPD:
    case ZYDIS_MNEMONIC_SUBPS:
    case ZYDIS_MNEMONIC_SUBPD:
    case ZYDIS_MNEMONIC_DIVPS:
    case ZYDIS_MNEMONIC_DIVPD:
    case ZYDIS_MNEMONIC_CMPSS:
    case ZYDIS_MNEMONIC_CMPSD:
    case ZYDIS_MNEMONIC_CMPPS:
    case ZYDIS_MNEMONIC_CMPPD:
      return floatLanes(m);
    case ZYDIS_MNEMONIC_CVTSS2SD:
    case ZYDIS_MNEMONIC_CVTSD2SS: {
      bool widen = m == ZYDIS_MNEMONIC_CVTSS2SD;
      double value = toDouble(getVec(op[1], widen ? 4 : 8).q[0], widen);
      Vec r;
      r.q[0] = fromDouble(value, !widen);
      setVec(op[0], r, widen ? 8 : 4, false);
      return true;
    }
    case ZYDIS_MNEMONIC_CVTDQ2PD:
    case ZYDIS_MNEMONIC_CVTDQ2PS: {
      bool toPd = m == ZYDIS_MNEMONIC_CVTDQ2PD;
      Vec b = getVec(op[1], toPd ? 8 : 16), r;
      for (unsigned i = 0; i < (toPd ? 2u : 4u); ++i) {
        double value = static_cast<double>(signExtend(element(b, i, 4), 4));
        setElement(r, i, toPd ? 8 : 4, fromDouble(value, !toPd));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_CVTPS2DQ:
    case ZYDIS_MNEMONIC_CVTTPS2DQ:
    case ZYDIS_MNEMONIC_CVTPD2DQ:
    case ZYDIS_MNEMONIC_CVTTPD2DQ: {
      bool single = m == ZYDIS_MNEMONIC_CVTPS2DQ || m == ZYDIS_MNEMONIC_CVTTPS2DQ;
      bool truncate = m == ZYDIS_MNEMONIC_CVTTPS2DQ || m == ZYDIS_MNEMONIC_CVTTPD2DQ;
      Vec b = getVec(op[1], 16, true), r;
      for (unsigned i = 0; i < (single ? 4u : 2u); ++i) {
        double value = toDouble(element(b, i, single ? 4 : 8), single);
        setElement(r, i, 4, toInteger(value, 4, truncate));
      }
      setVec(op[0], r, 16, true);  // the PD forms zero the upper half
      return true;
    }
    case ZYDIS_MNEMONIC_CVTPS2PD:
    case ZYDIS_MNEMONIC_CVTPD2PS: {
      bool widen = m == ZYDIS_MNEMONIC_CVTPS2PD;
      Vec b = getVec(op[1], widen ? 8 : 16, !widen), r;
      for (unsigned i = 0; i < 2; ++i) {
        double value = toDouble(element(b, i, widen ? 4 : 8), widen);
        setElement(r, i, widen ? 8 : 4, fromDouble(value, !widen));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    default:
      return false;
  }
}

// Scalar and packed min, max, square root, subtract, divide and compare (the SDM's rules for
// NaN and zero operands: MIN and MAX return the second operand; CMP's eight predicates).
bool Executor::floatLanes(ZydisMnemonic m) {
  const Operand* op = in.op;
  const char* name = ZydisMnemonicGetString(m);
  size_t length = strlen(name);
  bool packed = name[length - 2] == 'p';
  bool single = name[length - 1] == 's';
  unsigned width = single ? 4 : 8;
  Vec a = getVec(op[0], 16), b = getVec(op[1], packed ? 16 : width, packed), r = a;
  unsigned predicate = m == ZYDIS_MNEMONIC_CMPSS || m == ZYDIS_MNEMONIC_CMPSD ||
                               m == ZYDIS_MNEMONIC_CMPPS || m == ZYDIS_MNEMONIC_CMPPD
                           ? static_cast<unsigned>(get(op[2]) & 7)
                           : 0;
  for (unsigned i = 0; i < (packed ? 16 / width : 1); ++i) {
    double x = toDouble(element(a, i, width), single), y = toDouble(element(b, i, width), single);
    uint64_t bx = element(a, i, width), by = element(b, i, width);
    bool unordered = x != x || y != y;
    uint64_t out;
    switch (m) {
      case ZYDIS_MNEMONIC_MINSS:
      case ZYDIS_MNEMONIC_MINSD:
      case ZYDIS_MNEMONIC_MINPS:
      case ZYDIS_MNEMONIC_MINPD:
        out = x < y ? bx : by;
        break;
      case ZYDIS_MNEMONIC_MAXSS:
      case ZYDIS_MNEMONIC_MAXSD:
      case ZYDIS_MNEMONIC_MAXPS:
      case ZYDIS_MNEMONIC_MAXPD:
        out = x > y ? bx : by;
        break;
      case ZYDIS_MNEMONIC_SQRTSS:
      case ZYDIS_MNEMONIC_SQRTSD:
      case ZYDIS_MNEMONIC_SQRTPS:
      case ZYDIS_MNEMONIC_SQRTPD:
        out = fromDouble(single ? std::sqrt(static_cast<float>(y)) : std::sqrt(y), single);
        break;
      case ZYDIS_MNEMONIC_SUBPS:
      case ZYDIS_MNEMONIC_SUBPD:
        out = fromDouble(single ? static_cast<float>(x) - static_cast<float>(y) : x - y, single);
        break;
      case ZYDIS_MNEMONIC_DIVPS:
      case ZYDIS_MNEMONIC_DIVPD:
        out = fromDouble(single ? static_cast<float>(x) / static_cast<float>(y) : x / y, single);
        break;
      default: {  // CMPxx: EQ, LT, LE, UNORD, NEQ, NLT, NLE, ORD
        bool results[8] = {
            !unordered && x == y, !unordered && x < y,   !unordered && x <= y,   unordered,
            unordered || x != y,  unordered || !(x < y), unordered || !(x <= y), !unordered};
        out = results[predicate] ? ~0ull : 0;
        break;
      }
    }
    setElement(r, i, width, out);
  }
  setVec(op[0], r, 16, true);
  return true;
}

void Executor::fxsave(bool restore) {
  // The FXSAVE area (SDM Vol. 1, 10.5.1): x87 state, MXCSR, ST(0)-ST(7), XMM0-15. FXSAVE64
  // keeps 64-bit x87 instruction and data pointers where FXSAVE keeps offset and selector.
  SegmentIndex segment = segmentOf(in.op[0]);
  uint64_t at = offset(in.op[0]);
  if (at & 15) throw GuestFault{13, true, 0};
  c.linearAddress(segment, at, 512, !restore);
  unsigned registers = c.modeKey == 2 ? 16 : 8;
  bool wide = in.mnemonic == ZYDIS_MNEMONIC_FXSAVE64 || in.mnemonic == ZYDIS_MNEMONIC_FXRSTOR64;
  X87State& x = s.x87;
  if (restore) {
    uint32_t mxcsr = static_cast<uint32_t>(c.read(segment, at + 24, 4));
    if (mxcsr & ~0xffffu) throw GuestFault{13, true, 0};
    X87State next;
    next.control = static_cast<uint16_t>(c.read(segment, at, 2));
    next.status = static_cast<uint16_t>(c.read(segment, at + 2, 2));
    next.opcode = static_cast<uint16_t>(c.read(segment, at + 6, 2)) & 0x7ff;
    next.ip = c.read(segment, at + 8, wide ? 8 : 4);
    next.dp = c.read(segment, at + 16, wide ? 8 : 4);
    if (!wide) {
      next.cs = static_cast<uint16_t>(c.read(segment, at + 12, 2));
      next.ds = static_cast<uint16_t>(c.read(segment, at + 20, 2));
    }
    for (unsigned i = 0; i < 8; ++i) {
      X87State::Register& r = next.st(i);
      r.significand = c.read(segment, at + 32 + i * 16, 8);
      r.signExponent = static_cast<uint16_t>(c.read(segment, at + 40 + i * 16, 2));
    }
    next.tag = x87TagFromAbridged(next, static_cast<uint8_t>(c.read(segment, at + 4, 1)));
    next.summarise();
    x = next;
    s.mxcsr = mxcsr;
    for (unsigned i = 0; i < registers; ++i) {
      s.xmm[i][0] = c.read(segment, at + 160 + i * 16, 8);
      s.xmm[i][1] = c.read(segment, at + 168 + i * 16, 8);
    }
    return;
  }
  c.write(segment, at, 2, x.control);
  c.write(segment, at + 2, 2, x.status);
  c.write(segment, at + 4, 2, x87AbridgedTag(x.tag));
  c.write(segment, at + 6, 2, x.opcode);
  if (wide) {
    c.write(segment, at + 8, 8, x.ip);
    c.write(segment, at + 16, 8, x.dp);
  } else {
    c.write(segment, at + 8, 8, (x.ip & 0xffffffff) | uint64_t{x.cs} << 32);
    c.write(segment, at + 16, 8, (x.dp & 0xffffffff) | uint64_t{x.ds} << 32);
  }
  c.write(segment, at + 24, 4, s.mxcsr);
  c.write(segment, at + 28, 4, 0xffff);  // MXCSR_MASK
  for (unsigned i = 0; i < 8; ++i) {
    const X87State::Register& r = x.st(i);
    c.write(segment, at + 32 + i * 16, 8, r.significand);
    c.write(segment, at + 40 + i * 16, 8, r.signExponent);
  }
  for (unsigned i = 0; i < registers; ++i) {
    c.write(segment, at + 160 + i * 16, 8, s.xmm[i][0]);
    c.write(segment, at + 168 + i * 16, 8, s.xmm[i][1]);
  }
}

namespace {

// Whether the x87 memory form `opcode` /`reg` stores (FST, FIST, FISTTP, FBSTP and the popping
// ones), rather than reads, its memory operand.
bool x87Stores(uint8_t opcode, unsigned reg) {
  switch (opcode) {
    case 0xd9:
      return reg == 2 || reg == 3;
    case 0xdb:
      return reg == 1 || reg == 2 || reg == 3 || reg == 7;
    case 0xdd:
      return reg == 1 || reg == 2 || reg == 3;
    case 0xdf:
      return reg == 1 || reg == 2 || reg == 3 || reg == 6 || reg == 7;
    default:
      return false;
  }
}

}  // namespace

bool Executor::x87() {
  uint8_t opcode = in.opcode, modrm = in.modrm;
  if (s.cr0 & (CR0_EM | CR0_TS)) throw GuestFault{7, false, 0};
  if (x87Control(opcode, modrm)) return true;
  if (!x87HostRuns(opcode, modrm)) return false;
  const Operand* memoryOperand = nullptr;
  for (unsigned i = 0; i < in.operandCount; ++i) {
    if (in.op[i].kind == OperandKind::MEM) memoryOperand = &in.op[i];
  }
  if (((modrm >> 6) != 3) != (memoryOperand != nullptr)) return false;
  x87Pending();

  X87State next = s.x87;
  next.opcode = static_cast<uint16_t>((opcode & 7) << 8 | modrm);
  next.ip = (s.rip - in.length) & c.ripMask;
  next.cs = s.segment[CS].selector;
  uint8_t memory[16] = {};
  SegmentIndex segment = DS;
  uint64_t at = 0;
  unsigned size = 0;
  bool store = false;
  if (memoryOperand != nullptr) {
    segment = segmentOf(*memoryOperand);
    at = offset(*memoryOperand);
    size = memoryOperand->size;
    if (size == 0 || size > 10) return false;
    store = x87Stores(opcode, (modrm >> 3) & 7);
    if (store) {
      c.linearAddress(segment, at, size, true);
    } else {
      for (unsigned done = 0; done < size; done += 8) {
        unsigned part = std::min(8u, size - done);
        uint64_t value = c.read(segment, at + done, part);
        memcpy(memory + done, &value, part);
      }
    }
    next.dp = at;
    next.ds = s.segment[segment].selector;
  }
  X87HostResult result = runOnHost(next, opcode, modrm, memory, s.rflags);
  if (store && !(result.raised & 0x1f)) {
    for (unsigned done = 0; done < size; done += 8) {
      unsigned part = std::min(8u, size - done);
      uint64_t value = 0;
      memcpy(&value, memory + done, part);
      c.write(segment, at + done, part, value);
    }
  }
  s.x87 = next;
  s.rflags = result.rflags;
  return true;
}

bool Executor::mmx() {
  // MMX (SDM Vol. 1, chapter 9): the registers are the x87 registers' significands, and every
  // MMX instruction but EMMS leaves TOP 0 and every register valid.
  if (s.cr0 & CR0_EM) throw GuestFault{6, false, 0};
  if (s.cr0 & CR0_TS) throw GuestFault{7, false, 0};
  x87Pending();
  X87State next = s.x87;
  if (in.mnemonic == ZYDIS_MNEMONIC_EMMS) {
    s.x87.tag = 0xffff;
    return true;
  }
  const Operand* op = in.op;
  auto enter = [&] {
    next.status &= ~(7 << 11);
    next.tag = 0;
  };
  auto mm = [&](const Operand& o) { return next.r[o.reg - REG_MMX].significand; };
  auto setMm = [&](const Operand& o, uint64_t value) {
    next.r[o.reg - REG_MMX] = {value, 0xffff};
    enter();
  };
  auto source = [&](const Operand& o) { return o.kind == OperandKind::REG ? mm(o) : get(o); };
  auto word = [](uint64_t value, unsigned i) { return (value >> (16 * i)) & 0xffff; };
  // The conversions between MMX and XMM registers (SSE and SSE2).
  ZydisMnemonic m = in.mnemonic;
  switch (m) {
    case ZYDIS_MNEMONIC_CVTPI2PS:
    case ZYDIS_MNEMONIC_CVTPI2PD: {
      requireSse();
      bool pd = m == ZYDIS_MNEMONIC_CVTPI2PD;
      uint64_t from = source(op[1]);
      Vec r = getVec(op[0], 16);
      for (unsigned i = 0; i < 2; ++i) {
        double value = static_cast<int32_t>(from >> (32 * i));
        setElement(r, i, pd ? 8 : 4, fromDouble(value, !pd));
      }
      setVec(op[0], r, 16, true);
      if (op[1].kind == OperandKind::REG) enter();
      s.x87 = next;
      return true;
    }
    case ZYDIS_MNEMONIC_CVTPS2PI:
    case ZYDIS_MNEMONIC_CVTTPS2PI:
    case ZYDIS_MNEMONIC_CVTPD2PI:
    case ZYDIS_MNEMONIC_CVTTPD2PI: {
      requireSse();
      bool single = m == ZYDIS_MNEMONIC_CVTPS2PI || m == ZYDIS_MNEMONIC_CVTTPS2PI;
      bool truncate = m == ZYDIS_MNEMONIC_CVTTPS2PI || m == ZYDIS_MNEMONIC_CVTTPD2PI;
      Vec b = getVec(op[1], single ? 8 : 16, !single);
      uint64_t result = 0;
      for (unsigned i = 0; i < 2; ++i) {
        double value = toDouble(element(b, i, single ? 4 : 8), single);
        result |= toInteger(value, 4, truncate) << (32 * i);
      }
      setMm(op[0], result);
      s.x87 = next;
      return true;
    }
    case ZYDIS_MNEMONIC_MOVQ2DQ: {
      requireSse();
      Vec r;
      r.q[0] = mm(op[1]);
      setVec(op[0], r, 16, true);
      enter();
      s.x87 = next;
      return true;
    }
    case ZYDIS_MNEMONIC_MOVDQ2Q:
      requireSse();
      setMm(op[0], getVec(op[1], 8).q[0]);
      s.x87 = next;
      return true;
    case ZYDIS_MNEMONIC_MASKMOVQ:
      maskedStore(mm(op[0]), mm(op[1]), 0, 0);
      enter();
      s.x87 = next;
      return true;
    default:
      break;
  }
  uint8_t opcode = in.opcode, modrm = in.modrm;
  uint8_t memory[16] = {};
  auto runMemoryForm = [&](uint8_t stubOpcode, unsigned stubReg) {
    runMmxOnHost(next, stubOpcode, static_cast<uint8_t>(stubReg << 3 | 6), memory);
  };
  switch (opcode) {
    case 0x70: {  // PSHUFW mm, mm/m64, imm8
      uint64_t from = source(op[1]), result = 0;
      for (unsigned i = 0; i < 4; ++i)
        result |= word(from, (op[2].value >> (2 * i)) & 3) << (16 * i);
      setMm(op[0], result);
      break;
    }
    case 0xc4: {  // PINSRW mm, r32/m16, imm8
      unsigned at = 16 * (op[2].value & 3);
      setMm(op[0], (mm(op[0]) & ~(0xffffull << at)) | (get(op[1]) & 0xffff) << at);
      break;
    }
    case 0xc5:  // PEXTRW r32, mm, imm8
      set(op[0], word(mm(op[1]), op[2].value & 3));
      enter();
      break;
    case 0xd7: {  // PMOVMSKB r32, mm
      uint64_t value = mm(op[1]), mask = 0;
      for (unsigned i = 0; i < 8; ++i) mask |= ((value >> (8 * i + 7)) & 1) << i;
      set(op[0], mask);
      enter();
      break;
    }
    case 0x71:  // shifts by an immediate: the same shift with the count in memory
    case 0x72:
    case 0x73: {
      static constexpr uint8_t byCount[3][8] = {{0, 0, 0xd1, 0, 0xe1, 0, 0xf1, 0},
                                                {0, 0, 0xd2, 0, 0xe2, 0, 0xf2, 0},
                                                {0, 0, 0xd3, 0, 0, 0, 0xf3, 0}};
      uint8_t stubOpcode = byCount[opcode - 0x71][(modrm >> 3) & 7];
      if (stubOpcode == 0) return false;
      uint64_t count = static_cast<uint8_t>(op[1].value);
      memcpy(memory, &count, 8);
      runMemoryForm(stubOpcode, modrm & 7);
      break;
    }
    case 0x6e: {  // MOVD/MOVQ mm, r/m32/64
      uint64_t value = get(op[1]);
      memcpy(memory, &value, 8);
      runMemoryForm(op[1].size == 8 ? 0x6f : 0x6e, (modrm >> 3) & 7);
      break;
    }
    case 0x7e: {  // MOVD/MOVQ r/m32/64, mm: with memory, only after the move ran
      if (op[0].kind == OperandKind::MEM)
        c.linearAddress(segmentOf(op[0]), offset(op[0]), op[0].size, true);
      runMemoryForm(op[0].size == 8 ? 0x7f : 0x7e, (modrm >> 3) & 7);
      uint64_t value = 0;
      memcpy(&value, memory, op[0].size);
      set(op[0], value);
      break;
    }
    default: {
      if (!mmxHostRuns(opcode, modrm)) return false;
      const Operand* memoryOperand = nullptr;
      for (unsigned i = 0; i < in.operandCount; ++i) {
        if (op[i].kind == OperandKind::MEM) memoryOperand = &op[i];
      }
      if (((modrm >> 6) != 3) != (memoryOperand != nullptr)) return false;
      bool store = opcode == 0x7f || opcode == 0xe7;
      if (memoryOperand != nullptr && memoryOperand->size > 8) return false;
      if (memoryOperand != nullptr && !store) {
        uint64_t value = get(*memoryOperand);
        memcpy(memory, &value, 8);
      }
      runMmxOnHost(next, opcode, modrm, memory);
      if (memoryOperand != nullptr && store) {
        uint64_t value = 0;
        memcpy(&value, memory, memoryOperand->size);
        set(*memoryOperand, value);
      }
      break;
    }
  }
  s.x87 = next;
  return true;
}

bool Executor::x87Control(uint8_t opcode, uint8_t modrm) {
  X87State& x = s.x87;
  if ((modrm >> 6) == 3) {
    switch (opcode << 8 | modrm) {
      case 0xdbe2:  // FNCLEX
        x.status &= ~(0x3f | X87_SF | X87_ES | X87_BUSY);
        return true;
      case 0xdbe3:  // FNINIT
        x.init();
        return true;
      case 0xdfe0:  // FNSTSW AX
        setReg(0, 2, x.status);
        return true;
      case 0xdbe0:  // FENI, FDISI, FSETPM: FNOP since the 80287
      case 0xdbe1:
      case 0xdbe4:
        x87Pending();
        return true;
      default:
        return false;
    }
  }
  const Operand& o = in.op[0];
  switch (opcode << 8 | ((modrm >> 3) & 7)) {
    case 0xd905:  // FLDCW
      x87Pending();
      x.control = static_cast<uint16_t>(get(o));
      x.summarise();
      return true;
    case 0xd907:  // FNSTCW
      set(o, x.control);
      return true;
    case 0xdd07:  // FNSTSW m16
      set(o, x.status);
      return true;
    case 0xd904:  // FLDENV
    case 0xdd04:  // FRSTOR
      x87Pending();
      x87Environment(segmentOf(o), offset(o), true);
      return true;
    case 0xd906:  // FNSTENV: then all exceptions masked
      x87Environment(segmentOf(o), offset(o), false);
      x.control |= 0x3f;
      x.summarise();
      return true;
    case 0xdd06:  // FNSAVE: then FNINIT
      x87Environment(segmentOf(o), offset(o), false);
      x.init();
      return true;
    default:
      return false;
  }
}

void Executor::x87Environment(SegmentIndex segment, uint64_t at, bool restore) {
  // FLDENV/FNSTENV's environment (SDM Vol. 1, 8.1.10): seven fields of 2 bytes (16-bit operand
  // size) or 4, then for FRSTOR/FNSAVE (registers: opcode DD) ST(0)-ST(7), 10 bytes each. In
  // real mode the pointers are linear addresses, split around the opcode.
  X87State& x = s.x87;
  bool registers = in.opcode == 0xdd;  // FRSTOR, FNSAVE
  unsigned field = in.operandSize == 2 ? 2 : 4;
  bool real = !(s.cr0 & CR0_PE) || (s.rflags & FLAG_VM);
  unsigned size = 7 * field + (registers ? 80 : 0);
  c.linearAddress(segment, at, size, !restore);
  uint64_t fields[7];
  if (restore) {
    for (unsigned i = 0; i < 7; ++i) fields[i] = c.read(segment, at + i * field, field);
    X87State next = x;
    next.control = static_cast<uint16_t>(fields[0]);
    next.status = static_cast<uint16_t>(fields[1]);
    next.tag = static_cast<uint16_t>(fields[2]);
    if (real) {
      next.ip = (fields[3] & 0xffff) | (fields[4] >> 12) << 16;
      next.opcode = fields[4] & 0x7ff;
      next.dp = (fields[5] & 0xffff) | (fields[6] >> 12) << 16;
      next.cs = next.ds = 0;
    } else {
      next.ip = fields[3];
      next.cs = static_cast<uint16_t>(fields[4]);
      next.opcode = field == 4 ? (fields[4] >> 16) & 0x7ff : 0;
      next.dp = fields[5];
      next.ds = static_cast<uint16_t>(fields[6]);
    }
    if (registers) {
      for (unsigned i = 0; i < 8; ++i) {
        X87State::Register& r = next.st(i);
        r.significand = c.read(segment, at + 7 * field + i * 10, 8);
        r.signExponent = static_cast<uint16_t>(c.read(segment, at + 7 * field + i * 10 + 8, 2));
      }
    }
    next.summarise();
    x = next;
    return;
  }
  uint64_t reserved = field == 4 ? 0xffff0000 : 0;
  fields[0] = reserved | x.control;
  fields[1] = reserved | x.status;
  fields[2] = reserved | x87TagWord(x);
  if (real) {
    uint64_t ip = (uint64_t{x.cs} * 16 + x.ip) & 0xffffffff, dp = (uint64_t{x.ds} * 16 + x.dp);
    fields[3] = ip & 0xffff;
    fields[4] = (ip >> 16) << 12 | x.opcode;
    fields[5] = dp & 0xffff;
    fields[6] = ((dp & 0xffffffff) >> 16) << 12;
  } else {
    fields[3] = x.ip & 0xffffffff;
    fields[4] = x.cs | (field == 4 ? uint64_t{x.opcode} << 16 : 0);
    fields[5] = x.dp & 0xffffffff;
    fields[6] = reserved | x.ds;
  }
  for (unsigned i = 0; i < 7; ++i) c.write(segment, at + i * field, field, fields[i] & mask(field));
  if (registers) {
    for (unsigned i = 0; i < 8; ++i) {
      const X87State::Register& r = x.st(i);
      c.write(segment, at + 7 * field + i * 10, 8, r.significand);
      c.write(segment, at + 7 * field + i * 10 + 8, 2, r.signExponent);
    }
  }
}

int conditionOf(ZydisMnemonic m) {
  switch (m) {
    case ZYDIS_MNEMONIC_JO:
    case ZYDIS_MNEMONIC_SETO:
    case ZYDIS_MNEMONIC_CMOVO:
      return 0;
    case ZYDIS_MNEMONIC_JNO:
    case ZYDIS_MNEMONIC_SETNO:
    case ZYDIS_MNEMONIC_CMOVNO:
      return 1;
    case ZYDIS_MNEMONIC_JB:
    case ZYDIS_MNEMONIC_SETB:
    case ZYDIS_MNEMONIC_CMOVB:
      return 2;
    case ZYDIS_MNEMONIC_JNB:
    case ZYDIS_MNEMONIC_SETNB:
    case ZYDIS_MNEMONIC_CMOVNB:
      return 3;
    case ZYDIS_MNEMONIC_JZ:
    case ZYDIS_MNEMONIC_SETZ:
    case ZYDIS_MNEMONIC_CMOVZ:
      return 4;
    case ZYDIS_MNEMONIC_JNZ:
    case ZYDIS_MNEMONIC_SETNZ:
    case ZYDIS_MNEMONIC_CMOVNZ:
      return 5;
    case ZYDIS_MNEMONIC_JBE:
    case ZYDIS_MNEMONIC_SETBE:
    case ZYDIS_MNEMONIC_CMOVBE:
      return 6;
    case ZYDIS_MNEMONIC_JNBE:
    case ZYDIS_MNEMONIC_SETNBE:
    case ZYDIS_MNEMONIC_CMOVNBE:
      return 7;
    case ZYDIS_MNEMONIC_JS:
    case ZYDIS_MNEMONIC_SETS:
    case ZYDIS_MNEMONIC_CMOVS:
      return 8;
    case ZYDIS_MNEMONIC_JNS:
    case ZYDIS_MNEMONIC_SETNS:
    case ZYDIS_MNEMONIC_CMOVNS:
      return 9;
    case ZYDIS_MNEMONIC_JP:
    case ZYDIS_MNEMONIC_SETP:
    case ZYDIS_MNEMONIC_CMOVP:
      return 10;
    case ZYDIS_MNEMONIC_JNP:
    case ZYDIS_MNEMONIC_SETNP:
    case ZYDIS_MNEMONIC_CMOVNP:
      return 11;
    case ZYDIS_MNEMONIC_JL:
    case ZYDIS_MNEMONIC_SETL:
    case ZYDIS_MNEMONIC_CMOVL:
      return 12;
    case ZYDIS_MNEMONIC_JNL:
    case ZYDIS_MNEMONIC_SETNL:
    case ZYDIS_MNEMONIC_CMOVNL:
      return 13;
    case ZYDIS_MNEMONIC_JLE:
    case ZYDIS_MNEMONIC_SETLE:
    case ZYDIS_MNEMONIC_CMOVLE:
      return 14;
    case ZYDIS_MNEMONIC_JNLE:
    case ZYDIS_MNEMONIC_SETNLE:
    case ZYDIS_MNEMONIC_CMOVNLE:
      return 15;
    default:
      return -1;
  }
}

bool Cpu::execute(const Insn& insn) {
  if (insn.unmodeled) {
    failed = absl::StrFormat("%s names registers the software CPU does not model",
                             ZydisMnemonicGetString(insn.mnemonic));
    return false;
  }
  Executor executor{*this, s, insn};
  if (executor.run()) return true;
  failed = absl::StrFormat("the software CPU does not implement %s",
                           ZydisMnemonicGetString(insn.mnemonic));
  return false;
}

}  // namespace bulkhead::emu
