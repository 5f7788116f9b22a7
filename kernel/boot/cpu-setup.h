// Writes what a boot mode needs in guest memory before the first instruction: the flat GDT for
// 32- and 64-bit entry and, for 64-bit entry, identity-mapped page tables.
#pragma once

#include <absl/status/statusor.h>

#include "kernel/boot/boot-state.h"
#include "kernel/memory/guest-memory.h"

namespace bulkhead {

// Fills in the mode-dependent parts of `state` (GDT, CR3) and writes their tables.
absl::Status prepareCpuMode(GuestMemory& memory, BootState& state);

// Whether [base, base + size) collides with a table prepareCpuMode() writes for `mode`;
// returns an error naming the area when it does.
absl::Status checkImagePlacement(CpuMode mode, uint64_t base, uint64_t size);

}  // namespace bulkhead
