// The software CPU's fast path: specialised handlers for the instruction forms that make up
// most of what a kernel runs (MOV, LEA, ALU operations, shifts, IMUL, Jcc, CALL, RET, PUSH,
// POP, CMOVcc, SETcc on general registers, immediates and memory).
//
// Contract: chooseHandlers() picks, once at decode, a handler for an instruction or none, and
// its step. A handler does exactly what the generic interpreter (execute.c++) does for that
// instruction, only without looking at its mnemonic and operand kinds again on every
// execution; it either completes or throws a GuestFault before changing architectural state
// (a read-modify-write stores before it sets flags). A step is a handler's place in a block's
// chain (Cpu::run): it runs the handler and tail-calls the next instruction's step; a
// branch's step may go on into the next block through a link; a generic instruction's step
// runs Cpu::execute() and stops the chain where the block must end.
//
// Arithmetic flags come from the host: the handler runs the same operation on the host CPU and
// reads the flags it left (LAHF for SF ZF AF PF CF, SETO for OF). The host is an x86 CPU, so
// the flags are the ones the instruction defines, by construction; where the SDM leaves a flag
// undefined the guest sees what this host's CPU does, as it would under KVM.
//
// Memory operands: in 64-bit mode a hit in the software TLB reads or writes host memory
// directly; everything else (other modes, a TLB miss, MMIO, a page-crossing access, any fault)
// takes Cpu::read()/write(), the generic path, which is where faults are raised.
#include <cstring>
#include <type_traits>

#include "kernel/vcpu/emu/cpu.h"
#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

namespace {

// A handler and its step (Insn::fast, Insn::step).
struct Handlers {
  FastHandler plain = nullptr;
  FastHandler step = nullptr;
};

template <typename T>
using Signed = std::make_signed_t<T>;

enum class Alu : uint8_t { ADD, OR, ADC, SBB, AND, SUB, XOR, CMP, TEST };

// `a = a OP b` on the host; returns the flags it left, LAHF's AH and SETO's AL (arithFromLahf()
// makes them RFLAGS bits). `carry`: the guest's CF for ADC/SBB.
template <Alu OP, typename T>
inline uint16_t hostAlu(T& a, T b, uint64_t carry) {
  uint16_t ax;
#define BULKHEAD_HOST_ALU(INSN)                                                              \
  asm(INSN " %[b], %[a]\n\tlahf\n\tseto %%al" : [a] "+r"(a), "=&a"(ax) : [b] "r"(b) : "cc"); \
  break
  switch (OP) {
    case Alu::ADD:
      BULKHEAD_HOST_ALU("add");
    case Alu::OR:
      BULKHEAD_HOST_ALU("or");
    case Alu::AND:
    case Alu::TEST:
      BULKHEAD_HOST_ALU("and");
    case Alu::SUB:
    case Alu::CMP:
      BULKHEAD_HOST_ALU("sub");
    case Alu::XOR:
      BULKHEAD_HOST_ALU("xor");
    case Alu::ADC:
      asm("bt $0, %k[c]\n\tadc %[b], %[a]\n\tlahf\n\tseto %%al"
          : [a] "+r"(a), "=&a"(ax)
          : [b] "r"(b), [c] "r"(static_cast<uint32_t>(carry))
          : "cc");
      break;
    case Alu::SBB:
      asm("bt $0, %k[c]\n\tsbb %[b], %[a]\n\tlahf\n\tseto %%al"
          : [a] "+r"(a), "=&a"(ax)
          : [b] "r"(b), [c] "r"(static_cast<uint32_t>(carry))
          : "cc");
      break;
  }
#undef BULKHEAD_HOST_ALU
  return ax;
}

enum class Unary : uint8_t { INC, DEC, NEG };

template <Unary OP, typename T>
inline uint16_t hostUnary(T& a) {
  uint16_t ax;
  if constexpr (OP == Unary::INC) {
    asm("inc %[a]\n\tlahf\n\tseto %%al" : [a] "+r"(a), "=&a"(ax) : : "cc");
  } else if constexpr (OP == Unary::DEC) {
    asm("dec %[a]\n\tlahf\n\tseto %%al" : [a] "+r"(a), "=&a"(ax) : : "cc");
  } else {
    asm("neg %[a]\n\tlahf\n\tseto %%al" : [a] "+r"(a), "=&a"(ax) : : "cc");
  }
  return ax;
}

enum class Shift : uint8_t { SHL, SHR, SAR, ROL, ROR };

// Only for a count that is not zero once masked (a zero count changes no flag).
template <Shift OP, typename T>
inline uint16_t hostShift(T& a, uint8_t count) {
  uint16_t ax;
#define BULKHEAD_HOST_SHIFT(INSN)                                                            \
  asm(INSN " %%cl, %[a]\n\tlahf\n\tseto %%al" : [a] "+r"(a), "=&a"(ax) : "c"(count) : "cc"); \
  break
  switch (OP) {
    case Shift::SHL:
      BULKHEAD_HOST_SHIFT("shl");
    case Shift::SHR:
      BULKHEAD_HOST_SHIFT("shr");
    case Shift::SAR:
      BULKHEAD_HOST_SHIFT("sar");
    case Shift::ROL:
      BULKHEAD_HOST_SHIFT("rol");
    case Shift::ROR:
      BULKHEAD_HOST_SHIFT("ror");
  }
#undef BULKHEAD_HOST_SHIFT
  return ax;
}

template <typename T>
inline uint16_t hostImul(T& a, T b) {
  uint16_t ax;
  asm("imul %[b], %[a]\n\tlahf\n\tseto %%al" : [a] "+r"(a), "=&a"(ax) : [b] "r"(b) : "cc");
  return ax;
}

}  // namespace

