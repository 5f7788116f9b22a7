// The software CPU's system side: segment loads, far control transfers, interrupt and exception
// delivery through the IDT, control registers, MSRs, CPUID and the fast system calls. Every
// check follows the SDM (Vol. 3, chapters 3, 5 and 6; Vol. 2 for the instructions).
#include <x86intrin.h>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/cpu.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

namespace {

constexpr uint32_t MSR_TSC = 0x10, MSR_APIC_BASE = 0x1b, MSR_FEATURE_CONTROL = 0x3a,
                   MSR_TSC_ADJUST = 0x3b, MSR_SYSENTER_CS = 0x174, MSR_SYSENTER_ESP = 0x175,
                   MSR_SYSENTER_EIP = 0x176, MSR_MISC_ENABLE = 0x1a0, MSR_PAT = 0x277,
                   MSR_EFER = 0xc0000080, MSR_STAR = 0xc0000081, MSR_LSTAR = 0xc0000082,
                   MSR_CSTAR = 0xc0000083, MSR_SFMASK = 0xc0000084, MSR_FS_BASE = 0xc0000100,
                   MSR_GS_BASE = 0xc0000101, MSR_KERNEL_GS_BASE = 0xc0000102,
                   MSR_TSC_AUX = 0xc0000103;

}  // namespace

// --- Segments -----------------------------------------------------------------------------

std::optional<uint64_t> Cpu::descriptorSlot(uint16_t selector, unsigned bytes) const {
  bool local = selector & 4;
  if (local && !s.ldtr.present) return std::nullopt;
  uint32_t limit = local ? s.ldtr.limit : s.gdtLimit;
  uint64_t offset = selector & ~7u;
  if (offset + bytes - 1 > limit) return std::nullopt;
  return (local ? s.ldtr.base : s.gdtBase) + offset;
}

SegmentState Cpu::descriptorAt(uint16_t selector, uint64_t* descriptorAddress, uint32_t* high) {
  std::optional<uint64_t> slot = descriptorSlot(selector, 8);
  if (!slot) throw GuestFault{13, true, static_cast<uint32_t>(selector & ~3u)};
  uint64_t raw = readSystem(*slot, 8);
  if (descriptorAddress != nullptr) *descriptorAddress = *slot;
  if (high != nullptr) {
    *high = 0;
    if (descriptorSlot(selector, 16)) *high = static_cast<uint32_t>(readSystem(*slot + 8, 4));
  }
  return segmentFromDescriptor(selector, raw);
}

void Cpu::loadRealSegment(SegmentIndex index, uint16_t selector) {
  SegmentState& segment = s.segment[index];
  segment.selector = selector;
  segment.base = static_cast<uint64_t>(selector) << 4;
  if (index == CS) modeChanged();
}

void Cpu::loadSegment(SegmentIndex index, uint16_t selector) {
  if (!(s.cr0 & CR0_PE) || (s.rflags & FLAG_VM)) {
    loadRealSegment(index, selector);
    return;
  }
  uint32_t error = selector & ~3u;
  if ((selector & ~3u) == 0) {
    bool allowed = index != SS || (modeKey == 2 && cpl() != 3 && (selector & 3) == cpl());
    if (!allowed) throw GuestFault{13, true, 0};
    SegmentState& segment = s.segment[index];
    segment = SegmentState{};
    segment.selector = selector;
    segment.present = false;
    if (index == SS) segment.dpl = cpl();
    return;
  }
  uint64_t address;
  SegmentState segment = descriptorAt(selector, &address, nullptr);
  unsigned rpl = selector & 3;
  bool code = segment.type & 8;
  if (segment.system) throw GuestFault{13, true, error};
  if (index == SS) {
    if (rpl != cpl() || segment.dpl != cpl() || code || !(segment.type & 2)) {
      throw GuestFault{13, true, error};
    }
    if (!segment.present) throw GuestFault{12, true, error};
  } else {
    if (code && !(segment.type & 2)) throw GuestFault{13, true, error};  // execute-only
    bool conforming = code && (segment.type & 4);
    if (!conforming && segment.dpl < std::max<unsigned>(cpl(), rpl)) {
      throw GuestFault{13, true, error};
    }
    if (!segment.present) throw GuestFault{11, true, error};
  }
  if (!(segment.type & 1)) {
    segment.type |= 1;
    writeSystem(address + 5, 1,
                (segment.present ? 0x80 : 0) | (segment.dpl << 5) | 0x10 | segment.type);
  }
  s.segment[index] = segment;
  if (index == SS) shadow = true;
}

