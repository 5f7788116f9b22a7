// A vCPU's architectural state in Bulkhead's own terms: what the CPU backends get and set
// (Vcpu::getState/setState), what the guest views decode and what reports print. Neither KVM's
// structures nor the software CPU's internals appear here.
#pragma once

#include <cstdint>

#include "kernel/boot/boot-state.h"

namespace bulkhead {

struct SegmentState {
  uint16_t selector = 0;
  uint64_t base = 0;
  uint32_t limit = 0;
  uint8_t type = 0;
  bool present = false, system = false, longMode = false, big = false;
  uint8_t dpl = 0;
};

struct ArchState {
  uint64_t gpr[16] = {};  // rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8-r15
  uint64_t rip = 0;
  uint64_t rflags = 0;
  SegmentState cs, ds, es, fs, gs, ss, tr, ldt;
  uint64_t gdtBase = 0, idtBase = 0;
  uint16_t gdtLimit = 0, idtLimit = 0;
  uint64_t cr0 = 0, cr2 = 0, cr3 = 0, cr4 = 0, efer = 0;
};

// A flat 4 GiB code or data segment (type: code execute/read accessed, or data read/write
// accessed), as loaders set them up.
SegmentState flatSegment(uint16_t selector, bool code, bool code64, unsigned dpl);

// Puts `boot` (a loader's starting state) into `state`, which holds the vCPU's state after
// power-on: the one place that says what each boot mode means for the registers.
void applyBootState(const BootState& boot, ArchState& state);

}  // namespace bulkhead
