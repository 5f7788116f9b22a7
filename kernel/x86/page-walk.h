// The one page walker (SDM Vol. 3, chapter 4): 32-bit (2-level, with 4 MiB pages under
// CR4.PSE), PAE, 4-level and 5-level paging; 4 KiB, 2 MiB, 4 MiB and 1 GiB pages.
//
// Two kinds of walk use it. A CPU access (the software CPU's TLB fill) passes a PageAccess: the
// walk checks the access against the combined permissions (U/S, R/W with CR0.WP, XD with
// EFER.NXE), sets the accessed and dirty bits through the tables, and on a fault gives the #PF
// error code the SDM defines. A look (guest views, error reports) passes none: nothing is
// checked or written, and each level's entry is recorded.
//
// Safe against any guest state: a walk has at most five steps whatever the tables say (a table
// pointing at itself cannot loop), every entry is read through the caller's bounds-checked
// reader, and garbage entries are the reserved-bit faults they are. Reserved bits: MAXPHYADDR
// and above in addresses (up to bit 51; 62 in PAE entries), PS where a level cannot map a page,
// misaligned large-page frames, XD without EFER.NXE, the PAE PDPTE's own reserved bits.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernel/x86/registers.h"

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

// A CPU access, checked by the walk.
struct PageAccess {
  bool write = false;
  bool user = false;
  bool execute = false;
};

enum class WalkFault : uint8_t {
  NONE,
  NOT_PRESENT,    // #PF
  RESERVED,       // #PF with RSVD
  PROTECTION,     // #PF with P: the access is not allowed
  OUTSIDE_RAM,    // a table lies outside guest RAM (a CPU reads all-ones there: RSVD)
  NON_CANONICAL,  // #GP
};

struct PageWalk {
  PagingMode mode = PagingMode::NONE;
  std::vector<WalkStep> steps;  // looks only
  bool mapped = false;
  uint64_t physical = 0;
  uint64_t pageSize = 0;
  bool writable = false;    // R/W set at every level
  bool user = false;        // U/S set at every level
  bool executable = false;  // no level has XD (with EFER.NXE)
  bool accessed = false;    // the final entry's A bit (before this walk set it)
  bool dirty = false;       // the final entry's D bit (before this walk set it)
  WalkFault fault = WalkFault::NONE;
  uint32_t errorCode = 0;          // the #PF error code, for page faults
  const char* faultLevel = "";     // the level whose entry faulted
  uint64_t faultEntryAddress = 0;  // where that entry is (OUTSIDE_RAM)
};

// How the walker reaches the paging structures. `read`: `bytes` (4 or 8) little-endian bytes of
// guest-physical memory, false when they are not RAM. `setBits`: ORs bits into an entry the
// walk just read (A and D; CPU accesses only).
class PageTables {
 public:
  virtual ~PageTables() = default;
  virtual bool read(uint64_t address, unsigned bytes, uint64_t& entry) = 0;
  virtual void setBits(uint64_t address, unsigned bytes, uint64_t bits) {}
};

PagingMode pagingMode(const PagingRegisters& registers);
const char* pagingModeName(PagingMode mode);

// `access` null: a look. Otherwise a CPU access, checked, with A/D bits set.
PageWalk walkPageTables(const PagingRegisters& registers, uint64_t linear, PageTables& tables,
                        const PageAccess* access);

// "#PF error code 0x0: PDE not present", "#GP: ... not canonical ...".
std::string describeWalkFault(const PageWalk& walk, uint64_t linear);

// A look through a reader function, for the guest views.
using PhysicalReader = std::function<bool(uint64_t address, unsigned bytes, uint64_t& value)>;
PageWalk walkPages(const PagingRegisters& registers, uint64_t linear, const PhysicalReader& read);

}  // namespace bulkhead