// Friend of Cpu: the handlers and what they share.
struct Fast {
  // --- Operands ---
  template <typename T>
  [[gnu::always_inline]] static T reg(Cpu& c, uint8_t id) {
    return static_cast<T>(c.s.gpr[id]);
  }
  template <typename T>
  [[gnu::always_inline]] static void setReg(Cpu& c, uint8_t id, T value) {
    uint64_t& r = c.s.gpr[id];
    if constexpr (sizeof(T) >= 4) {
      r = value;  // a 32-bit result clears the upper half
    } else {
      r = (r & ~static_cast<uint64_t>(static_cast<T>(~0))) | value;
    }
  }
  template <typename T>
  [[gnu::always_inline]] static T imm(const Operand& o) {
    uint64_t value = static_cast<uint64_t>(o.value);
    if (o.size < 8) value &= (1ull << (o.size * 8)) - 1;
    return static_cast<T>(value);
  }
  [[gnu::always_inline]] static uint64_t offset(Cpu& c, const Insn& in, const Operand& o) {
    uint64_t address = static_cast<uint64_t>(o.value);
    if (o.base == REG_IP) {
      address += c.blockRip + in.end;  // RIP-relative: from the next instruction
    } else if (o.base != REG_NONE) {
      address += c.s.gpr[o.base];
    }
    if (o.index != REG_NONE) address += c.s.gpr[o.index] * o.scale;
    if (in.addressSize == 8) return address;
    return address & (in.addressSize == 4 ? 0xffffffffull : 0xffffull);
  }
  // Before the generic memory path: RIP past the instruction, as whoever watches an MMIO access
  // (--trace exits, a device) expects it.
  static void settle(Cpu& c, const Insn& in) { c.s.rip = (c.blockRip + in.end) & c.ripMask; }
  // The host address of a 64-bit-mode access that hits the TLB, or nullptr.
  [[gnu::always_inline]] static uint8_t* direct(Cpu& c, const Operand& o, uint64_t offset,
                                                unsigned size, bool write) {
    if (c.modeKey != 2) return nullptr;
    uint64_t linear = offset;
    if (o.segment == FS || o.segment == GS) linear += c.s.segment[o.segment].base;
    if ((linear & 0xfff) + size > 0x1000) return nullptr;
    const Cpu::TlbEntry& entry = (*c.privilegeTlb)[write ? 1 : 0][(linear >> 12) % Cpu::TLB_SIZE];
    if (entry.tag != linear >> 12 || entry.host == nullptr) return nullptr;
    if (write && entry.codeVersion != nullptr) ++*entry.codeVersion;
    return entry.host + (linear & 0xfff);
  }
  template <typename T>
  [[gnu::always_inline]] static T load(Cpu& c, const Insn& in, const Operand& o) {
    uint64_t at = offset(c, in, o);
    if (uint8_t* host = direct(c, o, at, sizeof(T), false)) {
      T value;
      memcpy(&value, host, sizeof(T));
      return value;
    }
    settle(c, in);
    return static_cast<T>(c.read(static_cast<SegmentIndex>(o.segment), at, sizeof(T)));
  }
  template <typename T>
  [[gnu::always_inline]] static void store(Cpu& c, const Insn& in, const Operand& o, T value) {
    uint64_t at = offset(c, in, o);
    if (uint8_t* host = direct(c, o, at, sizeof(T), true)) {
      memcpy(host, &value, sizeof(T));
      return;
    }
    settle(c, in);
    c.write(static_cast<SegmentIndex>(o.segment), at, sizeof(T), value);
  }
  // Arithmetic flags inside a chain are lazy: an instruction that sets all six leaves the
  // host's raw flags (hostAlu()'s) for the next reader; Cpu::settleFlags() puts them into
  // RFLAGS wherever the chain ends or the generic interpreter or a fault takes over.
  [[gnu::always_inline]] static void setAllFlags(Cpu& c, uint16_t ax) {
    c.lazyFlags = ax;
    c.flagsLazy = true;
  }
  [[gnu::always_inline]] static uint64_t flags(const Cpu& c) {
    return c.flagsLazy ? (c.s.rflags & ~FLAGS_ARITH) | arithFromLahf(c.lazyFlags) : c.s.rflags;
  }
  [[gnu::always_inline]] static void setFlags(Cpu& c, uint16_t ax, uint64_t which) {
    c.s.rflags = (flags(c) & ~which) | (arithFromLahf(ax) & which);
    c.flagsLazy = false;
  }

