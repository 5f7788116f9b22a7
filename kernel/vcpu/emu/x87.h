// The software CPU's x87 FPU: guest x87 instructions run on the host's own x87 unit.
//
// Contract: runOnHost() executes one x87 instruction (opcode byte D8-DF and its ModRM byte) on
// the guest's X87State exactly as the host's FPU executes it: results, rounding and precision
// control, condition codes, tags, stack faults and exception flags, masked or not. It loads the
// state into the host FPU with FRSTOR, runs the instruction from a table of prebuilt stubs (one
// per opcode and ModRM byte; a memory form addresses the caller's buffer instead of guest
// memory) and saves the state back with FNSAVE, which leaves the host FPU initialised. The
// instruction cannot trap on the host: exceptions the guest has pending and unmasked are kept
// out of the status word the host loads (the caller has raised #MF for them already, or
// ignores them as CR0.NE says) and put back after, and an exception the instruction raises
// stays pending in the host FPU only until FNSAVE, which does not wait for it and then
// reinitialises. The caller also does what the host must not see:
// guest memory and its faults, CR0.EM/TS, the instruction and data pointers, and the control
// instructions (FNINIT, FLDENV, FNSAVE, ...), which it implements on X87State directly.
#pragma once

#include <cstdint>

namespace bulkhead::emu {

struct X87State {
  struct Register {
    uint64_t significand = 0;
    uint16_t signExponent = 0;
  };
  Register r[8];  // physical R0-R7; ST(i) is st(i)
  uint16_t control = 0x37f, status = 0;
  uint16_t tag = 0xffff;  // two bits per physical register: 00 valid, 01 zero, 10 special, 11 empty
  // The last non-control instruction: its opcode (11 bits), address and memory operand.
  uint16_t opcode = 0, cs = 0, ds = 0;
  uint64_t ip = 0, dp = 0;

  unsigned top() const { return (status >> 11) & 7; }
  Register& st(unsigned i) { return r[(top() + i) & 7]; }  // ST(i)
  const Register& st(unsigned i) const { return r[(top() + i) & 7]; }
  void init() {  // FNINIT
    control = 0x37f;
    status = 0;
    tag = 0xffff;
    opcode = cs = ds = 0;
    ip = dp = 0;
  }
  // Unmasked exceptions flagged in the status word: the next waiting instruction raises #MF.
  bool exceptionPending() const { return status & ~control & 0x3f; }
  // The status word's error summary and busy bits say whether one is.
  void summarise();
};

// Status word bits.
constexpr uint16_t X87_SF = 1 << 6, X87_ES = 1 << 7, X87_BUSY = 1 << 15;

inline void X87State::summarise() {
  status &= ~(X87_ES | X87_BUSY);
  if (exceptionPending()) status |= X87_ES | X87_BUSY;
}

struct X87HostResult {
  // The guest's flags with what FCOMI and FUCOMI set (ZF, PF, CF; OF, SF and AF cleared).
  uint64_t rflags;
  // The unmasked exceptions the instruction raised (status word bits 0-5): with IE, DE, ZE, OE
  // or UE among them, a store to memory does not happen (SDM Vol. 1, 8.5).
  uint16_t raised;
};

// Runs the x87 instruction `opcode` (D8-DF) `modrm` on `x87`. A memory form (ModRM.mod != 3)
// reads and writes `memory` (16 bytes), whatever its ModRM addressed. `rflags`: the guest's,
// read by FCMOVcc. Only for the instructions x87HostRuns() accepts.
X87HostResult runOnHost(X87State& x87, uint8_t opcode, uint8_t modrm, uint8_t* memory,
                        uint64_t rflags);

// The MMX instructions (0F `opcode` `modrm`, no prefix) that runMmxOnHost() runs: arithmetic,
// logic, compares, packs, unpacks, shifts by register or memory, and the moves between MMX
// registers and memory. The forms with a general register or an immediate are the caller's.
bool mmxHostRuns(uint8_t opcode, uint8_t modrm);
// Runs one on `x87` (the MMX registers are the significands of R0-R7): as an x87 instruction,
// it leaves TOP 0, every register valid and a written register's exponent all ones.
void runMmxOnHost(X87State& x87, uint8_t opcode, uint8_t modrm, uint8_t* memory);

// Whether runOnHost() may run `opcode` `modrm`: the arithmetic, load, store, compare and register
// instructions, not the control ones (those touching the environment, or not waiting).
bool x87HostRuns(uint8_t opcode, uint8_t modrm);

// The full tag word FNSTENV and FNSAVE store: each register's tag from its contents, 11 for
// the empty ones (as `tag` says).
uint16_t x87TagWord(const X87State& x87);
// FXSAVE's abridged tag (one bit per register, set when not empty) and back (FXRSTOR).
uint8_t x87AbridgedTag(uint16_t tag);
uint16_t x87TagFromAbridged(const X87State& x87, uint8_t abridged);

}  // namespace bulkhead::emu
