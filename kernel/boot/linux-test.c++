// The Linux boot protocol loader on synthetic bzImages and vmlinux files: what lands where in guest
// RAM, the zero page's fields and e820 map, and each malformed image refused with a reason; and the
// MP table.
#include "kernel/boot/linux.h"

#include <gtest/gtest.h>

#include <cstring>

#include "kernel/boot/mp-table.h"

namespace bulkhead {
namespace {

constexpr size_t SETUP_SECTORS = 4;

uint64_t get(const uint8_t* bytes, size_t size) {
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}
void put(std::vector<uint8_t>& bytes, size_t at, uint64_t value, size_t size) {
  for (size_t i = 0; i < size; ++i) bytes[at + i] = value >> (8 * i);
}

// A bzImage as far as the loader reads one: setup sectors with a 2.15 header, then a payload.
std::vector<uint8_t> bzImage(size_t payload = 64 * 1024) {
  std::vector<uint8_t> image((SETUP_SECTORS + 1) * 512 + payload);
  image[0x1f1] = SETUP_SECTORS;
  put(image, 0x1fe, 0xaa55, 2);
  image[0x201] = 0x66;  // header ends at 0x202 + 0x66 = 0x268
  memcpy(&image[0x202], "HdrS", 4);
  put(image, 0x206, 0x020f, 2);
  image[0x211] = 0x01;                    // LOADED_HIGH
  put(image, 0x22c, 0x7fffffff, 4);       // initrd_addr_max
  put(image, 0x236, 0x1 | 0x2, 2);        // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
  put(image, 0x238, 2048, 4);             // cmdline_size
  put(image, 0x260, 4 * 1024 * 1024, 4);  // init_size
  for (size_t i = 0; i < payload; ++i) image[(SETUP_SECTORS + 1) * 512 + i] = i * 13;
  return image;
}

std::unique_ptr<GuestMemory> ram(uint64_t bytes = 64 * MIB) {
  auto memory = GuestMemory::create(bytes);
  EXPECT_TRUE(memory.ok()) << memory.status();
  return std::move(*memory);
}

TEST(LinuxBoot, LoadsTheKernelAndFillsTheZeroPage) {
  auto memory = ram();
  std::vector<uint8_t> image = bzImage();
  std::vector<uint8_t> initrd(10000, 0x5a);
  auto state = loadLinux(*memory, kj::arrayPtr(image.data(), image.size()),
                         kj::arrayPtr(initrd.data(), initrd.size()), "console=ttyS0 quiet");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->mode, CpuMode::LONG64);
  EXPECT_EQ(state->rip, LINUX_KERNEL + 0x200);
  EXPECT_EQ(state->rsi, LINUX_ZERO_PAGE);

  EXPECT_EQ(memcmp(memory->span(LINUX_KERNEL, 64 * 1024), &image[5 * 512], 64 * 1024), 0);
  const uint8_t* zero = memory->span(LINUX_ZERO_PAGE, 4096);
  EXPECT_EQ(memcmp(zero + 0x202, "HdrS", 4), 0);  // the setup header, copied
  EXPECT_EQ(get(zero + 0x206, 2), 0x020fu);
  EXPECT_EQ(zero[0x210], 0xff);  // type_of_loader
  EXPECT_EQ(zero[0x211], 0x81);  // LOADED_HIGH | CAN_USE_HEAP
  EXPECT_EQ(get(zero + 0x228, 4), LINUX_CMDLINE);
  EXPECT_STREQ(reinterpret_cast<const char*>(memory->span(LINUX_CMDLINE, 20)),
               "console=ttyS0 quiet");
  EXPECT_EQ(zero[0x268], 0);  // nothing copied past the header

