// Readable views of a paused vCPU for the control socket and bulkhead-ctl: registers, a page
// walk, descriptor tables, disassembly and memory, all through the guest's own translation.
#pragma once

#include <cstdint>
#include <string>

#include <absl/status/statusor.h>

#include "kernel/guestview/descriptors.h"
#include "kernel/guestview/page-walk.h"
#include "kernel/memory/guest-memory.h"

namespace bulkhead {

struct SegmentState {
  uint16_t selector = 0;
  uint64_t base = 0;
  uint32_t limit = 0;
  uint8_t type = 0;
  bool present = false, system = false, longMode = false, big = false;
  uint8_t dpl = 0;
};

struct VcpuSnapshot {
  uint64_t gpr[16] = {};  // rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8-r15
  uint64_t rip = 0;
  uint64_t rflags = 0;
  SegmentState cs, ds, es, fs, gs, ss, tr, ldt;
  uint64_t gdtBase = 0, idtBase = 0;
  uint16_t gdtLimit = 0, idtLimit = 0;
  uint64_t cr0 = 0, cr2 = 0, cr3 = 0, cr4 = 0, efer = 0;
};

class GuestInspector {
 public:
  GuestInspector(const VcpuSnapshot& vcpu, GuestMemory& memory);

  std::string registers() const;
  std::string walk(uint64_t linear) const;
  absl::StatusOr<std::string> table(TableKind kind) const;
  std::string disassemble(uint64_t linear, unsigned count) const;
  // Bytes at a linear address (or guest-physical with `physical`), at most 64 KiB.
  absl::StatusOr<std::string> memory(uint64_t address, uint32_t length, bool physical) const;

 private:
  bool readLinear(uint64_t address, unsigned bytes, uint8_t* out) const;
  PagingRegisters paging() const;

  VcpuSnapshot vcpu;
  GuestMemory& ram;
};

}  // namespace bulkhead
