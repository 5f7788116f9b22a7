// The Multiboot loader on hand-built images: good ones load where the headers say and get the
// information the specification promises; malformed ones are refused with a reason.
#include "kernel/boot/multiboot.h"

#include <gtest/gtest.h>

#include <cstring>

#include "kernel/boot/layout.h"

namespace bulkhead {
namespace {

void put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = v;
  b[at + 1] = v >> 8;
}
void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = v >> (8 * i);
}
uint32_t get32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t{p[3]} << 24; }

// An ELF32 executable with one PT_LOAD segment of `code` at physical `paddr`, `bss` extra
// zero bytes, and a Multiboot header with `flags` at file offset 0x100.
struct ElfImage {
  uint32_t paddr = 0x100000;
  uint32_t vaddr = 0x100000;
  uint32_t entry = 0x100010;
  uint32_t bss = 0x100;
  uint32_t flags = 0x3;
  std::vector<uint8_t> build() const {
    std::vector<uint8_t> b(0x200, 0);
    memcpy(b.data(),
           "\x7f"
           "ELF",
           4);
    b[4] = 1;  // ELFCLASS32
    b[5] = 1;  // little-endian
    b[6] = 1;
    put16(b, 16, 2);  // ET_EXEC
    put16(b, 18, 3);  // EM_386
    put32(b, 24, entry);
    put32(b, 28, 52);     // phoff
    put16(b, 42, 32);     // phentsize
    put16(b, 44, 1);      // phnum
    put32(b, 52, 1);      // PT_LOAD
    put32(b, 56, 0x100);  // offset
    put32(b, 60, vaddr);
    put32(b, 64, paddr);
    put32(b, 68, 0x100);        // filesz
    put32(b, 72, 0x100 + bss);  // memsz
    put32(b, 0x100, MULTIBOOT_HEADER_MAGIC);
    put32(b, 0x104, flags);
    put32(b, 0x108, -(MULTIBOOT_HEADER_MAGIC + flags));
    for (size_t i = 0x110; i < 0x200; ++i) b[i] = static_cast<uint8_t>(i);
    return b;
  }
};

class MultibootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto created = GuestMemory::create(16 * MIB);
    ASSERT_TRUE(created.ok());
    memory = std::move(*created);
    // Dirty the kernel's bss so the test sees the loader zero it.
    memset(memory->span(0x100100, 0x100), 0xee, 0x100);
  }
  absl::StatusOr<BootState> load(const std::vector<uint8_t>& image,
                                 const std::vector<MultibootModule>& modules = {}) {
    return loadMultiboot(*memory, kj::arrayPtr(image.data(), image.size()), "kernel quiet",
                         modules);
  }
  void expectRefused(const std::vector<uint8_t>& image, const char* mentions) {
    auto state = load(image);
    ASSERT_FALSE(state.ok()) << mentions;
    EXPECT_NE(std::string(state.status().message()).find(mentions), std::string::npos)
        << state.status().message();
  }
  std::unique_ptr<GuestMemory> memory;
};