// Loads CS for a far JMP, CALL or RET to `selector`, checking it names a code segment the
// current privilege may transfer to; returns the new CPL.
static unsigned checkCodeTarget(const SegmentState& target, uint16_t selector, unsigned cpl,
                                bool returning) {
  uint32_t error = selector & ~3u;
  unsigned rpl = selector & 3;
  if (target.system || !(target.type & 8)) throw GuestFault{13, true, error};
  bool conforming = target.type & 4;
  if (returning) {
    if (rpl < cpl) throw GuestFault{13, true, error};
    if (conforming ? target.dpl > rpl : target.dpl != rpl) throw GuestFault{13, true, error};
  } else if (conforming ? target.dpl > cpl : (rpl > cpl || target.dpl != cpl)) {
    throw GuestFault{13, true, error};
  }
  if (!target.present) throw GuestFault{11, true, error};
  return returning ? rpl : cpl;
}

void Cpu::farJump(uint16_t selector, uint64_t offset, unsigned operandSize) {
  if (!(s.cr0 & CR0_PE) || (s.rflags & FLAG_VM)) {
    loadRealSegment(CS, selector);
    s.rip = operandSize == 2 ? offset & 0xffff : offset & 0xffffffff;
    return;
  }
  if ((selector & ~3u) == 0) throw GuestFault{13, true, 0};
  SegmentState target = descriptorAt(selector, nullptr, nullptr);
  unsigned level = checkCodeTarget(target, selector, cpl(), false);
  target.selector = (selector & ~3u) | level;
  target.dpl = level;
  s.segment[CS] = target;
  bool code64 = (s.efer & EFER_LMA) && target.longMode;
  s.rip = code64 ? offset : operandSize == 2 ? offset & 0xffff : offset & 0xffffffff;
  modeChanged();
}

void Cpu::farCall(uint16_t selector, uint64_t offset, unsigned operandSize) {
  uint16_t oldCs = s.segment[CS].selector;
  uint64_t oldRip = s.rip;
  uint64_t oldRsp = s.gpr[4];
  try {
    push(oldCs, operandSize);
    push(oldRip, operandSize);
    farJump(selector, offset, operandSize);
  } catch (const GuestFault&) {
    s.gpr[4] = oldRsp;
    throw;
  }
}

void Cpu::farReturn(unsigned operandSize, uint16_t release) {
  uint64_t rip = pop(operandSize);
  uint16_t selector = static_cast<uint16_t>(pop(operandSize));
  if (!(s.cr0 & CR0_PE) || (s.rflags & FLAG_VM)) {
    s.gpr[4] += release;
    loadRealSegment(CS, selector);
    s.rip = rip;
    return;
  }
  if ((selector & ~3u) == 0) throw GuestFault{13, true, 0};
  SegmentState target = descriptorAt(selector, nullptr, nullptr);
  unsigned level = checkCodeTarget(target, selector, cpl(), true);
  s.gpr[4] += release;
  uint64_t rsp = 0;
  uint16_t ss = 0;
  bool outer = level > cpl();
  if (outer) {
    rsp = pop(operandSize);
    ss = static_cast<uint16_t>(pop(operandSize));
  }
  s.segment[CS] = target;
  s.segment[CS].dpl = level;
  modeChanged();
  s.rip = rip;
  if (outer) {
    loadSegment(SS, ss);
    s.gpr[4] = rsp + release;
  }
}

