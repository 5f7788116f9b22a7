// Flat binaries: the file's bytes at a guest-physical address, started there in a chosen mode.
#pragma once

#include <absl/status/statusor.h>
#include <kj/common.h>

#include "kernel/boot/boot-state.h"
#include "kernel/memory/guest-memory.h"

namespace bulkhead {

absl::StatusOr<BootState> loadFlat(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                   uint64_t address, CpuMode mode);

}  // namespace bulkhead