  uint64_t initrdAt = get(zero + 0x218, 4);
  EXPECT_EQ(get(zero + 0x21c, 4), initrd.size());
  EXPECT_EQ(initrdAt % 4096, 0u);
  EXPECT_LE(initrdAt + initrd.size(), 64 * MIB);
  EXPECT_GE(initrdAt, 20 * MIB);  // clear of the decompressed kernel at 16 MiB + init_size
  EXPECT_EQ(memory->span(initrdAt, 1)[0], 0x5a);
}

TEST(LinuxBoot, TheE820MapHasThePcHolesAndHighRam) {
  auto memory = ram(5 * GIB);
  std::vector<uint8_t> image = bzImage();
  ASSERT_TRUE(loadLinux(*memory, kj::arrayPtr(image.data(), image.size()), {}, "").ok());
  const uint8_t* zero = memory->span(LINUX_ZERO_PAGE, 4096);
  ASSERT_EQ(zero[0x1e8], 5);
  struct {
    uint64_t base, length;
    uint32_t type;
  } expected[] = {{0, 0x9fc00, 1},
                  {0x9fc00, 0x400, 2},
                  {0xf0000, 0x10000, 2},
                  {MIB, 3 * GIB - MIB, 1},
                  {4 * GIB, 2 * GIB, 1}};
  for (size_t i = 0; i < 5; ++i) {
    const uint8_t* entry = zero + 0x2d0 + 20 * i;
    EXPECT_EQ(get(entry, 8), expected[i].base) << i;
    EXPECT_EQ(get(entry + 8, 8), expected[i].length) << i;
    EXPECT_EQ(get(entry + 16, 4), expected[i].type) << i;
  }
}

TEST(LinuxBoot, MalformedImagesAreRefusedWithAReason) {
  struct Case {
    std::function<void(std::vector<uint8_t>&)> spoil;
    const char* says;
  } cases[] = {
      {[](auto& image) { image[0x202] = 'X'; }, "not a bzImage"},
      {[](auto& image) { image.resize(0x800); }, "not a bzImage"},
      {[](auto& image) { put(image, 0x1fe, 0, 2); }, "0xaa55"},
      {[](auto& image) { put(image, 0x206, 0x0204, 2); }, "boot protocol 2.04"},
      {[](auto& image) { put(image, 0x236, 0, 2); }, "without a 64-bit entry point"},
      {[](auto& image) { image[0x1f1] = 200; }, "truncated"},
      {[](auto& image) { put(image, 0x260, 200 * MIB, 4); }, "needs at least 216 MiB"},
  };
  for (const Case& c : cases) {
    auto memory = ram();
    std::vector<uint8_t> image = bzImage();
    c.spoil(image);
    auto state = loadLinux(*memory, kj::arrayPtr(image.data(), image.size()), {}, "");
    ASSERT_FALSE(state.ok()) << c.says;
    EXPECT_NE(state.status().message().find(c.says), std::string::npos) << state.status();
  }
}

TEST(LinuxBoot, ACommandLineOrInitrdThatDoesNotFitIsRefused) {
  auto memory = ram();
  std::vector<uint8_t> image = bzImage();
  auto state =
      loadLinux(*memory, kj::arrayPtr(image.data(), image.size()), {}, std::string(3000, 'x'));
  ASSERT_FALSE(state.ok());
  EXPECT_NE(state.status().message().find("at most 2048"), std::string::npos);
  std::vector<uint8_t> initrd(60 * MIB);
  state = loadLinux(*memory, kj::arrayPtr(image.data(), image.size()),
                    kj::arrayPtr(initrd.data(), initrd.size()), "");
  ASSERT_FALSE(state.ok());
  EXPECT_NE(state.status().message().find("initrd"), std::string::npos);
}

// A vmlinux as far as the loader reads one: an ELF64 header, a PT_NOTE with a "Linux" note and
// one PT_LOAD (16 KiB of text at 16 MiB physical, a higher-half virtual address, 8 KiB of bss),
// entered at its physical start as vmlinux's phys_startup_64 is.
constexpr uint64_t VMLINUX_PHYSICAL = 16 * MIB, VMLINUX_VIRTUAL = 0xffffffff81000000;
std::vector<uint8_t> vmlinux() {
  constexpr size_t NOTE = 0x100, TEXT = 0x1000, TEXT_BYTES = 0x4000;
  std::vector<uint8_t> image(TEXT + TEXT_BYTES);
  memcpy(&image[0],
         "\x7f"
         "ELF",
         4);
  image[4] = 2;             // ELFCLASS64
  image[5] = 1;             // little-endian
  put(image, 0x10, 2, 2);   // ET_EXEC
  put(image, 0x12, 62, 2);  // EM_X86_64
  put(image, 0x18, VMLINUX_PHYSICAL, 8);
  put(image, 0x20, 0x40, 8);  // e_phoff
  put(image, 0x36, 56, 2);
  put(image, 0x38, 2, 2);
  size_t note = 0x40, load = 0x40 + 56;
  put(image, note, 4, 4);  // PT_NOTE
  put(image, note + 8, NOTE, 8);
  put(image, note + 32, 24, 8);
  put(image, NOTE, 6, 4);  // name size ("Linux\0"), descriptor size, type
  put(image, NOTE + 4, 4, 4);
  memcpy(&image[NOTE + 12], "Linux", 6);
  put(image, load, 1, 4);  // PT_LOAD
  put(image, load + 8, TEXT, 8);
  put(image, load + 16, VMLINUX_VIRTUAL, 8);
  put(image, load + 24, VMLINUX_PHYSICAL, 8);
  put(image, load + 32, TEXT_BYTES, 8);
  put(image, load + 40, TEXT_BYTES + 0x2000, 8);
  for (size_t i = 0; i < TEXT_BYTES; ++i) image[TEXT + i] = i * 7 + 1;
  return image;
}

TEST(LinuxBoot, AVmlinuxLoadsAtItsPhysicalAddressesWithASynthesizedHeader) {
  auto memory = ram();
  memset(memory->span(VMLINUX_PHYSICAL, 0x7000), 0xee, 0x7000);  // the bss must be cleared
  std::vector<uint8_t> image = vmlinux();
  std::vector<uint8_t> initrd(5000, 0x5a);
  auto state = loadLinuxElf(*memory, kj::arrayPtr(image.data(), image.size()),
                            kj::arrayPtr(initrd.data(), initrd.size()), "console=ttyS0");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->mode, CpuMode::LONG64);
  EXPECT_EQ(state->rip, VMLINUX_PHYSICAL);
  EXPECT_EQ(state->rsi, LINUX_ZERO_PAGE);
  EXPECT_EQ(memcmp(memory->span(VMLINUX_PHYSICAL, 0x4000), &image[0x1000], 0x4000), 0);
  EXPECT_EQ(memory->span(VMLINUX_PHYSICAL + 0x4000, 1)[0], 0);
  EXPECT_EQ(memory->span(VMLINUX_PHYSICAL + 0x5fff, 1)[0], 0);
  EXPECT_EQ(memory->span(VMLINUX_PHYSICAL + 0x6000, 1)[0], 0xee);  // past the segment
  const uint8_t* zero = memory->span(LINUX_ZERO_PAGE, 4096);
  EXPECT_EQ(get(zero + 0x1fe, 2), 0xaa55u);
  EXPECT_EQ(memcmp(zero + 0x202, "HdrS", 4), 0);
  EXPECT_EQ(zero[0x210], 0xff);
  EXPECT_EQ(get(zero + 0x228, 4), LINUX_CMDLINE);
  EXPECT_STREQ(reinterpret_cast<const char*>(memory->span(LINUX_CMDLINE, 14)), "console=ttyS0");
  uint64_t initrdAt = get(zero + 0x218, 4);
  EXPECT_EQ(get(zero + 0x21c, 4), initrd.size());
  EXPECT_GE(initrdAt, VMLINUX_PHYSICAL + 0x6000);
  EXPECT_EQ(memory->span(initrdAt, 1)[0], 0x5a);
  EXPECT_GT(zero[0x1e8], 0);  // e820 entries
}