void Cpu::interruptReturn(unsigned operandSize) {
  nmiBlocked = false;  // (an IRET that faults unblocks NMIs too, as on hardware)
  if (!(s.cr0 & CR0_PE)) {
    uint64_t rip = pop(operandSize);
    uint16_t selector = static_cast<uint16_t>(pop(operandSize));
    uint64_t flags = pop(operandSize);
    loadRealSegment(CS, selector);
    s.rip = rip;
    // The image's reserved bits (3, 5, 15, 22-31) stay clear and bit 1 set; VM, VIF and VIP are
    // kept (SDM Vol. 2, IRET, real-address mode: Pop() AND 257FD5H).
    uint64_t changeable = FLAGS_ARITH | FLAG_TF | FLAG_IF | FLAG_DF | FLAG_IOPL | FLAG_NT;
    if (operandSize != 2) changeable |= FLAG_RF | FLAG_AC | FLAG_ID;
    s.rflags = (s.rflags & ~changeable) | (flags & changeable) | 2;
    endBlock = true;
    return;
  }
  if (s.rflags & FLAG_NT) throw GuestFault{13, true, 0};  // task return: not supported
  uint64_t rip = pop(operandSize);
  uint16_t selector = static_cast<uint16_t>(pop(operandSize));
  uint64_t flags = pop(operandSize);
  if (operandSize == 4) flags = (s.rflags & ~0xffffffffull) | (flags & 0xffffffff);
  if (operandSize == 2) flags = (s.rflags & ~0xffffull) | (flags & 0xffff);
  if ((flags & FLAG_VM) && cpl() == 0 && modeKey != 2) {
    throw GuestFault{13, true, 0};  // virtual-8086 mode: not supported
  }
  if ((selector & ~3u) == 0) throw GuestFault{13, true, 0};
  SegmentState target = descriptorAt(selector, nullptr, nullptr);
  unsigned level = checkCodeTarget(target, selector, cpl(), true);
  bool popStack = level > cpl() || modeKey == 2;
  uint64_t rsp = 0;
  uint16_t ss = 0;
  if (popStack) {
    rsp = pop(operandSize);
    ss = static_cast<uint16_t>(pop(operandSize));
  }
  // What IRET may change depends on the privilege it runs at (SDM Vol. 2, IRET).
  uint64_t changeable = FLAGS_ARITH | FLAG_TF | FLAG_DF | FLAG_NT | FLAG_RF | FLAG_AC | FLAG_ID;
  unsigned iopl = (s.rflags & FLAG_IOPL) >> 12;
  if (cpl() <= iopl) changeable |= FLAG_IF;
  if (cpl() == 0) changeable |= FLAG_IOPL | FLAG_VIF | FLAG_VIP;
  unsigned oldCpl = cpl();
  s.rflags = (s.rflags & ~changeable) | (flags & changeable) | 2;
  s.segment[CS] = target;
  s.segment[CS].dpl = level;
  modeChanged();
  s.rip = rip;
  if (popStack) {
    if ((ss & ~3u) == 0 && (s.efer & EFER_LMA) && level != 3) {
      s.segment[SS] = SegmentState{};
      s.segment[SS].selector = ss;
      s.segment[SS].dpl = level;
    } else {
      loadSegment(SS, ss);
    }
    s.gpr[4] = rsp;
  }
  if (level > oldCpl) {
    // Data segments the outer level may not use become null (SDM Vol. 2, IRET).
    for (SegmentIndex index : {ES, DS, FS, GS}) {
      SegmentState& segment = s.segment[index];
      bool conformingCode = (segment.type & 0xc) == 0xc;
      if (segment.present && !conformingCode && segment.dpl < level) {
        segment.present = false;
        segment.selector = 0;
      }
    }
  }
}

// --- Interrupts and exceptions ------------------------------------------------------------

