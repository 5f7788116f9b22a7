// The software CPU's dispatch: one case per mnemonic (executor.h says where the rest lives).
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/executor.h"

namespace bulkhead::emu {

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
