#include "kernel/x86/arch-state.h"

#include "kernel/boot/layout.h"
#include "kernel/x86/registers.h"

namespace bulkhead {

namespace {
constexpr uint8_t CODE_EXECUTE_READ_ACCESSED = 0xb;
constexpr uint8_t DATA_READ_WRITE_ACCESSED = 0x3;
}  // namespace

SegmentState flatSegment(uint16_t selector, bool code, bool code64, unsigned dpl) {
  SegmentState segment;
  segment.selector = selector;
  segment.base = 0;
  segment.limit = 0xffffffff;
  segment.type = code ? CODE_EXECUTE_READ_ACCESSED : DATA_READ_WRITE_ACCESSED;
  segment.present = true;
  segment.system = false;
  segment.longMode = code64;
  segment.big = !code64 || !code;  // a 64-bit code segment has D clear (SDM Vol. 3, 5.2.1)
  segment.dpl = static_cast<uint8_t>(dpl);
  return segment;
}

void applyBootState(const BootState& boot, ArchState& state) {
  using namespace x86;
  SegmentState* data[] = {&state.ds, &state.es, &state.fs, &state.gs, &state.ss};
  switch (boot.mode) {
    case CpuMode::RESET:
      // As after power-on (SDM Vol. 3, 9.1.4): CS base 0xffff0000, IP 0xfff0.
      state.cs.selector = 0xf000;
      state.cs.base = 0xffff0000;
      state.rip = 0xfff0;
      return;
    case CpuMode::REAL16:
      state.cs.selector = 0;
      state.cs.base = 0;
      for (SegmentState* segment : data) {
        segment->selector = 0;
        segment->base = 0;
      }
      break;
    case CpuMode::PROTECTED32:
    case CpuMode::LONG64: {
      bool long64 = boot.mode == CpuMode::LONG64;
      state.cs =
          flatSegment(long64 ? layout::CODE64_SELECTOR : layout::CODE32_SELECTOR, true, long64, 0);
      for (SegmentState* segment : data)
        *segment = flatSegment(layout::DATA_SELECTOR, false, false, 0);
      state.gdtBase = boot.gdtBase;
      state.gdtLimit = boot.gdtLimit;
      state.cr0 = CR0_PE | CR0_ET;
      if (long64) {
        state.cr0 |= CR0_PG;
        state.cr3 = boot.cr3;
        state.cr4 = CR4_PAE;
        state.efer = EFER_LME | EFER_LMA;
      }
      break;
    }
  }
  state.rip = boot.rip;
  state.gpr[4] = boot.rsp;
  state.gpr[0] = boot.rax;
  state.gpr[3] = boot.rbx;
  state.gpr[6] = boot.rsi;
  state.rflags = FLAG_RESERVED1;
}

}  // namespace bulkhead
