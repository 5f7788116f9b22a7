#include "kernel/boot/cpu-setup.h"

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/boot/layout.h"
#include "kernel/x86/registers.h"

namespace bulkhead {

namespace {

// Segment descriptors (SDM Vol. 3, 3.4.5): base 0, limit 0xfffff with 4 KiB granularity.
constexpr uint64_t GDT_ENTRIES[] = {
    0,
    0x00cf9b000000ffff,  // 0x08: 32-bit code, execute/read, accessed
    0x00cf93000000ffff,  // 0x10: data, read/write, accessed
    0x00af9b000000ffff,  // 0x18: 64-bit code (L=1, D=0)
};
static_assert(sizeof(GDT_ENTRIES) == layout::GDT_BYTES);

using x86::PTE_P;
using x86::PTE_PS;
using x86::PTE_RW;

bool overlaps(uint64_t base, uint64_t size, uint64_t areaStart, uint64_t areaEnd) {
  return size != 0 && base < areaEnd && base + size > areaStart;
}

}  // namespace

absl::Status checkImagePlacement(CpuMode mode, uint64_t base, uint64_t size) {
  if (mode == CpuMode::REAL16) return absl::OkStatus();
  if (overlaps(base, size, layout::GDT, layout::GDT + layout::GDT_BYTES)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("image at %#x+%#x overlaps the boot GDT at %#x; load it at or above %#x",
                        base, size, layout::GDT, layout::PAGE_TABLES_END));
  }
  if (mode == CpuMode::LONG64 &&
      overlaps(base, size, layout::PAGE_TABLES, layout::PAGE_TABLES_END)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image at %#x+%#x overlaps the boot page tables at %#x-%#x; load it at or above %#x", base,
        size, layout::PAGE_TABLES, layout::PAGE_TABLES_END - 1, layout::PAGE_TABLES_END));
  }
  return absl::OkStatus();
}

absl::Status prepareCpuMode(GuestMemory& memory, BootState& state) {
  if (state.mode == CpuMode::REAL16) return absl::OkStatus();
  if (!memory.write(layout::GDT, kj::arrayPtr(reinterpret_cast<const uint8_t*>(GDT_ENTRIES),
                                              sizeof(GDT_ENTRIES)))) {
    return absl::InternalError("guest RAM too small for the boot GDT");
  }
  state.gdtBase = layout::GDT;
  state.gdtLimit = sizeof(GDT_ENTRIES) - 1;
  if (state.mode != CpuMode::LONG64) return absl::OkStatus();

  // PML4[0] -> PDPT; PDPT[i] -> PD i; each PD maps 1 GiB with 2 MiB pages.
  uint8_t* tables = memory.span(layout::PAGE_TABLES, layout::PAGE_TABLES_END - layout::PAGE_TABLES);
  if (tables == nullptr) return absl::InternalError("guest RAM too small for boot page tables");
  memset(tables, 0, layout::PAGE_TABLES_END - layout::PAGE_TABLES);
  auto* pml4 = reinterpret_cast<uint64_t*>(tables);
  auto* pdpt = pml4 + 512;
  auto* pds = pdpt + 512;
  uint64_t pdptAddress = layout::PAGE_TABLES + 0x1000;
  pml4[0] = pdptAddress | PTE_P | PTE_RW;
  for (uint64_t i = 0; i < 4; ++i) {
    pdpt[i] = (pdptAddress + 0x1000 * (i + 1)) | PTE_P | PTE_RW;
    for (uint64_t j = 0; j < 512; ++j) {
      pds[i * 512 + j] = ((i * 512 + j) << 21) | PTE_P | PTE_RW | PTE_PS;
    }
  }
  state.cr3 = layout::PAGE_TABLES;
  return absl::OkStatus();
}

}  // namespace bulkhead
