#include "kernel/guestview/page-walk.h"

#include <absl/strings/str_format.h>

namespace bulkhead {

namespace {

constexpr uint64_t bit(unsigned n) { return uint64_t{1} << n; }
constexpr uint64_t bits(unsigned high, unsigned low) {
  return ((high == 63 ? ~uint64_t{0} : bit(high + 1) - 1) >> low) << low;
}

// Control bits (SDM Vol. 3, 2.5 and 2.2.1).
constexpr uint64_t CR0_PG = bit(31);
constexpr uint64_t CR4_PSE = bit(4);
constexpr uint64_t CR4_PAE = bit(5);
constexpr uint64_t CR4_LA57 = bit(12);
constexpr uint64_t EFER_LME = bit(8);
constexpr uint64_t EFER_NXE = bit(11);

// Paging-structure entry bits (SDM Vol. 3, 4.3, 4.4.2, 4.5).
constexpr uint64_t P = bit(0);
constexpr uint64_t RW = bit(1);
constexpr uint64_t US = bit(2);
constexpr uint64_t A = bit(5);
constexpr uint64_t D = bit(6);
constexpr uint64_t PS = bit(7);
constexpr uint64_t XD = bit(63);

// #PF error code bits (SDM Vol. 3, 4.7).
constexpr uint32_t PF_PRESENT = 1 << 0;
constexpr uint32_t PF_RESERVED = 1 << 3;

struct Level {
  const char* name;
  unsigned shift;     // bits of the linear address this level resolves start here
  bool largeAllowed;  // PS may map a page here
};

PageWalk notMapped(PageWalk walk, uint32_t errorCode, const std::string& why) {
  walk.mapped = false;
  walk.fault = absl::StrFormat("#PF error code 0x%x: %s", errorCode, why);
  return walk;
}

}  // namespace

PagingMode pagingMode(const PagingRegisters& r) {
  if (!(r.cr0 & CR0_PG)) return PagingMode::NONE;
  if (!(r.cr4 & CR4_PAE)) return PagingMode::TWO_LEVEL;
  if (!(r.efer & EFER_LME)) return PagingMode::PAE;
  return (r.cr4 & CR4_LA57) ? PagingMode::FIVE_LEVEL : PagingMode::FOUR_LEVEL;
}

const char* pagingModeName(PagingMode mode) {
  switch (mode) {
    case PagingMode::NONE:
      return "paging off";
    case PagingMode::TWO_LEVEL:
      return "32-bit (2-level) paging";
    case PagingMode::PAE:
      return "PAE paging";
    case PagingMode::FOUR_LEVEL:
      return "4-level paging";
    case PagingMode::FIVE_LEVEL:
      return "5-level paging";
  }
  return "unknown";
}

PageWalk walkPages(const PagingRegisters& r, uint64_t linear, const PhysicalReader& read) {
  PageWalk walk;
  walk.mode = pagingMode(r);
  if (walk.mode == PagingMode::NONE) {
    walk.mapped = true;
    walk.physical = linear & 0xffffffff;
    walk.pageSize = 0;
    walk.writable = walk.user = walk.executable = true;
    return walk;
  }
  bool nx = r.efer & EFER_NXE;
  walk.writable = walk.user = walk.executable = true;

  if (walk.mode == PagingMode::TWO_LEVEL) {
    // SDM 4.3: 4-byte entries; PDE.PS maps 4 MiB with PSE (bits 20:13 are address bits 39:32).
    linear &= 0xffffffff;
    uint64_t table = r.cr3 & bits(31, 12);
    for (int level = 0; level < 2; ++level) {
      unsigned shift = level == 0 ? 22 : 12;
      uint64_t address = table + ((linear >> shift) & 0x3ff) * 4;
      uint64_t entry = 0;
      const char* name = level == 0 ? "PDE" : "PTE";
      if (!read(address, 4, entry)) {
        return notMapped(walk, 0,
                         absl::StrFormat("%s at %#x lies outside guest RAM", name, address));
      }
      walk.steps.push_back({name, address, entry});
      if (!(entry & P)) return notMapped(walk, 0, std::string(name) + " not present");
      walk.writable &= (entry & RW) != 0;
      walk.user &= (entry & US) != 0;
      if (level == 0 && (entry & PS) && (r.cr4 & CR4_PSE)) {
        if (entry & bit(21))
          return notMapped(walk, PF_PRESENT | PF_RESERVED, "PDE reserved bit 21 set");
        uint64_t frame = (entry & bits(31, 22)) | ((entry & bits(20, 13)) << 19);
        walk.physical = frame | (linear & bits(21, 0));
        walk.pageSize = 4 << 20;
        walk.accessed = entry & A;
        walk.dirty = entry & D;
        walk.mapped = true;
        return walk;
      }
      if (level == 1) {
        walk.physical = (entry & bits(31, 12)) | (linear & 0xfff);
        walk.pageSize = 4096;
        walk.accessed = entry & A;
        walk.dirty = entry & D;
        walk.mapped = true;
        return walk;
      }
      table = entry & bits(31, 12);
    }
  }

  uint64_t addressMask = bits(r.maxPhysicalBits - 1, 12);
  uint64_t reserved = bits(62, r.maxPhysicalBits) | (nx ? 0 : XD);
  std::vector<Level> levels;
  uint64_t table;
  if (walk.mode == PagingMode::PAE) {
    // SDM 4.4.1: CR3 points at four PDPTEs (32-byte aligned); the linear address is 32 bits.
    linear &= 0xffffffff;
    uint64_t address = (r.cr3 & bits(31, 5)) + ((linear >> 30) & 3) * 8;
    uint64_t entry = 0;
    if (!read(address, 8, entry)) {
      return notMapped(walk, 0, absl::StrFormat("PDPTE at %#x lies outside guest RAM", address));
    }
    walk.steps.push_back({"PDPTE", address, entry});
    if (!(entry & P)) return notMapped(walk, 0, "PDPTE not present");
    // PAE PDPTEs have no R/W, U/S or XD; bits 2:1 and 8:5 are reserved.
    if (entry & (bits(2, 1) | bits(8, 5) | bits(63, r.maxPhysicalBits))) {
      return notMapped(walk, PF_PRESENT | PF_RESERVED, "PDPTE reserved bit set");
    }
    table = entry & addressMask;
    levels = {{"PDE", 21, true}, {"PTE", 12, false}};
  } else {
    // SDM 4.5: 4- and 5-level paging need a canonical address.
    unsigned width = walk.mode == PagingMode::FIVE_LEVEL ? 57 : 48;
    uint64_t top = linear >> (width - 1);
    uint64_t ones = (uint64_t{1} << (64 - width + 1)) - 1;
    if (top != 0 && top != ones) {
      walk.fault =
          absl::StrFormat("#GP: %#x is not canonical for %u-bit linear addresses", linear, width);
      return walk;
    }
    table = r.cr3 & addressMask;
    if (walk.mode == PagingMode::FIVE_LEVEL) levels.push_back({"PML5E", 48, false});
    levels.push_back({"PML4E", 39, false});
    levels.push_back({"PDPTE", 30, true});
    levels.push_back({"PDE", 21, true});
    levels.push_back({"PTE", 12, false});
  }

  for (const Level& level : levels) {
    uint64_t address = table + ((linear >> level.shift) & 0x1ff) * 8;
    uint64_t entry = 0;
    if (!read(address, 8, entry)) {
      return notMapped(walk, 0,
                       absl::StrFormat("%s at %#x lies outside guest RAM", level.name, address));
    }
    walk.steps.push_back({level.name, address, entry});
    if (!(entry & P)) return notMapped(walk, 0, std::string(level.name) + " not present");
    bool large = level.largeAllowed && (entry & PS);
    uint64_t levelReserved = reserved;
    if (!level.largeAllowed && level.shift != 12)
      levelReserved |= PS;                                  // PS is reserved in PML4E/PML5E
    if (large) levelReserved |= bits(level.shift - 1, 13);  // a large page's frame is aligned
    if (entry & levelReserved) {
      return notMapped(walk, PF_PRESENT | PF_RESERVED,
                       std::string(level.name) + " has a reserved bit set");
    }
    walk.writable &= (entry & RW) != 0;
    walk.user &= (entry & US) != 0;
    if (nx && (entry & XD)) walk.executable = false;
    if (large || level.shift == 12) {
      uint64_t pageMask = bits(level.shift - 1, 0);
      walk.physical = (entry & addressMask & ~pageMask) | (linear & pageMask);
      walk.pageSize = uint64_t{1} << level.shift;
      walk.accessed = entry & A;
      walk.dirty = entry & D;
      walk.mapped = true;
      return walk;
    }
    table = entry & addressMask;
  }
  return walk;  // not reached: the last level always maps or faults
}

}  // namespace bulkhead
