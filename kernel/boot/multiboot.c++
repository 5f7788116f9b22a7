#include "kernel/boot/multiboot.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/base/status-macros.h"
#include "kernel/boot/cpu-setup.h"
#include "kernel/boot/elf.h"
#include "kernel/boot/layout.h"
#include "kernel/boot/memory-map.h"

namespace bulkhead {

namespace {

constexpr size_t HEADER_SEARCH_BYTES = 8192;

// Header flags (Multiboot 0.6.96, 3.1.2).
constexpr uint32_t FLAG_PAGE_ALIGN = 1u << 0;
constexpr uint32_t FLAG_MEMORY_INFO = 1u << 1;
constexpr uint32_t FLAG_VIDEO_MODE = 1u << 2;
constexpr uint32_t FLAG_ADDRESS_FIELDS = 1u << 16;
constexpr uint32_t REQUIRED_FLAGS = 0xffff;
constexpr uint32_t UNDERSTOOD_REQUIRED = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

// Information flags (3.3).
constexpr uint32_t INFO_MEMORY = 1u << 0;
constexpr uint32_t INFO_CMDLINE = 1u << 2;
constexpr uint32_t INFO_MODULES = 1u << 3;
constexpr uint32_t INFO_MEMORY_MAP = 1u << 6;
constexpr uint32_t INFO_LOADER_NAME = 1u << 9;

uint32_t le32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t{p[3]} << 24; }
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = v >> (8 * i);
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = v >> (8 * i);
}

struct Header {
  size_t offset;  // in the file
  uint32_t flags;
  uint32_t headerAddr, loadAddr, loadEndAddr, bssEndAddr, entryAddr;
};

std::optional<Header> findHeader(kj::ArrayPtr<const uint8_t> image) {
  size_t limit = std::min(image.size(), HEADER_SEARCH_BYTES);
  for (size_t offset = 0; offset + 12 <= limit; offset += 4) {
    const uint8_t* p = image.begin() + offset;
    if (le32(p) != MULTIBOOT_HEADER_MAGIC) continue;
    if (le32(p) + le32(p + 4) + le32(p + 8) != 0) continue;
    Header header{offset, le32(p + 4)};
    if (header.flags & FLAG_ADDRESS_FIELDS) {
      if (offset + 32 > image.size()) return std::nullopt;
      header.headerAddr = le32(p + 12);
      header.loadAddr = le32(p + 16);
      header.loadEndAddr = le32(p + 20);
      header.bssEndAddr = le32(p + 24);
      header.entryAddr = le32(p + 28);
    }
    return header;
  }
  return std::nullopt;
}

// What the kernel occupies, so modules and info go elsewhere.
struct Loaded {
  uint64_t entry;
  uint64_t end;  // highest byte + 1
};

absl::Status placeBytes(GuestMemory& memory, uint64_t address, kj::ArrayPtr<const uint8_t> bytes,
                        uint64_t zeroFill, const char* what) {
  uint64_t total = bytes.size() + zeroFill;
  if (total < zeroFill || address + total < address || address + total > memory.lowSize()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s at %#x+%#x lies outside guest RAM below 3 GiB (%#x bytes); raise --memory", what,
        address, total, memory.lowSize()));
  }
  RETURN_IF_ERROR(checkImagePlacement(CpuMode::PROTECTED32, address, total));
  if (address < layout::MULTIBOOT_INFO_END && address + total > layout::MULTIBOOT_INFO) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s at %#x+%#x overlaps the Multiboot information area %#x-%#x; link the kernel at 1 MiB",
        what, address, total, layout::MULTIBOOT_INFO, layout::MULTIBOOT_INFO_END - 1));
  }
  uint8_t* target = memory.span(address, total);
  memcpy(target, bytes.begin(), bytes.size());
  memset(target + bytes.size(), 0, zeroFill);
  return absl::OkStatus();
}

