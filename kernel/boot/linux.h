// The Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry: a bzImage's
// protected-mode kernel at 1 MiB, the zero page (boot_params) with the image's setup header, the
// e820 map and the command line, an initrd at the top of low RAM, and the vCPU in 64-bit mode
// with everything identity-mapped, RIP at the 64-bit entry point and RSI at the zero page.
//
// Only bzImages with the 64-bit entry point (protocol 2.12+ and XLF_KERNEL_64: every x86-64
// kernel since Linux 3.8) are taken; anything else is refused with a line saying why.
#pragma once

#include <cstdint>
#include <string>

#include <absl/status/statusor.h>
#include <kj/common.h>

#include "kernel/boot/boot-state.h"
#include "kernel/memory/guest-memory.h"

namespace bulkhead {

constexpr uint64_t LINUX_ZERO_PAGE = 0x1000;
constexpr uint64_t LINUX_CMDLINE = 0x2000;
constexpr uint64_t LINUX_CMDLINE_MAX = 0x7000;  // up to the boot page tables
constexpr uint64_t LINUX_KERNEL = 0x100000;

// Whether `image` looks like a bzImage (the "HdrS" magic), as opposed to a Multiboot ELF.
bool isBzImage(kj::ArrayPtr<const uint8_t> image);

absl::StatusOr<BootState> loadLinux(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                    kj::ArrayPtr<const uint8_t> initrd, const std::string& cmdline);

// Whether `image` is a 64-bit ELF file (a Linux vmlinux; Multiboot kernels are 32-bit ELF).
bool isElf64(kj::ArrayPtr<const uint8_t> image);

// The uncompressed kernel, as Firecracker boots it: a vmlinux's PT_LOAD segments at their
// physical addresses, a zero page with the setup header fields a kernel reads, and the same
// 64-bit entry at the ELF entry point (phys_startup_64). It saves the guest the decompression,
// which costs the software CPU most of a boot. Refused with a reason: not ELF64 x86-64, no
// "Linux" ELF note, segments outside the file or below 1 MiB or beyond low RAM, an entry point
// outside the segments.
absl::StatusOr<BootState> loadLinuxElf(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                       kj::ArrayPtr<const uint8_t> initrd,
                                       const std::string& cmdline);

}  // namespace bulkhead