  // Where a source or destination is: a general register, memory or an immediate.
  enum Kind : uint8_t { R, M, I };
  template <typename T, Kind K>
  [[gnu::always_inline]] static T source(Cpu& c, const Insn& in, const Operand& o) {
    if constexpr (K == R) return reg<T>(c, o.reg);
    if constexpr (K == M) return load<T>(c, in, o);
    return imm<T>(o);
  }
  template <typename T, Kind K>
  [[gnu::always_inline]] static void destination(Cpu& c, const Insn& in, const Operand& o,
                                                 T value) {
    if constexpr (K == R) {
      setReg<T>(c, o.reg, value);
    } else {
      store<T>(c, in, o, value);
    }
  }

  // --- Handlers ---
  template <typename T, Kind D, Kind S>
  [[gnu::always_inline]] static void mov(Cpu& c, const Insn& in) {
    destination<T, D>(c, in, in.op[0], source<T, S>(c, in, in.op[1]));
  }
  template <typename T, Kind S, typename From, bool SIGNED>
  [[gnu::always_inline]] static void extend(Cpu& c, const Insn& in) {
    From value = source<From, S>(c, in, in.op[1]);
    T wide = SIGNED ? static_cast<T>(static_cast<Signed<From>>(value)) : static_cast<T>(value);
    setReg<T>(c, in.op[0].reg, wide);
  }
  template <typename T>
  [[gnu::always_inline]] static void lea(Cpu& c, const Insn& in) {
    setReg<T>(c, in.op[0].reg, static_cast<T>(offset(c, in, in.op[1])));
  }
  template <Alu OP, typename T, Kind D, Kind S>
  [[gnu::always_inline]] static void alu(Cpu& c, const Insn& in) {
    T a = source<T, D>(c, in, in.op[0]);
    T b = source<T, S>(c, in, in.op[1]);
    uint16_t ax = hostAlu<OP, T>(a, b, flags(c) & FLAG_CF);
    if constexpr (OP != Alu::CMP && OP != Alu::TEST) destination<T, D>(c, in, in.op[0], a);
    setAllFlags(c, ax);
  }
  template <Unary OP, typename T, Kind D>
  [[gnu::always_inline]] static void unary(Cpu& c, const Insn& in) {
    T a = source<T, D>(c, in, in.op[0]);
    uint16_t ax = hostUnary<OP, T>(a);
    destination<T, D>(c, in, in.op[0], a);
    if constexpr (OP == Unary::NEG) {
      setAllFlags(c, ax);
    } else {
      setFlags(c, ax, FLAGS_ARITH & ~FLAG_CF);  // INC and DEC keep CF
    }
  }
  template <typename T, Kind D>
  [[gnu::always_inline]] static void bitwiseNot(Cpu& c, const Insn& in) {
    destination<T, D>(c, in, in.op[0], static_cast<T>(~source<T, D>(c, in, in.op[0])));
  }
  // Count: an immediate, CL, or (no second operand) 1.
  template <Shift OP, typename T, Kind D, Kind COUNT>
  [[gnu::always_inline]] static void shift(Cpu& c, const Insn& in) {
    uint8_t count;
    if constexpr (COUNT == I) {
      count = in.operandCount > 1 ? static_cast<uint8_t>(in.op[1].value) : 1;
    } else {
      count = static_cast<uint8_t>(c.s.gpr[1]);
    }
    count &= sizeof(T) == 8 ? 63 : 31;
    T a = source<T, D>(c, in, in.op[0]);
    if (count == 0) {
      destination<T, D>(c, in, in.op[0], a);  // a 32-bit register is still zero-extended
      return;
    }
    uint16_t ax = hostShift<OP, T>(a, count);
    destination<T, D>(c, in, in.op[0], a);
    if constexpr (OP == Shift::ROL || OP == Shift::ROR) {
      setFlags(c, ax, FLAG_CF | FLAG_OF);
    } else {
      setAllFlags(c, ax);
    }
  }
  // IMUL r, r/m and IMUL r, r/m, imm.
  template <typename T, Kind S, bool IMMEDIATE>
  [[gnu::always_inline]] static void imul(Cpu& c, const Insn& in) {
    T a = IMMEDIATE ? imm<T>(in.op[2]) : reg<T>(c, in.op[0].reg);
    T b = source<T, S>(c, in, in.op[1]);
    uint16_t ax = hostImul<T>(a, b);
    setReg<T>(c, in.op[0].reg, a);
    setAllFlags(c, ax);
  }