void Cpu::deliver(uint8_t vector, bool hasError, uint32_t error, bool software,
                  uint64_t returnRip) {
  recheckCode();
  s.halted = false;
  if (!(s.cr0 & CR0_PE)) {
    // Real mode: the IVT (SDM Vol. 3, 20.1.4).
    if (vector * 4u + 3 > s.idtLimit) throw GuestFault{13, true, 0};
    uint32_t entry = static_cast<uint32_t>(readSystem(s.idtBase + vector * 4u, 4));
    push(s.rflags & 0xffff, 2);
    push(s.segment[CS].selector, 2);
    push(returnRip & 0xffff, 2);
    s.rflags &= ~(FLAG_IF | FLAG_TF | FLAG_AC | FLAG_RF);
    loadRealSegment(CS, entry >> 16);
    s.rip = entry & 0xffff;
    endBlock = true;
    return;
  }
  bool long64 = s.efer & EFER_LMA;
  unsigned gateBytes = long64 ? 16 : 8;
  uint32_t gateError = vector * 8u + 2 + (software ? 0 : 1);
  if (vector * gateBytes + gateBytes - 1 > s.idtLimit) throw GuestFault{13, true, gateError};
  uint64_t gate = readSystem(s.idtBase + vector * gateBytes, 8);
  uint64_t gateHigh = long64 ? readSystem(s.idtBase + vector * gateBytes + 8, 8) : 0;
  unsigned type = (gate >> 40) & 0xf;
  unsigned gateDpl = (gate >> 45) & 3;
  bool present = (gate >> 47) & 1;
  bool interruptGate = type == 0xe || type == 0x6;
  bool valid = long64 ? (type == 0xe || type == 0xf)
                      : (type == 0xe || type == 0xf || type == 0x6 || type == 0x7);
  if (!valid) throw GuestFault{13, true, gateError};
  if (software && gateDpl < cpl()) throw GuestFault{13, true, gateError};
  if (!present) throw GuestFault{11, true, gateError};
  uint16_t selector = static_cast<uint16_t>(gate >> 16);
  uint64_t offset = (gate & 0xffff) | ((gate >> 32) & 0xffff0000);
  if (long64) offset |= (gateHigh & 0xffffffff) << 32;
  if (type == 0x6 || type == 0x7) offset &= 0xffff;
  if ((selector & ~3u) == 0) throw GuestFault{13, true, software ? 0u : 1u};
  SegmentState target = descriptorAt(selector, nullptr, nullptr);
  uint32_t targetError = (selector & ~3u) + (software ? 0 : 1);
  if (target.system || !(target.type & 8) || target.dpl > cpl()) {
    throw GuestFault{13, true, targetError};
  }
  if (!target.present) throw GuestFault{11, true, targetError};
  if (long64 && !target.longMode) throw GuestFault{13, true, targetError};
  bool conforming = target.type & 4;
  unsigned newCpl = conforming ? cpl() : target.dpl;
  unsigned ist = long64 ? (gate >> 32) & 7 : 0;
  unsigned pushSize = long64 ? 8 : (type >= 0xe ? 4 : 2);

  uint16_t oldSs = s.segment[SS].selector;
  uint64_t oldRsp = s.gpr[4];
  uint64_t oldFlags = s.rflags;
  uint16_t oldCs = s.segment[CS].selector;
  SegmentState savedSs = s.segment[SS];
  SegmentState savedCs = s.segment[CS];
  uint32_t savedModeKey = modeKey;
  bool stackSwitch = newCpl < cpl() || ist != 0;
  try {
    if (long64) {
      if (stackSwitch) {
        uint64_t rsp = ist != 0 ? readSystem(s.tr.base + 0x24 + (ist - 1) * 8, 8)
                                : readSystem(s.tr.base + 4 + newCpl * 8, 8);
        if (newCpl < cpl()) {
          s.segment[SS] = SegmentState{};
          s.segment[SS].selector = static_cast<uint16_t>(newCpl);
          s.segment[SS].dpl = newCpl;
        }
        s.gpr[4] = rsp;
      }
      s.gpr[4] &= ~0xfull;
      s.segment[CS] = target;
      s.segment[CS].selector = (selector & ~3u) | newCpl;
      s.segment[CS].dpl = newCpl;
      modeKey = 2;
      push(oldSs, 8);
      push(oldRsp, 8);
    } else {
      if (newCpl < cpl()) {
        // The inner stack from the 32-bit TSS (SDM Vol. 3, 7.7).
        uint64_t rsp = readSystem(s.tr.base + 4 + newCpl * 8, 4);
        uint16_t ss = static_cast<uint16_t>(readSystem(s.tr.base + 8 + newCpl * 8, 2));
        if ((ss & ~3u) == 0) throw GuestFault{10, true, static_cast<uint32_t>(s.tr.selector & ~3u)};
        SegmentState stack = descriptorAt(ss, nullptr, nullptr);
        if ((ss & 3) != newCpl || stack.dpl != newCpl || (stack.type & 0xa) != 2) {
          throw GuestFault{10, true, static_cast<uint32_t>(ss & ~3u)};
        }
        s.segment[SS] = stack;
        s.gpr[4] = rsp;
        s.segment[CS] = target;
        s.segment[CS].dpl = newCpl;
        modeKey = target.big ? 1 : 0;
        push(oldSs, pushSize);
        push(oldRsp, pushSize);
      } else {
        s.segment[CS] = target;
        s.segment[CS].dpl = newCpl;
        modeKey = target.big ? 1 : 0;
      }
      s.segment[CS].selector = (selector & ~3u) | newCpl;
    }
    push(oldFlags, pushSize);
    push(oldCs, pushSize);
    push(returnRip, pushSize);
    if (hasError) push(error, pushSize);
  } catch (const GuestFault&) {
    s.segment[SS] = savedSs;
    s.segment[CS] = savedCs;
    s.gpr[4] = oldRsp;
    modeKey = savedModeKey;
    throw;
  }
  if (newCpl < cpl() && !long64) {
    for (SegmentIndex index : {ES, DS, FS, GS}) s.segment[index].present = false;
  }
  s.rflags &= ~(FLAG_TF | FLAG_NT | FLAG_RF | FLAG_VM);
  if (interruptGate) s.rflags &= ~FLAG_IF;
  s.rip = offset;
  modeChanged();
}

