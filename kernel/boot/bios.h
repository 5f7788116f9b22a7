// A PC BIOS image (SeaBIOS from Debian's seabios package, unmodified): mapped read-only with its
// top at 4 GiB, its last 128 KiB also copied to 0xe0000-0xfffff in RAM (where a PC's chipset
// shadows it), and vCPU 0 left at the reset vector.
#pragma once

#include <absl/status/statusor.h>
#include <kj/common.h>

#include "kernel/boot/boot-state.h"
#include "kernel/memory/guest-memory.h"

namespace bulkhead {

// Where Debian's seabios package puts the BIOS `--bios seabios` means.
constexpr const char* DEBIAN_SEABIOS = "/usr/share/seabios/bios-256k.bin";

// Checks the image (64 KiB to 16 MiB, a multiple of 64 KiB, a far jump at the reset vector)
// and places it. The caller maps memory.roms() for the guest.
absl::StatusOr<BootState> loadBios(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image);

}  // namespace bulkhead