absl::StatusOr<Loaded> loadWithAddressFields(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                             const Header& header) {
  // 3.1.3: the file offset of header_addr is header.offset; load_addr maps to offset
  // header.offset - (header_addr - load_addr).
  if (header.loadAddr > header.headerAddr || header.headerAddr - header.loadAddr > header.offset) {
    return absl::InvalidArgumentError(
        "Multiboot header: load_addr is above header_addr or "
        "before the start of the file");
  }
  size_t fileStart = header.offset - (header.headerAddr - header.loadAddr);
  uint64_t loadEnd =
      header.loadEndAddr == 0 ? header.loadAddr + (image.size() - fileStart) : header.loadEndAddr;
  if (loadEnd < header.loadAddr || loadEnd - header.loadAddr > image.size() - fileStart) {
    return absl::InvalidArgumentError("Multiboot header: load_end_addr lies beyond the file");
  }
  uint64_t bssEnd = std::max<uint64_t>(header.bssEndAddr, loadEnd);
  RETURN_IF_ERROR(placeBytes(memory, header.loadAddr,
                             image.slice(fileStart, fileStart + (loadEnd - header.loadAddr)),
                             bssEnd - loadEnd, "the kernel"));
  if (header.entryAddr < header.loadAddr || header.entryAddr >= loadEnd) {
    return absl::InvalidArgumentError("Multiboot header: entry_addr lies outside the loaded image");
  }
  return Loaded{header.entryAddr, bssEnd};
}

absl::StatusOr<Loaded> loadElf(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image) {
  if (!isElf(image)) {
    return absl::InvalidArgumentError(
        "not an ELF file and its Multiboot header has no address fields (flag 16)");
  }
  const char* notI386 =
      "not a 32-bit little-endian i386 executable ELF (Multiboot needs ELF32; a 64-bit kernel "
      "must use --flat or the Linux boot protocol)";
  if (elfBits(image) != 32) return absl::InvalidArgumentError(notI386);
  ASSIGN_OR_RETURN(ElfFile elf, readElf(image));
  if (elf.type != ET_EXEC || elf.machine != EM_386) return absl::InvalidArgumentError(notI386);
  uint64_t end = 0;
  std::optional<uint64_t> physicalEntry;
  bool loadedAny = false;
  for (size_t i = 0; i < elf.segments.size(); ++i) {
    const ElfSegment& segment = elf.segments[i];
    if (segment.type != PT_LOAD) continue;
    if (segment.fileSize > segment.memorySize) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF segment %u is malformed: its file bytes exceed its size in memory", i));
    }
    if (segment.memorySize == 0) continue;
    RETURN_IF_ERROR(placeBytes(memory, segment.physicalAddress,
                               image.slice(segment.offset, segment.offset + segment.fileSize),
                               segment.memorySize - segment.fileSize, "an ELF segment"));
    loadedAny = true;
    end = std::max(end, segment.physicalAddress + segment.memorySize);
    // The entry point is virtual; a kernel linked high loads low (p_paddr != p_vaddr).
    if (elf.entry - segment.virtualAddress < segment.memorySize) {
      physicalEntry = segment.physicalAddress + (elf.entry - segment.virtualAddress);
    }
  }
  if (!loadedAny) return absl::InvalidArgumentError("the ELF file has no loadable segment");
  if (physicalEntry) return Loaded{*physicalEntry, end};
  return absl::InvalidArgumentError(
      absl::StrFormat("the ELF entry point %#x lies in no loadable segment", elf.entry));
}

// Builds the boot information in the area layout reserves for it.
class InfoWriter {
 public:
  explicit InfoWriter(GuestMemory& memory)
      : memory(memory),
        next(layout::MULTIBOOT_INFO + INFO_BYTES),
        base(memory.span(layout::MULTIBOOT_INFO,
                         layout::MULTIBOOT_INFO_END - layout::MULTIBOOT_INFO)) {}

  uint8_t* info() { return base; }

  // Reserves `size` bytes (8-aligned) and returns their guest address, or 0 when full.
  uint64_t allocate(size_t size) {
    uint64_t address = (next + 7) & ~uint64_t{7};
    if (size > layout::MULTIBOOT_INFO_END || address > layout::MULTIBOOT_INFO_END - size) return 0;
    next = address + size;
    return address;
  }
  uint8_t* at(uint64_t address) { return base + (address - layout::MULTIBOOT_INFO); }

  absl::StatusOr<uint32_t> string(const std::string& text, const char* what) {
    uint64_t address = allocate(text.size() + 1);
    if (address == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("the %s is too long for the Multiboot information area", what));
    }
    memcpy(at(address), text.c_str(), text.size() + 1);
    return static_cast<uint32_t>(address);
  }

  static constexpr size_t INFO_BYTES = 88;

 private:
  GuestMemory& memory;
  uint64_t next;
  uint8_t* base;
};

}  // namespace

