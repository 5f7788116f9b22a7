#include "kernel/boot/linux.h"

#include <algorithm>
#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/boot/cpu-setup.h"
#include "kernel/boot/elf.h"
#include "kernel/boot/memory-map.h"

namespace bulkhead {

namespace {

// Setup header fields (offsets into the image and into boot_params alike).
constexpr size_t SETUP_SECTS = 0x1f1;
constexpr size_t BOOT_FLAG = 0x1fe;
constexpr size_t HEADER_END_BYTE = 0x201;
constexpr size_t HEADER_MAGIC = 0x202;
constexpr size_t VERSION = 0x206;
constexpr size_t TYPE_OF_LOADER = 0x210;
constexpr size_t LOADFLAGS = 0x211;
constexpr size_t RAMDISK_IMAGE = 0x218;
constexpr size_t RAMDISK_SIZE = 0x21c;
constexpr size_t HEAP_END_PTR = 0x224;
constexpr size_t CMD_LINE_PTR = 0x228;
constexpr size_t INITRD_ADDR_MAX = 0x22c;
constexpr size_t XLOADFLAGS = 0x236;
constexpr size_t CMDLINE_SIZE = 0x238;
constexpr size_t INIT_SIZE = 0x260;
// boot_params outside the header.
constexpr size_t E820_ENTRIES = 0x1e8;
constexpr size_t E820_TABLE = 0x2d0;
constexpr size_t E820_MAX = 128;

constexpr uint16_t MINIMUM_VERSION = 0x020c;  // 2.12: xloadflags
constexpr uint16_t XLF_KERNEL_64 = 1;
constexpr uint8_t CAN_USE_HEAP = 0x80;
constexpr uint64_t PAGE = 4096;

uint32_t get(kj::ArrayPtr<const uint8_t> bytes, size_t at, size_t size) {
  uint32_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= static_cast<uint32_t>(bytes[at + i]) << (8 * i);
  return value;
}

void put(uint8_t* bytes, size_t at, uint64_t value, size_t size) {
  for (size_t i = 0; i < size; ++i) bytes[at + i] = value >> (8 * i);
}

absl::Status bad(const std::string& why) { return absl::InvalidArgumentError(why); }

}  // namespace

bool isBzImage(kj::ArrayPtr<const uint8_t> image) {
  return image.size() > HEADER_MAGIC + 4 && memcmp(image.begin() + HEADER_MAGIC, "HdrS", 4) == 0;
}

namespace {

// What a bzImage and a vmlinux share once the kernel is in RAM and `zero` holds the setup header:
// the command line, the initrd (above `kernelEnd`), the e820 map, and vCPU 0 in 64-bit mode at
// `entry` with RSI at the zero page.
absl::StatusOr<BootState> finishZeroPage(GuestMemory& memory, uint8_t* zero,
                                         kj::ArrayPtr<const uint8_t> initrd,
                                         const std::string& cmdline, uint64_t kernelEnd,
                                         uint64_t entry) {
  auto header = kj::arrayPtr(static_cast<const uint8_t*>(zero), PAGE);
  uint64_t cmdlineMax = std::min<uint64_t>(get(header, CMDLINE_SIZE, 4), LINUX_CMDLINE_MAX - 1);
  if (cmdline.size() > cmdlineMax) {
    return bad(absl::StrFormat("the command line has %u bytes; this kernel takes at most %u",
                               cmdline.size(), cmdlineMax));
  }
  std::vector<uint8_t> text(cmdline.begin(), cmdline.end());
  text.push_back(0);
  if (!memory.write(LINUX_CMDLINE, kj::arrayPtr(text.data(), text.size()))) {
    return absl::InternalError("guest RAM has no room for the command line");
  }
  zero[TYPE_OF_LOADER] = 0xff;  // a loader without an assigned ID
  zero[LOADFLAGS] |= CAN_USE_HEAP;
  put(zero, HEAP_END_PTR, 0xfe00 - 0x200, 2);
  put(zero, CMD_LINE_PTR, LINUX_CMDLINE, 4);

  if (initrd.size() > 0) {
    uint64_t ceiling =
        std::min<uint64_t>(get(header, INITRD_ADDR_MAX, 4), memory.lowSize() - 1) + 1;
    if (initrd.size() > ceiling || ((ceiling - initrd.size()) & ~(PAGE - 1)) < kernelEnd) {
      return bad(absl::StrFormat(
          "the initrd (%u bytes) does not fit between the kernel and %#x; use more --memory",
          initrd.size(), ceiling));
    }
    uint64_t at = (ceiling - initrd.size()) & ~(PAGE - 1);
    if (!memory.write(at, initrd)) return absl::InternalError("cannot place the initrd");
    put(zero, RAMDISK_IMAGE, at, 4);
    put(zero, RAMDISK_SIZE, initrd.size(), 4);
  }

  std::vector<MemoryMapEntry> map = pcMemoryMap(memory);
  if (map.size() > E820_MAX) return absl::InternalError("too many e820 entries");
  zero[E820_ENTRIES] = map.size();
  for (size_t i = 0; i < map.size(); ++i) {
    uint8_t* entry = zero + E820_TABLE + 20 * i;
    put(entry, 0, map[i].base, 8);
    put(entry, 8, map[i].length, 8);
    put(entry, 16, map[i].type, 4);
  }

  BootState state;
  state.mode = CpuMode::LONG64;
  state.rip = entry;
  state.rsi = LINUX_ZERO_PAGE;
  state.rsp = LINUX_ZERO_PAGE;  // the kernel sets up its own stack at once
  absl::Status prepared = prepareCpuMode(memory, state);
  if (!prepared.ok()) return prepared;
  return state;
}

uint8_t* clearZeroPage(GuestMemory& memory) {
  uint8_t* zero = memory.span(LINUX_ZERO_PAGE, PAGE);
  if (zero != nullptr) memset(zero, 0, PAGE);
  return zero;
}

// Whether a PT_NOTE segment holds a note named "Linux" (every vmlinux has them: LINUX_ELFNOTE).
bool hasLinuxNote(kj::ArrayPtr<const uint8_t> image, uint64_t offset, uint64_t size) {
  uint64_t at = offset, end = offset + size;
  while (at + 12 <= end) {
    uint64_t nameSize = get(image, at, 4), descSize = get(image, at + 4, 4);
    uint64_t name = at + 12;
    if (name + nameSize > end) return false;
    if (nameSize == 6 && memcmp(image.begin() + name, "Linux", 6) == 0) return true;
    at = name + ((nameSize + 3) & ~3ull) + ((descSize + 3) & ~3ull);
  }
  return false;
}

}  // namespace

bool isElf64(kj::ArrayPtr<const uint8_t> image) {
  constexpr size_t ELF64_HEADER_BYTES = 64;
  return isElf(image) && image.size() >= ELF64_HEADER_BYTES && image[4] == 2;  // ELFCLASS64
}

absl::StatusOr<BootState> loadLinux(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                    kj::ArrayPtr<const uint8_t> initrd,
                                    const std::string& cmdline) {
  if (image.size() < 0x1000 || !isBzImage(image)) {
    return bad("not a bzImage (no \"HdrS\" setup header at 0x202)");
  }
  if (get(image, BOOT_FLAG, 2) != 0xaa55) return bad("the setup header has no 0xaa55 boot flag");
  uint16_t version = get(image, VERSION, 2);
  if (version < MINIMUM_VERSION || !(get(image, XLOADFLAGS, 2) & XLF_KERNEL_64)) {
    return bad(absl::StrFormat(
        "boot protocol %u.%02u without a 64-bit entry point; bulkhead boots x86-64 kernels "
        "(protocol 2.12 or later with XLF_KERNEL_64)",
        version >> 8, version & 0xff));
  }
  size_t setupSectors = image[SETUP_SECTS] == 0 ? 4 : image[SETUP_SECTS];
  size_t kernelOffset = (setupSectors + 1) * 512;
  size_t headerEnd = HEADER_MAGIC + image[HEADER_END_BYTE];
  if (kernelOffset >= image.size() || headerEnd > kernelOffset || headerEnd > PAGE) {
    return bad(absl::StrFormat("truncated: %u setup sectors but %u bytes in all", setupSectors,
                               image.size()));
  }
  uint64_t kernelBytes = image.size() - kernelOffset;
  uint64_t initSize = get(image, INIT_SIZE, 4);
  // The kernel decompresses itself to 16 MiB (the usual LOAD_PHYSICAL_ADDR) and needs
  // init_size bytes there.
  uint64_t kernelEnd = std::max(LINUX_KERNEL + kernelBytes, (16 * MIB) + initSize);
  if (kernelEnd > memory.lowSize()) {
    return bad(absl::StrFormat("the kernel needs at least %u MiB of RAM below 3 GiB; use --memory",
                               (kernelEnd + MIB - 1) / MIB));
  }
  if (!memory.write(LINUX_KERNEL, image.slice(kernelOffset, image.size()))) {
    return absl::InternalError("guest RAM has no room for the kernel at 1 MiB");
  }
  uint8_t* zero = clearZeroPage(memory);
  if (zero == nullptr) return absl::InternalError("guest RAM has no room for the zero page");
  memcpy(zero + SETUP_SECTS, image.begin() + SETUP_SECTS, headerEnd - SETUP_SECTS);
  return finishZeroPage(memory, zero, initrd, cmdline, kernelEnd, LINUX_KERNEL + 0x200);
}

absl::StatusOr<BootState> loadLinuxElf(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                       kj::ArrayPtr<const uint8_t> initrd,
                                       const std::string& cmdline) {
  if (elfBits(image) != 64) return bad("not a little-endian 64-bit ELF file");
  absl::StatusOr<ElfFile> elf = readElf(image);
  if (!elf.ok()) return bad(std::string(elf.status().message()));
  if (elf->machine != EM_X86_64 || elf->type != ET_EXEC) {
    return bad("not an x86-64 executable ELF file (e_machine must be 62, e_type ET_EXEC)");
  }
  uint64_t entry = elf->entry, physicalEntry = UINT64_MAX, kernelEnd = 0;
  bool linux = false, loaded = false;
  for (size_t i = 0; i < elf->segments.size(); ++i) {
    const ElfSegment& segment = elf->segments[i];
    if (segment.type == PT_NOTE) {
      linux = linux || hasLinuxNote(image, segment.offset, segment.fileSize);
    }
    if (segment.type != PT_LOAD) continue;
    uint64_t physical = segment.physicalAddress, memorySize = segment.memorySize;
    if (segment.fileSize > memorySize || physical < LINUX_KERNEL || physical > memory.lowSize() ||
        memorySize > memory.lowSize() - physical) {
      return bad(absl::StrFormat(
          "segment %u [%#x, +%#x) does not fit in RAM between 1 MiB and %#x; use more --memory", i,
          physical, memorySize, memory.lowSize()));
    }
    uint8_t* target = memory.span(physical, memorySize);
    if (target == nullptr) return absl::InternalError("guest RAM has no room for a kernel segment");
    memcpy(target, image.begin() + segment.offset, segment.fileSize);
    memset(target + segment.fileSize, 0, memorySize - segment.fileSize);
    // The entry point is physical (vmlinux's phys_startup_64), or virtual in the segment.
    if (entry - physical < memorySize) physicalEntry = entry;
    if (entry - segment.virtualAddress < memorySize) {
      physicalEntry = physical + (entry - segment.virtualAddress);
    }
    kernelEnd = std::max(kernelEnd, physical + memorySize);
    loaded = true;
  }
  if (!linux) {
    return bad(
        "a 64-bit ELF file without Linux's ELF notes: not a vmlinux (Multiboot kernels "
        "are 32-bit ELF)");
  }
  if (!loaded) return bad("no loadable segment");
  if (physicalEntry == UINT64_MAX) {
    return bad(absl::StrFormat("the entry point %#x lies outside every loaded segment", entry));
  }
  uint8_t* zero = clearZeroPage(memory);
  if (zero == nullptr) return absl::InternalError("guest RAM has no room for the zero page");
  // A vmlinux has no setup header: write the fields the kernel reads (as Firecracker does).
  put(zero, BOOT_FLAG, 0xaa55, 2);
  memcpy(zero + HEADER_MAGIC, "HdrS", 4);
  put(zero, VERSION, 0x020f, 2);
  put(zero, INITRD_ADDR_MAX, 0x7fffffff, 4);
  put(zero, CMDLINE_SIZE, 2047, 4);  // x86's COMMAND_LINE_SIZE, less the NUL
  zero[LOADFLAGS] = 1;               // LOADED_HIGH
  put(zero, XLOADFLAGS, XLF_KERNEL_64, 2);
  return finishZeroPage(memory, zero, initrd, cmdline, kernelEnd, physicalEntry);
}

}  // namespace bulkhead