void Cpu::deliverFault(const GuestFault& fault) {
  // Exception classes for double faults (SDM Vol. 3, table 6-5): benign ones are delivered
  // as they are; a contributory or page fault while delivering one becomes #DF.
  auto contributory = [](uint8_t v) { return v == 0 || (v >= 10 && v <= 14); };
  try {
    deliver(fault.vector, fault.hasError, fault.error, false, s.rip);
  } catch (const GuestFault& nested) {
    if (fault.vector == 8) throw;  // triple fault
    if (contributory(fault.vector) && contributory(nested.vector)) {
      deliver(8, true, 0, false, s.rip);
    } else {
      deliverFault(nested);
    }
  }
}

// --- Fast system calls --------------------------------------------------------------------

void Cpu::syscall() {
  if (!(s.efer & EFER_SCE)) throw GuestFault{6, false, 0};
  uint16_t selector = static_cast<uint16_t>(s.star >> 32) & ~3u;
  if (s.efer & EFER_LMA) {
    s.gpr[1] = s.rip;
    s.gpr[11] = s.rflags & ~FLAG_RF;
    s.segment[CS] = flatSegment(selector, true, true, 0);
    s.segment[SS] = flatSegment(selector + 8, false, false, 0);
    s.rflags &= ~(s.sfmask | FLAG_RF);
    s.rip = modeKey == 2 ? s.lstar : s.cstar;
  } else {
    s.gpr[1] = s.rip & 0xffffffff;
    s.segment[CS] = flatSegment(selector, true, false, 0);
    s.segment[SS] = flatSegment(selector + 8, false, false, 0);
    s.rflags &= ~(FLAG_VM | FLAG_IF | FLAG_RF);
    s.rip = s.star & 0xffffffff;
  }
  s.rflags |= 2;
  modeChanged();
}

void Cpu::sysret(unsigned operandSize) {
  if (!(s.efer & EFER_SCE)) throw GuestFault{6, false, 0};
  if (cpl() != 0 || !(s.cr0 & CR0_PE)) throw GuestFault{13, true, 0};
  uint16_t base = static_cast<uint16_t>(s.star >> 48);
  if (s.efer & EFER_LMA) {
    bool to64 = operandSize == 8;
    if (to64 && !((static_cast<int64_t>(s.gpr[1] << 16) >> 16) == static_cast<int64_t>(s.gpr[1]))) {
      throw GuestFault{13, true, 0};
    }
    s.segment[CS] =
        flatSegment(static_cast<uint16_t>((to64 ? base + 16 : base) | 3), true, to64, 3);
    s.rip = to64 ? s.gpr[1] : s.gpr[1] & 0xffffffff;
    s.rflags = (s.gpr[11] & ~(FLAG_RF | FLAG_VM)) | 2;
  } else {
    s.segment[CS] = flatSegment(static_cast<uint16_t>(base | 3), true, false, 3);
    s.rip = s.gpr[1] & 0xffffffff;
    s.rflags |= FLAG_IF;
  }
  s.segment[SS] = flatSegment(static_cast<uint16_t>((base + 8) | 3), false, false, 3);
  modeChanged();
}