  template <int CC>
  [[gnu::always_inline]] static bool condition(uint64_t f) {
    return conditionHolds(CC, f);
  }
  [[gnu::always_inline]] static void jumpTo(Cpu& c, const Insn& in, uint64_t target) {
    if (c.modeKey != 2) target &= in.operandSize == 2 ? 0xffff : 0xffffffff;
    c.s.rip = target;
  }
  template <int CC>
  [[gnu::always_inline]] static void jcc(Cpu& c, const Insn& in) {
    uint64_t next = c.blockRip + in.end;
    jumpTo(c, in, condition<CC>(flags(c)) ? next + in.op[0].value : next);
  }
  [[gnu::always_inline]] static void jmp(Cpu& c, const Insn& in) {
    jumpTo(c, in, c.blockRip + in.end + in.op[0].value);
  }
  template <int CC, typename T, Kind S>
  [[gnu::always_inline]] static void cmovcc(Cpu& c, const Insn& in) {
    T value = source<T, S>(c, in, in.op[1]);  // read (and may fault) either way
    if (condition<CC>(flags(c))) {
      setReg<T>(c, in.op[0].reg, value);
    } else if constexpr (sizeof(T) == 4) {
      setReg<T>(c, in.op[0].reg, reg<T>(c, in.op[0].reg));  // clears the upper half regardless
    }
  }
  template <int CC, Kind D>
  [[gnu::always_inline]] static void setcc(Cpu& c, const Insn& in) {
    destination<uint8_t, D>(c, in, in.op[0], condition<CC>(flags(c)) ? 1 : 0);
  }

