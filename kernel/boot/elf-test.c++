// The ELF reader on hand-built files: both classes, and each way a file can lie about itself.
#include "kernel/boot/elf.h"

#include <gtest/gtest.h>

#include <vector>

namespace bulkhead {
namespace {

void put(std::vector<uint8_t>& file, size_t at, uint64_t value, unsigned bytes) {
  for (unsigned i = 0; i < bytes; ++i) file[at + i] = value >> (8 * i);
}

// An ELF64 executable with one PT_LOAD of 16 file bytes at offset 0x100, vaddr 0x400000.
std::vector<uint8_t> elf64() {
  std::vector<uint8_t> file(0x110, 0);
  file[0] = 0x7f, file[1] = 'E', file[2] = 'L', file[3] = 'F', file[4] = 2, file[5] = 1;
  put(file, 16, ET_EXEC, 2);
  put(file, 18, EM_X86_64, 2);
  put(file, 24, 0x400000, 8);  // e_entry
  put(file, 32, 64, 8);        // e_phoff
  put(file, 54, 56, 2);        // e_phentsize
  put(file, 56, 1, 2);         // e_phnum
  put(file, 64, PT_LOAD, 4);
  put(file, 64 + 8, 0x100, 8);       // p_offset
  put(file, 64 + 16, 0x400000, 8);   // p_vaddr
  put(file, 64 + 24, 0x1000000, 8);  // p_paddr
  put(file, 64 + 32, 0x10, 8);       // p_filesz
  put(file, 64 + 40, 0x20, 8);       // p_memsz
  return file;
}

// The same as an ELF32 i386 executable.
std::vector<uint8_t> elf32() {
  std::vector<uint8_t> file(0x110, 0);
  file[0] = 0x7f, file[1] = 'E', file[2] = 'L', file[3] = 'F', file[4] = 1, file[5] = 1;
  put(file, 16, ET_EXEC, 2);
  put(file, 18, EM_386, 2);
  put(file, 24, 0x100000, 4);
  put(file, 28, 52, 4);  // e_phoff
  put(file, 42, 32, 2);  // e_phentsize
  put(file, 44, 1, 2);   // e_phnum
  put(file, 52, PT_LOAD, 4);
  put(file, 52 + 4, 0x100, 4);
  put(file, 52 + 8, 0xc0100000, 4);
  put(file, 52 + 12, 0x100000, 4);
  put(file, 52 + 16, 0x10, 4);
  put(file, 52 + 20, 0x20, 4);
  return file;
}

absl::StatusOr<ElfFile> read(const std::vector<uint8_t>& file) {
  return readElf(kj::arrayPtr(file.data(), file.size()));
}

TEST(Elf, BothClassesReadTheSameFields) {
  for (const auto& [file, bits] : {std::pair{elf64(), 64u}, std::pair{elf32(), 32u}}) {
    EXPECT_EQ(elfBits(kj::arrayPtr(file.data(), file.size())), bits);
    absl::StatusOr<ElfFile> elf = read(file);
    ASSERT_TRUE(elf.ok()) << elf.status();
    EXPECT_EQ(elf->is64, bits == 64);
    ASSERT_EQ(elf->segments.size(), 1u);
    const ElfSegment& segment = elf->segments[0];
    EXPECT_EQ(segment.type, PT_LOAD);
    EXPECT_EQ(segment.offset, 0x100u);
    EXPECT_EQ(segment.fileSize, 0x10u);
    EXPECT_EQ(segment.memorySize, 0x20u);
  }
  EXPECT_EQ(read(elf32())->segments[0].virtualAddress, 0xc0100000u);
  EXPECT_EQ(read(elf64())->segments[0].physicalAddress, 0x1000000u);
}

TEST(Elf, AFileThatLiesAboutItselfIsRefused) {
  EXPECT_FALSE(read({}).ok());
  std::vector<uint8_t> notElf(64, 0);
  EXPECT_EQ(read(notElf).status().message(), "not an ELF file");
  auto headers = elf64();
  put(headers, 56, 1000, 2);  // 1000 program headers
  EXPECT_EQ(read(headers).status().message(),
            "truncated: the program headers lie beyond the end of the file");
  auto segment = elf64();
  put(segment, 64 + 32, 0x1000, 8);  // more file bytes than the file has
  EXPECT_EQ(read(segment).status().message(),
            "truncated: segment 0 lies beyond the end of the file");
  auto wrapping = elf32();
  put(wrapping, 52 + 4, 0xffffffff, 4);  // an offset near the top: must not wrap
  EXPECT_FALSE(read(wrapping).ok());
  auto bigEndian = elf64();
  bigEndian[5] = 2;
  EXPECT_EQ(elfBits(kj::arrayPtr(bigEndian.data(), bigEndian.size())), 0u);
}

}  // namespace
}  // namespace bulkhead