void Cpu::sysenter() {
  if (!(s.cr0 & CR0_PE) || (s.sysenterCs & ~3ull) == 0) throw GuestFault{13, true, 0};
  bool long64 = s.efer & EFER_LMA;
  uint16_t selector = static_cast<uint16_t>(s.sysenterCs) & ~3u;
  s.rflags &= ~(FLAG_VM | FLAG_IF | FLAG_RF);
  s.segment[CS] = flatSegment(selector, true, long64, 0);
  s.segment[SS] = flatSegment(selector + 8, false, false, 0);
  s.rip = long64 ? s.sysenterEip : s.sysenterEip & 0xffffffff;
  s.gpr[4] = long64 ? s.sysenterEsp : s.sysenterEsp & 0xffffffff;
  modeChanged();
}

void Cpu::sysexit(unsigned operandSize) {
  if (!(s.cr0 & CR0_PE) || cpl() != 0 || (s.sysenterCs & ~3ull) == 0) {
    throw GuestFault{13, true, 0};
  }
  bool to64 = operandSize == 8;
  uint16_t selector = static_cast<uint16_t>(s.sysenterCs + (to64 ? 32 : 16));
  s.segment[CS] = flatSegment(selector | 3, true, to64, 3);
  s.segment[SS] = flatSegment(static_cast<uint16_t>((selector + 8) | 3), false, false, 3);
  s.rip = to64 ? s.gpr[2] : s.gpr[2] & 0xffffffff;
  s.gpr[4] = to64 ? s.gpr[1] : s.gpr[1] & 0xffffffff;
  modeChanged();
}

// --- Control registers, MSRs, CPUID -------------------------------------------------------

void Cpu::writeControl(unsigned index, uint64_t value) {
  switch (index) {
    case 0: {
      if ((value >> 32) != 0) throw GuestFault{13, true, 0};
      if ((value & CR0_PG) && !(value & CR0_PE)) throw GuestFault{13, true, 0};
      if ((value & CR0_NW) && !(value & CR0_CD)) throw GuestFault{13, true, 0};
      bool paging = value & CR0_PG, wasPaging = s.cr0 & CR0_PG;
      if (paging && !wasPaging && (s.efer & EFER_LME)) {
        if (!(s.cr4 & CR4_PAE)) throw GuestFault{13, true, 0};
        s.efer |= EFER_LMA;
      }
      if (!paging && wasPaging && (s.efer & EFER_LMA)) {
        if (modeKey == 2) throw GuestFault{13, true, 0};
        s.efer &= ~EFER_LMA;
      }
      s.cr0 = value | CR0_ET;
      break;
    }
    case 2:
      s.cr2 = value;
      return;
    case 3:
      s.cr3 = value;
      break;
    case 4: {
      uint64_t supported = 0x7ff | (1 << 16) | (1 << 18);  // VME..OSXMMEXCPT, FSGSBASE, OSXSAVE
      if (value & ~supported) throw GuestFault{13, true, 0};
      if ((s.efer & EFER_LMA) && !(value & CR4_PAE)) throw GuestFault{13, true, 0};
      s.cr4 = value;
      break;
    }
    case 8:
      if (value > 15) throw GuestFault{13, true, 0};
      s.cr8 = value;
      return;
    default:
      throw GuestFault{6, false, 0};
  }
  flushTlb();
  modeChanged();
}

uint64_t Cpu::readMsr(uint32_t index) {
  switch (index) {
    case MSR_TSC:
      return bus.timestamp() + s.tscAdjust;
    case MSR_TSC_ADJUST:
      return s.tscAdjust;
    case MSR_APIC_BASE:
      return s.apicBase;
    case MSR_FEATURE_CONTROL:
      return 1;  // locked, VMX off
    case MSR_SYSENTER_CS:
      return s.sysenterCs;
    case MSR_SYSENTER_ESP:
      return s.sysenterEsp;
    case MSR_SYSENTER_EIP:
      return s.sysenterEip;
    case MSR_MISC_ENABLE:
      return s.miscEnable;
    case MSR_PAT:
      return s.pat;
    case MSR_EFER:
      return s.efer;
    case MSR_STAR:
      return s.star;
    case MSR_LSTAR:
      return s.lstar;
    case MSR_CSTAR:
      return s.cstar;
    case MSR_SFMASK:
      return s.sfmask;
    case MSR_FS_BASE:
      return s.segment[FS].base;
    case MSR_GS_BASE:
      return s.segment[GS].base;
    case MSR_KERNEL_GS_BASE:
      return s.kernelGsBase;
    case MSR_TSC_AUX:
      return 0;
    default:
      throw GuestFault{13, true, 0};  // as hardware does for an MSR it lacks
  }
}

