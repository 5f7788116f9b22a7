// Readable views of a paused vCPU for the control socket and bulkhead-ctl: registers, a page
// walk, descriptor tables, disassembly and memory, all through the guest's own translation.
#pragma once

#include <cstdint>
#include <string>

#include <absl/status/statusor.h>

#include "kernel/guestview/descriptors.h"
#include "kernel/memory/guest-memory.h"
#include "kernel/x86/arch-state.h"
#include "kernel/x86/page-walk.h"

namespace bulkhead {

class GuestInspector {
 public:
  GuestInspector(const ArchState& vcpu, GuestMemory& memory);

  std::string registers() const;
  std::string walk(uint64_t linear) const;
  absl::StatusOr<std::string> table(TableKind kind) const;
  std::string disassemble(uint64_t linear, unsigned count) const;
  // Bytes at a linear address (or guest-physical with `physical`), at most 64 KiB.
  absl::StatusOr<std::string> memory(uint64_t address, uint32_t length, bool physical) const;

 private:
  bool readLinear(uint64_t address, unsigned bytes, uint8_t* out) const;
  PagingRegisters paging() const;

  ArchState vcpu;
  GuestMemory& ram;
};

}  // namespace bulkhead