  // The stack in 64-bit mode with 8-byte pushes (SS's base is ignored there).
  [[gnu::always_inline]] static void push64(Cpu& c, const Insn& in, uint64_t value) {
    uint64_t rsp = c.s.gpr[4] - 8;
    Operand slot;
    slot.segment = SS;
    if (uint8_t* host = direct(c, slot, rsp, 8, true)) {
      memcpy(host, &value, 8);
      c.s.gpr[4] = rsp;
      return;
    }
    settle(c, in);
    c.push(value, 8);
  }
  [[gnu::always_inline]] static uint64_t pop64(Cpu& c, const Insn& in) {
    Operand slot;
    slot.segment = SS;
    if (uint8_t* host = direct(c, slot, c.s.gpr[4], 8, false)) {
      uint64_t value;
      memcpy(&value, host, 8);
      c.s.gpr[4] += 8;
      return value;
    }
    settle(c, in);
    return c.pop(8);
  }
  template <Kind S>
  [[gnu::always_inline]] static void push(Cpu& c, const Insn& in) {
    // An immediate is sign-extended to the stack width.
    uint64_t value =
        S == I ? static_cast<uint64_t>(in.op[0].value) : source<uint64_t, S>(c, in, in.op[0]);
    push64(c, in, value);
  }
  [[gnu::always_inline]] static void pop(Cpu& c, const Insn& in) {
    uint64_t value = pop64(c, in);
    c.s.gpr[in.op[0].reg] = value;  // after RSP moved: POP RSP loads the popped value
  }
  [[gnu::always_inline]] static void call(Cpu& c, const Insn& in) {
    uint64_t next = c.blockRip + in.end;  // 64-bit mode only: no mask
    push64(c, in, next);
    c.s.rip = next + in.op[0].value;
  }
  [[gnu::always_inline]] static void ret(Cpu& c, const Insn& in) { c.s.rip = pop64(c, in); }
  [[gnu::always_inline]] static void nop(Cpu&, const Insn&) {}

  // --- Steps: a handler in a block's chain (see Cpu::run) ---
  // Runs the handler and goes on to the next instruction's step (a tail call), unless the
  // instruction is a branch, which ends its block. RIP is not kept up to date inside a chain: a
  // handler finds the next instruction's address as blockRip + in.end, a branch sets RIP, and the
  // end marker, a generic instruction's step and a fault put it where it belongs.
  template <FastHandler H, bool BRANCH>
  static void step(Cpu& c, const Insn& in) {
    try {
      H(c, in);
    } catch (const GuestFault&) {
      c.s.rip = (c.blockRip + in.end - in.length) & c.ripMask;
      c.faultedAt = &in;
      throw;
    }
    if constexpr (!BRANCH) {
      const Insn& next = (&in)[1];
      next.step(c, next);
    } else {
      chain(c);
    }
  }
  // After a branch: into the block a current link names (see Cpu::nextBlock), while the chain
  // has budget and no interrupt it could take or stop request waits; else back to run().
  [[gnu::always_inline]] static void chain(Cpu& c) {
    if (c.chainBudget == 0) return;
    Block* next = c.runningBlock->follow(c.s.rip, c.linkEpoch);
    if (next == nullptr || c.stopRequested.load(std::memory_order_relaxed) ||
        ((c.s.rflags & FLAG_IF) && c.interruptPoke.load(std::memory_order_relaxed))) {
      return;
    }
    --c.chainBudget;
    c.blockRetired += c.runningBlock->count();
    c.runningBlock = next;
    c.blockRip = c.s.rip;
    c.blockFirst = next->insns.data();
    c.blockFirst->step(c, *c.blockFirst);
  }
  // An instruction for the generic interpreter: it may end the block anywhere.
  static void genericStep(Cpu& c, const Insn& in) {
    uint64_t address = c.blockRip + in.end;
    uint64_t start = (address - in.length) & c.ripMask;
    c.s.rip = address & c.ripMask;
    c.retired = c.blockRetired + (&in - c.blockFirst);  // the TSC of --deterministic counts them
    c.settleFlags();
    try {
      if (!c.execute(in) && !c.failed.empty()) {
        c.s.rip = start;
        c.stoppedAt = &in;
        return;
      }
    } catch (const GuestFault&) {
      c.s.rip = start;
      c.faultedAt = &in;
      throw;
    }
    if (c.s.rip != address || c.endBlock || c.s.halted) {
      c.stoppedAt = &in;
      return;
    }
    const Insn& next = (&in)[1];
    next.step(c, next);
  }
  // The marker after a block's last instruction (its `end`: the block's length).
  static void endStep(Cpu& c, const Insn& in) { settle(c, in); }

  static Handlers select(const Insn& in, uint32_t modeKey);
  template <typename T>
  static Handlers selectSized(const Insn& in, uint32_t modeKey);
};

template <FastHandler H>
Handlers handlersOf() {
  return {H, &Fast::step<H, false>};
}
template <FastHandler H>
Handlers handlersOfLast() {
  return {H, &Fast::step<H, true>};
}

