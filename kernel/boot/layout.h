// Where the loaders put their own structures in low guest memory. Images may not overlap the
// areas a boot mode uses; the loaders refuse such images with an error naming the area.
#pragma once

#include <cstdint>

namespace bulkhead::layout {

constexpr uint64_t GDT = 0x500;              // flat GDT for 32- and 64-bit entry
constexpr uint64_t GDT_BYTES = 0x20;         // null, code32 (0x08), data (0x10), code64 (0x18)
constexpr uint64_t MULTIBOOT_INFO = 0x1000;  // Multiboot info, memory map, strings, module list
constexpr uint64_t MULTIBOOT_INFO_END = 0x9000;
constexpr uint64_t PAGE_TABLES = 0x9000;  // PML4, PDPT, 4 PDs: identity map of 4 GiB
constexpr uint64_t PAGE_TABLES_END = 0xf000;
constexpr uint64_t EBDA = 0x9fc00;  // reported reserved in memory maps, as on a PC
constexpr uint64_t BIOS_AREA = 0xf0000;

constexpr uint16_t CODE32_SELECTOR = 0x08;
constexpr uint16_t DATA_SELECTOR = 0x10;
constexpr uint16_t CODE64_SELECTOR = 0x18;

}  // namespace bulkhead::layout