TEST_F(MultibootTest, LoadsAnElfKernelAndDescribesTheMachine) {
  auto image = ElfImage{}.build();
  const uint8_t moduleBytes[] = {'m', 'o', 'd'};
  auto state = load(image, {{kj::arrayPtr(moduleBytes, 3), "initrd.img root=1"}});
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->mode, CpuMode::PROTECTED32);
  EXPECT_EQ(state->rip, 0x100010u);
  EXPECT_EQ(state->rax, MULTIBOOT_BOOTLOADER_MAGIC);
  EXPECT_EQ(state->rbx, layout::MULTIBOOT_INFO);
  EXPECT_EQ(memcmp(memory->span(0x100000, 0x100), image.data() + 0x100, 0x100), 0);
  for (size_t i = 0; i < 0x100; ++i) ASSERT_EQ(memory->span(0x100100, 0x100)[i], 0) << i;

  const uint8_t* info = memory->span(state->rbx, 88);
  uint32_t flags = get32(info);
  EXPECT_EQ(flags & 0x24d, 0x24du);  // memory, cmdline, modules, memory map, loader name
  EXPECT_EQ(get32(info + 4), 639u);
  EXPECT_EQ(get32(info + 8), (16 * MIB - MIB) / KIB);
  EXPECT_STREQ(reinterpret_cast<const char*>(memory->span(get32(info + 16), 1)), "kernel quiet");

  ASSERT_EQ(get32(info + 20), 1u);
  const uint8_t* module = memory->span(get32(info + 24), 16);
  uint32_t start = get32(module);
  EXPECT_EQ(start % 4096, 0u);
  EXPECT_GE(start, 0x100200u);  // after the kernel's bss
  EXPECT_EQ(get32(module + 4), start + 3);
  EXPECT_EQ(memcmp(memory->span(start, 3), "mod", 3), 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(memory->span(get32(module + 8), 1)),
               "initrd.img root=1");

  uint32_t mapLength = get32(info + 44);
  const uint8_t* map = memory->span(get32(info + 48), mapLength);
  ASSERT_EQ(mapLength % 24, 0u);
  uint64_t usableAboveMib = 0;
  for (uint32_t at = 0; at < mapLength; at += 24) {
    EXPECT_EQ(get32(map + at), 20u);
    uint64_t base, length;
    memcpy(&base, map + at + 4, 8);
    memcpy(&length, map + at + 12, 8);
    if (get32(map + at + 20) == 1 && base >= MIB) usableAboveMib += length;
  }
  EXPECT_EQ(usableAboveMib, 15 * MIB);
}

TEST_F(MultibootTest, FollowsAHigherHalfEntryToItsPhysicalAddress) {
  ElfImage elf;
  elf.vaddr = 0xc0100000;
  elf.entry = 0xc0100020;
  auto state = load(elf.build());
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->rip, 0x100020u);
}

TEST_F(MultibootTest, LoadsWithTheHeadersAddressFields) {
  std::vector<uint8_t> image(0x400, 0x90);
  uint32_t flags = 0x10003;
  put32(image, 0, MULTIBOOT_HEADER_MAGIC);
  put32(image, 4, flags);
  put32(image, 8, -(MULTIBOOT_HEADER_MAGIC + flags));
  put32(image, 12, 0x200000);  // header_addr
  put32(image, 16, 0x200000);  // load_addr
  put32(image, 20, 0);         // load_end_addr: the whole file
  put32(image, 24, 0x201000);  // bss_end_addr
  put32(image, 28, 0x200020);  // entry_addr
  auto state = load(image);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->rip, 0x200020u);
  EXPECT_EQ(memory->span(0x200100, 1)[0], 0x90);
}

TEST_F(MultibootTest, RefusesMalformedImages) {
  expectRefused({}, "empty");
  expectRefused(std::vector<uint8_t>(4096, 0), "no Multiboot header");

  auto badChecksum = ElfImage{}.build();
  put32(badChecksum, 0x108, 0);
  expectRefused(badChecksum, "no Multiboot header");

  expectRefused(ElfImage{.flags = 0x3 | (1u << 5)}.build(), "requires features");

  auto elf64 = ElfImage{}.build();
  elf64[4] = 2;
  expectRefused(elf64, "32-bit");

  auto truncated = ElfImage{}.build();
  put16(truncated, 44, 200);  // program headers beyond the file
  expectRefused(truncated, "program headers");

  auto beyondFile = ElfImage{}.build();
  put32(beyondFile, 68, 0x10000);  // filesz beyond the file
  put32(beyondFile, 72, 0x10000);
  expectRefused(beyondFile, "segment 0 lies beyond the end of the file");

  expectRefused(ElfImage{.paddr = 0x4000000, .vaddr = 0x4000000, .entry = 0x4000000}.build(),
                "outside guest RAM");
  expectRefused(ElfImage{.paddr = 0x1000, .vaddr = 0x1000, .entry = 0x1000}.build(),
                "Multiboot information area");
  expectRefused(ElfImage{.entry = 0x500000}.build(), "entry point");
  expectRefused(ElfImage{.paddr = 0xfffffff0, .vaddr = 0xfffffff0, .entry = 0xfffffff0}.build(),
                "outside guest RAM");
}

}  // namespace
}  // namespace bulkhead
