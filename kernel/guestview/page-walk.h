// Walks a guest's page tables the way the CPU does (SDM Vol. 3, chapter 4), for diagnostics:
// 32-bit (2-level, with 4 MiB pages under CR4.PSE), PAE, 4-level and 5-level paging; 4 KiB,
// 2 MiB, 4 MiB and 1 GiB pages; each level's entry, the combined permissions, A/D bits, and the
// fault a supervisor-mode read would raise.
//
// Safe against any guest state: a walk has at most five steps whatever the tables say (a table
// pointing at itself cannot loop), every table read goes through a bounds-checked reader, and
// garbage entries are reported as the reserved-bit faults they are.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bulkhead {

enum class PagingMode { NONE, TWO_LEVEL, PAE, FOUR_LEVEL, FIVE_LEVEL };

struct PagingRegisters {
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;
  unsigned maxPhysicalBits = 52;  // MAXPHYADDR (CPUID 0x80000008)
};

struct WalkStep {
  const char* name;       // "PML5E", "PML4E", "PDPTE", "PDE", "PTE"
  uint64_t entryAddress;  // guest-physical address of the entry
  uint64_t entry;
};

struct PageWalk {
  PagingMode mode = PagingMode::NONE;
  std::vector<WalkStep> steps;
  bool mapped = false;
  uint64_t physical = 0;
  uint64_t pageSize = 0;
  bool writable = false;    // R/W set at every level
  bool user = false;        // U/S set at every level
  bool executable = false;  // no level has XD (with EFER.NXE)
  bool accessed = false;    // the final entry's A bit
  bool dirty = false;       // the final entry's D bit
  // When not mapped: the fault ("#PF error code 0x0: PDE not present", "#GP: non-canonical").
  std::string fault;
};

// Reads `bytes` (4 or 8) little-endian bytes of guest-physical memory; false when not RAM.
using PhysicalReader = std::function<bool(uint64_t address, unsigned bytes, uint64_t& value)>;

PagingMode pagingMode(const PagingRegisters& registers);
const char* pagingModeName(PagingMode mode);
PageWalk walkPages(const PagingRegisters& registers, uint64_t linear, const PhysicalReader& read);

}  // namespace bulkhead