void Cpu::writeMsr(uint32_t index, uint64_t value) {
  switch (index) {
    case MSR_TSC:
      s.tscAdjust = value - bus.timestamp();
      return;
    case MSR_TSC_ADJUST:
      s.tscAdjust = value;
      return;
    case MSR_APIC_BASE:
      s.apicBase = value;
      return;
    case MSR_SYSENTER_CS:
      s.sysenterCs = value;
      return;
    case MSR_SYSENTER_ESP:
      s.sysenterEsp = value;
      return;
    case MSR_SYSENTER_EIP:
      s.sysenterEip = value;
      return;
    case MSR_MISC_ENABLE:
      s.miscEnable = value;
      return;
    case MSR_PAT:
      s.pat = value;
      return;
    case MSR_EFER: {
      uint64_t allowed = EFER_SCE | EFER_LME | EFER_NXE;
      if (value & ~(allowed | EFER_LMA)) throw GuestFault{13, true, 0};
      if ((s.cr0 & CR0_PG) && ((value ^ s.efer) & EFER_LME)) throw GuestFault{13, true, 0};
      s.efer = (value & allowed) | (s.efer & EFER_LMA);
      flushTlb();
      return;
    }
    case MSR_STAR:
      s.star = value;
      return;
    case MSR_LSTAR:
      s.lstar = value;
      return;
    case MSR_CSTAR:
      s.cstar = value;
      return;
    case MSR_SFMASK:
      s.sfmask = value & 0xffffffff;
      return;
    case MSR_FS_BASE:
      s.segment[FS].base = value;
      return;
    case MSR_GS_BASE:
      s.segment[GS].base = value;
      return;
    case MSR_KERNEL_GS_BASE:
      s.kernelGsBase = value;
      return;
    case MSR_TSC_AUX:
      return;
    default:
      throw GuestFault{13, true, 0};
  }
}

void Cpu::cpuidInstruction() {
  uint32_t function = static_cast<uint32_t>(s.gpr[0]);
  uint32_t index = static_cast<uint32_t>(s.gpr[1]);
  const CpuidEntry* found = nullptr;
  for (const CpuidEntry& entry : cpuidTable) {
    bool indexed = entry.flags & 1;  // KVM_CPUID_FLAG_SIGNIFCANT_INDEX
    if (entry.function == function && (!indexed || entry.index == index)) {
      found = &entry;
      break;
    }
  }
  uint32_t a = 0, b = 0, c = 0, d = 0;
  if (found != nullptr) {
    a = found->eax;
    b = found->ebx;
    c = found->ecx;
    d = found->edx;
  }
  s.gpr[0] = a;
  s.gpr[3] = b;
  s.gpr[1] = c;
  s.gpr[2] = d;
}

std::vector<CpuidEntry> emuSupportedCpuid() {
  auto text = [](const char* name, unsigned word) {
    uint32_t value = 0;
    for (unsigned i = 0; i < 4; ++i) value |= static_cast<uint32_t>(name[word * 4 + i]) << (8 * i);
    return value;
  };
  const char* vendor = "GenuineIntel";
  // Family 15 model 6 (as QEMU's kvm64): FPU PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PAT CLFSH
  // MMX FXSR SSE SSE2; ECX: the hypervisor bit.
  uint32_t edx1 = (1 << 0) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 8) | (1 << 9) |
                  (1 << 11) | (1 << 13) | (1 << 15) | (1 << 16) | (1 << 19) | (1 << 23) |
                  (1 << 24) | (1 << 25) | (1 << 26);
  std::vector<CpuidEntry> entries = {
      {0, 0, 0, 1, text(vendor, 0), text(vendor, 2), text(vendor, 1)},
      {1, 0, 0, 0xf61, 0x00010800, (1u << 13) | (1u << 31), edx1},  // CX16, hypervisor
      {0x80000000, 0, 0, 0x80000008, 0, 0, 0},
      {0x80000001, 0, 0, 0, 0, 1, (1 << 11) | (1 << 20) | (1 << 29)},
      {0x80000008, 0, 0, 0x3028, 0, 0, 0},
  };
  return entries;
}

}  // namespace bulkhead::emu