TEST(LinuxBoot, AVirtualEntryPointIsTranslatedThroughItsSegment) {
  auto memory = ram();
  std::vector<uint8_t> image = vmlinux();
  put(image, 0x18, VMLINUX_VIRTUAL + 0x40, 8);
  auto state = loadLinuxElf(*memory, kj::arrayPtr(image.data(), image.size()), {}, "");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->rip, VMLINUX_PHYSICAL + 0x40);
}

TEST(LinuxBoot, MalformedVmlinuxFilesAreRefusedWithAReason) {
  constexpr size_t LOAD = 0x40 + 56;
  struct Case {
    std::function<void(std::vector<uint8_t>&)> spoil;
    const char* says;
  } cases[] = {
      {[](auto& image) { image[5] = 2; }, "little-endian 64-bit ELF"},
      {[](auto& image) { put(image, 0x12, 3, 2); }, "x86-64 executable"},
      {[](auto& image) { put(image, 0x38, 2000, 2); }, "program headers lie beyond"},
      {[](auto& image) { put(image, LOAD + 32, 1 << 20, 8); }, "segment 1 lies beyond"},
      {[](auto& image) { put(image, LOAD + 24, 0x1000, 8); }, "does not fit in RAM"},
      {[](auto& image) { put(image, LOAD + 40, 100 * MIB, 8); }, "does not fit in RAM"},
      {[](auto& image) { image[0x100 + 12] = 'X'; }, "without Linux's ELF notes"},
      {[](auto& image) { put(image, 0x18, 0x12345, 8); }, "entry point 0x12345 lies outside"},
  };
  for (const Case& c : cases) {
    auto memory = ram();
    std::vector<uint8_t> image = vmlinux();
    c.spoil(image);
    auto state = loadLinuxElf(*memory, kj::arrayPtr(image.data(), image.size()), {}, "");
    ASSERT_FALSE(state.ok()) << c.says;
    EXPECT_NE(state.status().message().find(c.says), std::string::npos) << state.status();
  }
}

