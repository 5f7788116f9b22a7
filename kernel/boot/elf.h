// The one ELF reader (System V gABI; the ELF32 and ELF64 header and program header layouts) for
// the loaders (Multiboot, Linux vmlinux) and the prescan tool. Little-endian only. It checks
// what it returns: the program headers lie inside the file, and so do the file bytes of every
// PT_LOAD and PT_NOTE segment; what a loader makes of the segments is its own business.
#pragma once

#include <cstdint>
#include <vector>

#include <absl/status/statusor.h>
#include <kj/common.h>

namespace bulkhead {

constexpr uint16_t ET_EXEC = 2;
constexpr uint16_t EM_386 = 3, EM_X86_64 = 62;
constexpr uint32_t PT_LOAD = 1, PT_NOTE = 4;

struct ElfSegment {
  uint32_t type;
  uint64_t offset;  // in the file
  uint64_t virtualAddress;
  uint64_t physicalAddress;
  uint64_t fileSize;
  uint64_t memorySize;
};

struct ElfFile {
  bool is64 = false;
  uint16_t type = 0;     // e_type
  uint16_t machine = 0;  // e_machine
  uint64_t entry = 0;
  std::vector<ElfSegment> segments;  // in program-header order
};

// Whether `file` starts with the ELF magic.
bool isElf(kj::ArrayPtr<const uint8_t> file);
// 32 or 64 for a little-endian ELF32 or ELF64 file (by its identification bytes), else 0.
unsigned elfBits(kj::ArrayPtr<const uint8_t> file);

// Reads the header and program headers. Errors are one line ("the program headers lie beyond
// the end of the file").
absl::StatusOr<ElfFile> readElf(kj::ArrayPtr<const uint8_t> file);

}  // namespace bulkhead