namespace {

using Kind = Fast::Kind;

// The kind of a plain operand the fast path handles: a general register (not AH-BH), memory
// that is not only an address (LEA's), or an immediate; -1 for anything else.
int kindOf(const Operand& o) {
  switch (o.kind) {
    case OperandKind::REG:
      return o.reg < 16 ? Fast::R : -1;
    case OperandKind::MEM:
      return o.agen ? -1 : Fast::M;
    case OperandKind::IMM:
      return Fast::I;
    default:
      return -1;
  }
}

template <Alu OP, typename T>
Handlers aluHandler(int d, int s) {
  if (d == Fast::R && s == Fast::R) return handlersOf<&Fast::alu<OP, T, Fast::R, Fast::R>>();
  if (d == Fast::R && s == Fast::M) return handlersOf<&Fast::alu<OP, T, Fast::R, Fast::M>>();
  if (d == Fast::R && s == Fast::I) return handlersOf<&Fast::alu<OP, T, Fast::R, Fast::I>>();
  if (d == Fast::M && s == Fast::R) return handlersOf<&Fast::alu<OP, T, Fast::M, Fast::R>>();
  if (d == Fast::M && s == Fast::I) return handlersOf<&Fast::alu<OP, T, Fast::M, Fast::I>>();
  return {};
}

template <Shift OP, typename T>
Handlers shiftHandler(int d, bool byCl) {
  if (d == Fast::R) {
    return byCl ? handlersOf<&Fast::shift<OP, T, Fast::R, Fast::R>>()
                : handlersOf<&Fast::shift<OP, T, Fast::R, Fast::I>>();
  }
  return byCl ? handlersOf<&Fast::shift<OP, T, Fast::M, Fast::R>>()
              : handlersOf<&Fast::shift<OP, T, Fast::M, Fast::I>>();
}

// Jcc, SETcc and CMOVcc for condition CC (the SDM's tttn), or nullptr.
template <int CC>
Handlers conditionalHandler(const Insn& in, int kind0, int kind1) {
  if (in.mnemonic >= ZYDIS_MNEMONIC_JB && in.mnemonic <= ZYDIS_MNEMONIC_JZ && in.relative) {
    return handlersOfLast<&Fast::jcc<CC>>();
  }
  if (in.mnemonic >= ZYDIS_MNEMONIC_SETB && in.mnemonic <= ZYDIS_MNEMONIC_SETZ) {
    if (in.op[0].size != 1) return {};
    if (kind0 == Fast::R) return handlersOf<&Fast::setcc<CC, Fast::R>>();
    if (kind0 == Fast::M) return handlersOf<&Fast::setcc<CC, Fast::M>>();
    return {};
  }
  // CMOVcc r, r/m
  if (kind0 != Fast::R || (kind1 != Fast::R && kind1 != Fast::M)) return {};
  bool memory = kind1 == Fast::M;
  switch (in.op[0].size) {
    case 2:
      return memory ? handlersOf<&Fast::cmovcc<CC, uint16_t, Fast::M>>()
                    : handlersOf<&Fast::cmovcc<CC, uint16_t, Fast::R>>();
    case 4:
      return memory ? handlersOf<&Fast::cmovcc<CC, uint32_t, Fast::M>>()
                    : handlersOf<&Fast::cmovcc<CC, uint32_t, Fast::R>>();
    case 8:
      return memory ? handlersOf<&Fast::cmovcc<CC, uint64_t, Fast::M>>()
                    : handlersOf<&Fast::cmovcc<CC, uint64_t, Fast::R>>();
    default:
      return {};
  }
}

template <int... CC>
Handlers conditionalFor(int cc, const Insn& in, int kind0, int kind1,
                        std::integer_sequence<int, CC...>) {
  Handlers handler;
  ((cc == CC ? (handler = conditionalHandler<CC>(in, kind0, kind1), true) : false) || ...);
  return handler;
}

}  // namespace

