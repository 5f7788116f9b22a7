// Multiboot v1 (the Multiboot Specification 0.6.96): ELF32 kernels, or any image with the
// header's address fields (flag 16), booted in flat 32-bit protected mode with a Multiboot
// information structure: memory sizes, a memory map, the command line and modules.
//
// Supported header flags: 0 (page-align modules), 1 (memory information) and 16 (address
// fields). Flag 2 (video mode) is accepted but no video information is given, as there is no
// display; any other bit in 0-15 makes the image unbootable, as the specification requires.
#pragma once

#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <kj/common.h>

#include "kernel/boot/boot-state.h"
#include "kernel/memory/guest-memory.h"

namespace bulkhead {

constexpr uint32_t MULTIBOOT_HEADER_MAGIC = 0x1badb002;
constexpr uint32_t MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;

struct MultibootModule {
  kj::ArrayPtr<const uint8_t> bytes;
  std::string cmdline;
};

absl::StatusOr<BootState> loadMultiboot(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                        const std::string& cmdline,
                                        const std::vector<MultibootModule>& modules);

}  // namespace bulkhead
