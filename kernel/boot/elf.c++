#include "kernel/boot/elf.h"

#include <cstring>

#include <absl/strings/str_format.h>

namespace bulkhead {

namespace {

constexpr uint8_t ELFCLASS32 = 1, ELFCLASS64 = 2, ELFDATA2LSB = 1;
constexpr size_t ELF32_HEADER = 52, ELF64_HEADER = 64;
constexpr size_t ELF32_PHDR = 32, ELF64_PHDR = 56;

uint64_t le(const uint8_t* p, unsigned bytes) {
  uint64_t value = 0;
  for (unsigned i = 0; i < bytes; ++i) value |= uint64_t{p[i]} << (8 * i);
  return value;
}

}  // namespace

bool isElf(kj::ArrayPtr<const uint8_t> file) {
  return file.size() >= 4 && memcmp(file.begin(),
                                    "\x7f"
                                    "ELF",
                                    4) == 0;
}

unsigned elfBits(kj::ArrayPtr<const uint8_t> file) {
  if (!isElf(file) || file.size() < 6 || file[5] != ELFDATA2LSB) return 0;
  return file[4] == ELFCLASS32 ? 32 : file[4] == ELFCLASS64 ? 64 : 0;
}

absl::StatusOr<ElfFile> readElf(kj::ArrayPtr<const uint8_t> file) {
  if (!isElf(file) || file.size() < ELF32_HEADER) {
    return absl::InvalidArgumentError("not an ELF file");
  }
  const uint8_t* e = file.begin();
  if ((e[4] != ELFCLASS32 && e[4] != ELFCLASS64) || e[5] != ELFDATA2LSB) {
    return absl::InvalidArgumentError("not a little-endian ELF32 or ELF64 file");
  }
  ElfFile elf;
  elf.is64 = e[4] == ELFCLASS64;
  if (elf.is64 && file.size() < ELF64_HEADER) {
    return absl::InvalidArgumentError("truncated: the ELF header lies beyond the end of the file");
  }
  unsigned word = elf.is64 ? 8 : 4;
  elf.type = le(e + 16, 2);
  elf.machine = le(e + 18, 2);
  elf.entry = le(e + 24, word);
  uint64_t phoff = le(e + (elf.is64 ? 32 : 28), word);
  uint64_t phentsize = le(e + (elf.is64 ? 54 : 42), 2);
  uint64_t phnum = le(e + (elf.is64 ? 56 : 44), 2);
  if (phentsize < (elf.is64 ? ELF64_PHDR : ELF32_PHDR) || phoff > file.size() ||
      phentsize * phnum > file.size() - phoff) {
    return absl::InvalidArgumentError(
        "truncated: the program headers lie beyond the end of the file");
  }
  for (uint64_t i = 0; i < phnum; ++i) {
    const uint8_t* ph = e + phoff + i * phentsize;
    ElfSegment segment;
    segment.type = le(ph, 4);
    if (elf.is64) {
      segment.offset = le(ph + 8, 8);
      segment.virtualAddress = le(ph + 16, 8);
      segment.physicalAddress = le(ph + 24, 8);
      segment.fileSize = le(ph + 32, 8);
      segment.memorySize = le(ph + 40, 8);
    } else {
      segment.offset = le(ph + 4, 4);
      segment.virtualAddress = le(ph + 8, 4);
      segment.physicalAddress = le(ph + 12, 4);
      segment.fileSize = le(ph + 16, 4);
      segment.memorySize = le(ph + 20, 4);
    }
    bool used = segment.type == PT_LOAD || segment.type == PT_NOTE;
    if (used && (segment.offset > file.size() || segment.fileSize > file.size() - segment.offset)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("truncated: segment %u lies beyond the end of the file", i));
    }
    elf.segments.push_back(segment);
  }
  return elf;
}

}  // namespace bulkhead