template <typename T>
Handlers Fast::selectSized(const Insn& in, uint32_t modeKey) {
  (void)modeKey;
  int d = in.operandCount > 0 ? kindOf(in.op[0]) : -1;
  int s = in.operandCount > 1 ? kindOf(in.op[1]) : -1;
  if (d < 0 || d == I) return {};
  switch (in.mnemonic) {
    case ZYDIS_MNEMONIC_MOV:
      if (in.operandCount != 2 || s < 0 || (d == M && s == M)) return {};
      if (d == R)
        return s == R   ? handlersOf<&mov<T, R, R>>()
               : s == M ? handlersOf<&mov<T, R, M>>()
                        : handlersOf<&mov<T, R, I>>();
      return s == R ? handlersOf<&mov<T, M, R>>() : handlersOf<&mov<T, M, I>>();
    case ZYDIS_MNEMONIC_ADD:
      return in.operandCount == 2 ? aluHandler<Alu::ADD, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_OR:
      return in.operandCount == 2 ? aluHandler<Alu::OR, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_ADC:
      return in.operandCount == 2 ? aluHandler<Alu::ADC, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_SBB:
      return in.operandCount == 2 ? aluHandler<Alu::SBB, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_AND:
      return in.operandCount == 2 ? aluHandler<Alu::AND, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_SUB:
      return in.operandCount == 2 ? aluHandler<Alu::SUB, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_XOR:
      return in.operandCount == 2 ? aluHandler<Alu::XOR, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_CMP:
      return in.operandCount == 2 ? aluHandler<Alu::CMP, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_TEST:
      return in.operandCount == 2 ? aluHandler<Alu::TEST, T>(d, s) : Handlers{};
    case ZYDIS_MNEMONIC_INC:
      return d == R ? handlersOf<&unary<Unary::INC, T, R>>()
                    : handlersOf<&unary<Unary::INC, T, M>>();
    case ZYDIS_MNEMONIC_DEC:
      return d == R ? handlersOf<&unary<Unary::DEC, T, R>>()
                    : handlersOf<&unary<Unary::DEC, T, M>>();
    case ZYDIS_MNEMONIC_NEG:
      return d == R ? handlersOf<&unary<Unary::NEG, T, R>>()
                    : handlersOf<&unary<Unary::NEG, T, M>>();
    case ZYDIS_MNEMONIC_NOT:
      return d == R ? handlersOf<&bitwiseNot<T, R>>() : handlersOf<&bitwiseNot<T, M>>();
    case ZYDIS_MNEMONIC_SHL:
    case ZYDIS_MNEMONIC_SHR:
    case ZYDIS_MNEMONIC_SAR:
    case ZYDIS_MNEMONIC_ROL:
    case ZYDIS_MNEMONIC_ROR: {
      bool byCl = false;
      if (in.operandCount > 1) {
        if (s == R && in.op[1].reg == 1 && in.op[1].size == 1) {
          byCl = true;
        } else if (s != I) {
          return {};
        }
      }
      switch (in.mnemonic) {
        case ZYDIS_MNEMONIC_SHL:
          return shiftHandler<Shift::SHL, T>(d, byCl);
        case ZYDIS_MNEMONIC_SHR:
          return shiftHandler<Shift::SHR, T>(d, byCl);
        case ZYDIS_MNEMONIC_SAR:
          return shiftHandler<Shift::SAR, T>(d, byCl);
        case ZYDIS_MNEMONIC_ROL:
          return shiftHandler<Shift::ROL, T>(d, byCl);
        default:
          return shiftHandler<Shift::ROR, T>(d, byCl);
      }
    }
    case ZYDIS_MNEMONIC_IMUL:
      if constexpr (sizeof(T) == 1) {
        return {};
      } else {
        if (d != R || (s != R && s != M)) return {};
        if (in.operandCount == 2)
          return s == R ? handlersOf<&imul<T, R, false>>() : handlersOf<&imul<T, M, false>>();
        if (in.operandCount == 3 && in.op[2].kind == OperandKind::IMM) {
          return s == R ? handlersOf<&imul<T, R, true>>() : handlersOf<&imul<T, M, true>>();
        }
        return {};
      }
    case ZYDIS_MNEMONIC_MOVZX:
    case ZYDIS_MNEMONIC_MOVSX:
    case ZYDIS_MNEMONIC_MOVSXD: {
      if (d != R || (s != R && s != M)) return {};
      bool sign = in.mnemonic != ZYDIS_MNEMONIC_MOVZX;
      bool memory = s == M;
      switch (in.op[1].size) {
        case 1:
          if (sign)
            return memory ? handlersOf<&extend<T, M, uint8_t, true>>()
                          : handlersOf<&extend<T, R, uint8_t, true>>();
          return memory ? handlersOf<&extend<T, M, uint8_t, false>>()
                        : handlersOf<&extend<T, R, uint8_t, false>>();
        case 2:
          if (sign)
            return memory ? handlersOf<&extend<T, M, uint16_t, true>>()
                          : handlersOf<&extend<T, R, uint16_t, true>>();
          return memory ? handlersOf<&extend<T, M, uint16_t, false>>()
                        : handlersOf<&extend<T, R, uint16_t, false>>();
        case 4:
          if (sign)
            return memory ? handlersOf<&extend<T, M, uint32_t, true>>()
                          : handlersOf<&extend<T, R, uint32_t, true>>();
          return memory ? handlersOf<&extend<T, M, uint32_t, false>>()
                        : handlersOf<&extend<T, R, uint32_t, false>>();
        default:
          return {};
      }
    }
    default:
      return {};
  }
}

