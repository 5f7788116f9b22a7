// The software CPU: its state, reset, and the stack. Decoding and the block cache: decode.c++;
// segmentation, paging and the TLB: mmu.c++; the run loop: run-loop.c++.
#include "kernel/vcpu/emu/cpu.h"

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

Cpu::Cpu(CpuBus& bus, std::vector<CpuidEntry> cpuid) : bus(bus), cpuidTable(std::move(cpuid)) {
  reset();
}

void Cpu::reset() {
  s = CpuState{};
  shadow = false;
  nmiBlocked = false;
  flagsLazy = false;
  for (SegmentState& segment : s.segment) {
    segment = SegmentState{0, 0, 0xffff, 3, true, false, false, false, 0};
  }
  s.segment[CS].type = 0xb;
  s.ldtr = SegmentState{0, 0, 0xffff, 2, true, true, false, false, 0};
  s.tr = SegmentState{0, 0, 0xffff, 0xb, true, true, false, false, 0};
  stateChanged();
}

Cpu::~Cpu() = default;

void Cpu::stateChanged() {
  flushTlb();
  modeChanged();
}

void Cpu::modeChanged() {
  bool code64 = (s.efer & EFER_LMA) && s.segment[CS].longMode;
  modeKey = code64 ? 2 : s.segment[CS].big ? 1 : 0;
  privilegeTlb = &tlb[cpl() == 3];
  // Links hold for one privilege level, mode and CS base (an IRET to the same CS keeps them).
  uint64_t context = s.segment[CS].base ^ (static_cast<uint64_t>(modeKey) << 2) ^ cpl();
  if (context != linkContext) {
    linkContext = context;
    ++linkEpoch;
  }
  endBlock = true;
}

bool Cpu::interruptsEnabled() const { return (s.rflags & FLAG_IF) && !shadow; }

void Cpu::setDebug(bool step, std::vector<uint64_t> addresses) {
  singleStep = step;
  breakpoints = std::move(addresses);
  debugStop = false;
}

ArchState Cpu::archState() const {
  ArchState out;
  memcpy(out.gpr, s.gpr, sizeof(out.gpr));
  out.rip = s.rip;
  out.rflags = s.rflags;
  out.es = s.segment[ES];
  out.cs = s.segment[CS];
  out.ss = s.segment[SS];
  out.ds = s.segment[DS];
  out.fs = s.segment[FS];
  out.gs = s.segment[GS];
  out.tr = s.tr;
  out.ldt = s.ldtr;
  out.gdtBase = s.gdtBase;
  out.gdtLimit = s.gdtLimit;
  out.idtBase = s.idtBase;
  out.idtLimit = s.idtLimit;
  out.cr0 = s.cr0;
  out.cr2 = s.cr2;
  out.cr3 = s.cr3;
  out.cr4 = s.cr4;
  out.efer = s.efer;
  return out;
}

void Cpu::setArchState(const ArchState& in) {
  memcpy(s.gpr, in.gpr, sizeof(s.gpr));
  s.rip = in.rip;
  s.rflags = in.rflags;
  s.segment[ES] = in.es;
  s.segment[CS] = in.cs;
  s.segment[SS] = in.ss;
  s.segment[DS] = in.ds;
  s.segment[FS] = in.fs;
  s.segment[GS] = in.gs;
  s.tr = in.tr;
  s.ldtr = in.ldt;
  s.gdtBase = in.gdtBase;
  s.gdtLimit = in.gdtLimit;
  s.idtBase = in.idtBase;
  s.idtLimit = in.idtLimit;
  s.cr0 = in.cr0;
  s.cr2 = in.cr2;
  s.cr3 = in.cr3;
  s.cr4 = in.cr4;
  s.efer = in.efer;
  stateChanged();
}

// --- Stack --------------------------------------------------------------------------------

unsigned Cpu::stackWidth() const {
  if (modeKey == 2) return 8;
  return s.segment[SS].big ? 4 : 2;
}

void Cpu::push(uint64_t value, unsigned size) {
  unsigned width = stackWidth();
  uint64_t rsp = s.gpr[4] - size;
  if (width == 2) rsp = (s.gpr[4] & ~0xffffull) | (rsp & 0xffff);
  if (width == 4) rsp &= 0xffffffff;
  uint64_t offset = width == 2 ? rsp & 0xffff : rsp;
  write(SS, offset, size, value);
  s.gpr[4] = rsp;
}

uint64_t Cpu::pop(unsigned size) {
  unsigned width = stackWidth();
  uint64_t offset = width == 2 ? s.gpr[4] & 0xffff : s.gpr[4];
  uint64_t value = read(SS, offset, size);
  uint64_t rsp = s.gpr[4] + size;
  if (width == 2) rsp = (s.gpr[4] & ~0xffffull) | (rsp & 0xffff);
  if (width == 4) rsp &= 0xffffffff;
  s.gpr[4] = rsp;
  return value;
}

}  // namespace bulkhead::emu
