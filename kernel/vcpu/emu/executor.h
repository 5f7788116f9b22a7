// The software CPU's instruction semantics (SDM Vol. 2), shared by the files that implement
// them: execute.c++ (the dispatch, one case per mnemonic, and branches), execute-alu.c++
// (arithmetic, logic, shifts, multiply and divide), execute-strings.c++, execute-segments.c++
// (far pointers, descriptor tables, system segments), execute-sse.c++ (SSE and SSE2 moves,
// integer and floating point, FXSAVE) and execute-x87.c++ (x87 and MMX, on the host's FPU
// through x87.h).
//
// Flags are computed eagerly; an instruction either completes or throws a GuestFault before
// changing architectural state (the run loop then restores RIP and delivers it).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernel/vcpu/emu/cpu.h"
#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

constexpr uint64_t signBit(unsigned size) { return 1ull << (size * 8 - 1); }
inline int64_t signExtend(uint64_t value, unsigned size) {
  unsigned shift = 64 - size * 8;
  return static_cast<int64_t>(value << shift) >> shift;
}

// The element size of a string instruction (MOVSB 1, ..., MOVSQ 8), or 0 for other mnemonics.
unsigned stringElement(ZydisMnemonic m);

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
  uint64_t add(uint64_t a, uint64_t b, uint64_t carry, unsigned size, bool keepCarry = false);
  uint64_t sub(uint64_t a, uint64_t b, uint64_t borrow, unsigned size, bool keepCarry = false);
  uint64_t logic(uint64_t r, unsigned size);
  bool condition(int cc) const { return conditionHolds(cc, s.rflags); }

  // --- Helpers ---
  struct FarPointer {
    uint16_t selector;
    uint64_t offset;
  };
  // An immediate ptr16:xx, or the memory form: an `size`-byte offset then a 16-bit selector.
  FarPointer farPointer(const Operand& o, unsigned size);
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
  void advance(unsigned reg, unsigned element);
  SegmentIndex sourceSegment() const {
    for (unsigned i = 0; i < in.operandCount; ++i) {
      const Operand& o = in.op[i];
      if (o.kind == OperandKind::MEM && o.base == 6) return segmentOf(o);
    }
    return DS;
  }
  uint64_t si() const { return s.gpr[6] & mask(in.addressSize); }
  uint64_t di() const { return s.gpr[7] & mask(in.addressSize); }

  bool string(unsigned element);

  void shift(ZydisMnemonic m);

  void doubleShift(bool left);

  void multiply(bool isSigned);

  void divide(bool isSigned);

  void bitTest(ZydisMnemonic m);

  void pushValue(uint64_t value, unsigned size) { c.push(value, size); }
  unsigned pushSize() const {
    if (c.modeKey == 2) return osize() == 2 ? 2 : 8;
    return osize();
  }

  uint64_t readFlagsImage() const { return (s.rflags & ~(FLAG_VM | FLAG_RF)) | 2; }
  void writeFlagsImage(uint64_t value, unsigned size);

  void descriptorTable(bool load, bool interrupts);

  void loadSystemSegment(bool task);

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
      *found = segmentFromDescriptor(selector, *raw);
      bool conformingCode = !found->system && (found->type & 0xc) == 0xc;
      unsigned rpl = selector & 3;
      visible = accepts(*found) && (conformingCode || (found->dpl >= c.cpl() && found->dpl >= rpl));
    }
    setFlags(visible ? FLAG_ZF : 0, FLAG_ZF);
    return visible;
  }
  void verifySegment(bool write);
  void segmentAccessOrLimit(bool limit);

  // --- SSE (128-bit registers; scalar and packed integer and floating point) ---
  struct Vec {
    uint64_t q[2] = {0, 0};
  };
  bool isXmm(const Operand& o) const {
    return o.kind == OperandKind::REG && o.reg >= REG_XMM && o.reg < REG_XMM + 16;
  }
  // A float to an integer of `size` bytes, as CVT(T)xx2xx convert: rounded as MXCSR.RC says,
  // or truncated; NaN and out of range give the "integer indefinite" (the sign bit alone).
  uint64_t toInteger(double value, unsigned size, bool truncate) const;
  void requireSse() const {
    if ((s.cr0 & CR0_EM) || !(s.cr4 & CR4_OSFXSR)) throw GuestFault{6, false, 0};
    if (s.cr0 & CR0_TS) throw GuestFault{7, false, 0};
  }
  // `bytes` of the operand, zero-extended to 128 bits; aligned: 16-byte memory alignment.
  Vec getVec(const Operand& o, unsigned bytes, bool aligned = false);
  // Writes the low `bytes`; an XMM destination keeps its upper part unless `zeroUpper`.
  void setVec(const Operand& o, Vec v, unsigned bytes, bool zeroUpper, bool aligned = false);
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
  void maskedStore(uint64_t data, uint64_t select, uint64_t high, uint64_t selectHigh);

  // Returns false for an instruction the interpreter does not implement.
  bool run();
};

}  // namespace bulkhead::emu