Handlers Fast::select(const Insn& in, uint32_t modeKey) {
  if (in.unmodeled || (in.prefixes & (PREFIX_REP | PREFIX_REPNE)) || in.far) return {};
  int kind0 = in.operandCount > 0 ? kindOf(in.op[0]) : -1;
  int kind1 = in.operandCount > 1 ? kindOf(in.op[1]) : -1;
  switch (in.mnemonic) {
    case ZYDIS_MNEMONIC_NOP:
    case ZYDIS_MNEMONIC_PAUSE:
    case ZYDIS_MNEMONIC_ENDBR64:
      return handlersOf<&nop>();
    case ZYDIS_MNEMONIC_JMP:
      return in.relative ? handlersOfLast<&jmp>() : Handlers{};
    case ZYDIS_MNEMONIC_LEA:
      if (in.op[0].kind != OperandKind::REG || in.op[0].reg >= 16) return {};
      switch (in.op[0].size) {
        case 2:
          return handlersOf<&lea<uint16_t>>();
        case 4:
          return handlersOf<&lea<uint32_t>>();
        case 8:
          return handlersOf<&lea<uint64_t>>();
        default:
          return {};
      }
    default:
      break;
  }
  // The stack forms: 64-bit mode with 8-byte pushes only.
  if (modeKey == 2 && in.operandSize == 8) {
    switch (in.mnemonic) {
      case ZYDIS_MNEMONIC_CALL:
        return in.relative ? handlersOfLast<&call>() : Handlers{};
      case ZYDIS_MNEMONIC_RET:
        return in.operandCount == 0 ? handlersOfLast<&ret>() : Handlers{};
      case ZYDIS_MNEMONIC_PUSH:
        if (kind0 == R && in.op[0].size == 8) return handlersOf<&push<R>>();
        if (kind0 == M && in.op[0].size == 8) return handlersOf<&push<M>>();
        if (kind0 == I) return handlersOf<&push<I>>();
        return {};
      case ZYDIS_MNEMONIC_POP:
        return kind0 == R && in.op[0].size == 8 ? handlersOf<&pop>() : Handlers{};
      default:
        break;
    }
  }
  int cc = conditionOf(in.mnemonic);
  if (cc >= 0) {
    return conditionalFor(cc, in, kind0, kind1, std::make_integer_sequence<int, 16>{});
  }
  if (in.operandCount == 0) return {};
  switch (in.op[0].size) {
    case 1:
      return selectSized<uint8_t>(in, modeKey);
    case 2:
      return selectSized<uint16_t>(in, modeKey);
    case 4:
      return selectSized<uint32_t>(in, modeKey);
    case 8:
      return selectSized<uint64_t>(in, modeKey);
    default:
      return {};
  }
}

void chooseHandlers(Insn& insn, uint32_t modeKey, bool fastPath) {
  Handlers chosen = fastPath ? Fast::select(insn, modeKey) : Handlers{};
  insn.fast = chosen.plain;
  insn.step = chosen.step != nullptr ? chosen.step : &Fast::genericStep;
}

FastHandler endOfBlockStep() { return &Fast::endStep; }

}  // namespace bulkhead::emu