TEST(MpTable, ChecksumsAndEntries) {
  auto memory = ram();
  ASSERT_TRUE(writeMpTable(*memory, 2, {{1, 16}, {2, 17}}).ok());
  const uint8_t* floating = memory->span(MP_TABLE_ADDRESS, 16);
  EXPECT_EQ(memcmp(floating, "_MP_", 4), 0);
  EXPECT_EQ(mpChecksum(floating, 16), 0);  // the bytes sum to zero
  uint64_t tableAt = get(floating + 4, 4);
  const uint8_t* header = memory->span(tableAt, 44);
  ASSERT_NE(header, nullptr);
  EXPECT_EQ(memcmp(header, "PCMP", 4), 0);
  uint64_t length = get(header + 4, 2);
  const uint8_t* table = memory->span(tableAt, length);
  EXPECT_EQ(mpChecksum(table, length), 0);
  EXPECT_EQ(get(header + 36, 4), LAPIC_ADDRESS);
  // 2 CPUs, 2 buses, 1 IOAPIC, 16 ISA + 2 PCI interrupts, 2 local interrupts.
  EXPECT_EQ(get(header + 34, 2), 25u);
  EXPECT_EQ(length, 44u + 2 * 20 + 23 * 8);
  const uint8_t* entry = table + 44;
  EXPECT_EQ(entry[0], 0);    // processor
  EXPECT_EQ(entry[3], 0x3);  // enabled, bootstrap
  EXPECT_EQ(entry[20 + 3], 0x1);
  const uint8_t* ioapic = table + 44 + 40 + 16;
  EXPECT_EQ(ioapic[0], 2);
  EXPECT_EQ(ioapic[1], 2);  // after the LAPIC ids
  EXPECT_EQ(get(ioapic + 4, 4), IOAPIC_ADDRESS);
  const uint8_t* pci = ioapic + 8 + 16 * 8;
  EXPECT_EQ(pci[0], 3);
  EXPECT_EQ(pci[4], 0);              // the PCI bus
  EXPECT_EQ(pci[5], 1 << 2);         // device 1, INTA#
  EXPECT_EQ(pci[7], 16);             // its GSI
  EXPECT_EQ(get(pci + 2, 2), 0xdu);  // level, active high
  EXPECT_FALSE(writeMpTable(*memory, 0, {}).ok());
}

}  // namespace
}  // namespace bulkhead