absl::StatusOr<BootState> loadMultiboot(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                        const std::string& cmdline,
                                        const std::vector<MultibootModule>& modules) {
  if (image.size() == 0) return absl::InvalidArgumentError("the kernel image is empty");
  if (memory.lowSize() < 2 * MIB) {
    return absl::InvalidArgumentError(
        "Multiboot guests need at least 2M of memory; raise --memory");
  }
  std::optional<Header> found = findHeader(image);
  if (!found) {
    return absl::InvalidArgumentError(
        "no Multiboot header (magic 0x1BADB002 with a valid checksum) in the first 8 KiB; is "
        "this a Multiboot kernel?");
  }
  const Header& header = *found;
  uint32_t unknown = header.flags & REQUIRED_FLAGS & ~UNDERSTOOD_REQUIRED;
  if (unknown != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the Multiboot header requires features this loader lacks (flags %#x)", unknown));
  }
  Loaded loaded;
  if (header.flags & FLAG_ADDRESS_FIELDS) {
    ASSIGN_OR_RETURN(loaded, loadWithAddressFields(memory, image, header));
  } else {
    ASSIGN_OR_RETURN(loaded, loadElf(memory, image));
  }

  InfoWriter writer(memory);
  if (writer.info() == nullptr) return absl::InternalError("guest RAM lacks the Multiboot area");
  uint8_t* info = writer.info();
  memset(info, 0, InfoWriter::INFO_BYTES);
  uint32_t flags = INFO_MEMORY | INFO_MEMORY_MAP | INFO_LOADER_NAME | INFO_CMDLINE;

  uint64_t low = memory.lowSize();
  put32(info + 4, layout::EBDA / KIB);  // mem_lower
  put32(info + 8, (low - MIB) / KIB);   // mem_upper: up to the first hole
  put32(info + 12, 0xffffffff);         // boot_device: none

  ASSIGN_OR_RETURN(uint32_t cmdlineAddress, writer.string(cmdline, "command line"));
  put32(info + 16, cmdlineAddress);
  ASSIGN_OR_RETURN(uint32_t nameAddress, writer.string("bulkhead", "loader name"));
  put32(info + 64, nameAddress);

  std::vector<MemoryMapEntry> map = pcMemoryMap(memory);
  uint64_t mapAddress = writer.allocate(map.size() * 24);
  if (mapAddress == 0) return absl::InternalError("no room for the Multiboot memory map");
  for (size_t i = 0; i < map.size(); ++i) {
    uint8_t* entry = writer.at(mapAddress) + i * 24;
    put32(entry, 20);  // size of the rest of the entry
    put64(entry + 4, map[i].base);
    put64(entry + 12, map[i].length);
    put32(entry + 20, map[i].type);
  }
  put32(info + 44, map.size() * 24);
  put32(info + 48, mapAddress);

  if (!modules.empty()) {
    flags |= INFO_MODULES;
    uint64_t listAddress = writer.allocate(modules.size() * 16);
    if (listAddress == 0) return absl::InvalidArgumentError("too many Multiboot modules");
    uint64_t place = loaded.end;
    for (size_t i = 0; i < modules.size(); ++i) {
      // Modules are always page-aligned, which satisfies flag 0 whether or not it is set.
      place = (place + 0xfff) & ~uint64_t{0xfff};
      RETURN_IF_ERROR(placeBytes(memory, place, modules[i].bytes, 0, "a module"));
      ASSIGN_OR_RETURN(uint32_t stringAddress, writer.string(modules[i].cmdline, "module string"));
      uint8_t* entry = writer.at(listAddress) + i * 16;
      put32(entry, place);
      put32(entry + 4, place + modules[i].bytes.size());
      put32(entry + 8, stringAddress);
      put32(entry + 12, 0);
      place += modules[i].bytes.size();
    }
    put32(info + 20, modules.size());
    put32(info + 24, listAddress);
  }
  put32(info, flags);

  BootState state;
  state.mode = CpuMode::PROTECTED32;
  state.rip = loaded.entry;
  state.rax = MULTIBOOT_BOOTLOADER_MAGIC;
  state.rbx = layout::MULTIBOOT_INFO;
  RETURN_IF_ERROR(prepareCpuMode(memory, state));
  return state;
}

}  // namespace bulkhead
