#include "kernel/boot/linux.h"

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/boot/cpu-setup.h"
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
  uint64_t low = memory.lowSize();
  // The kernel decompresses itself to 16 MiB (the usual LOAD_PHYSICAL_ADDR) and needs
  // init_size bytes there.
  uint64_t needed = std::max(LINUX_KERNEL + kernelBytes, (16 * MIB) + initSize);
  if (needed > low) {
    return bad(absl::StrFormat("the kernel needs at least %u MiB of RAM below 3 GiB; use --memory",
                               (needed + MIB - 1) / MIB));
  }
  uint64_t cmdlineMax = std::min<uint64_t>(get(image, CMDLINE_SIZE, 4), LINUX_CMDLINE_MAX - 1);
  if (cmdline.size() > cmdlineMax) {
    return bad(absl::StrFormat("the command line has %u bytes; this kernel takes at most %u",
                               cmdline.size(), cmdlineMax));
  }

  if (!memory.write(LINUX_KERNEL, image.slice(kernelOffset, image.size()))) {
    return absl::InternalError("guest RAM has no room for the kernel at 1 MiB");
  }
  std::vector<uint8_t> text(cmdline.begin(), cmdline.end());
  text.push_back(0);
  if (!memory.write(LINUX_CMDLINE, kj::arrayPtr(text.data(), text.size()))) {
    return absl::InternalError("guest RAM has no room for the command line");
  }

  uint8_t* zero = memory.span(LINUX_ZERO_PAGE, PAGE);
  if (zero == nullptr) return absl::InternalError("guest RAM has no room for the zero page");
  memset(zero, 0, PAGE);
  memcpy(zero + SETUP_SECTS, image.begin() + SETUP_SECTS, headerEnd - SETUP_SECTS);
  zero[TYPE_OF_LOADER] = 0xff;  // a loader without an assigned ID
  zero[LOADFLAGS] |= CAN_USE_HEAP;
  put(zero, HEAP_END_PTR, 0xfe00 - 0x200, 2);
  put(zero, CMD_LINE_PTR, LINUX_CMDLINE, 4);

  if (initrd.size() > 0) {
    uint64_t ceiling = std::min<uint64_t>(get(image, INITRD_ADDR_MAX, 4), low - 1) + 1;
    uint64_t kernelEnd = std::max(LINUX_KERNEL + kernelBytes, (16 * MIB) + initSize);
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
  state.rip = LINUX_KERNEL + 0x200;  // startup_64
  state.rsi = LINUX_ZERO_PAGE;
  state.rsp = LINUX_ZERO_PAGE;  // the kernel sets up its own stack at once
  absl::Status prepared = prepareCpuMode(memory, state);
  if (!prepared.ok()) return prepared;
  return state;
}

}  // namespace bulkhead
