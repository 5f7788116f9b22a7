// x87 and MMX instructions: the interpreter side (operands, memory forms, control and
// environment instructions); x87.h runs the arithmetic on the host's FPU.
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/executor.h"

namespace bulkhead::emu {

void Executor::maskedStore(uint64_t data, uint64_t select, uint64_t high, uint64_t selectHigh) {
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

}  // namespace bulkhead::emu
