#include "kernel/x86/page-walk.h"

#include <absl/strings/str_format.h>

namespace bulkhead {

using namespace x86;

namespace {

struct Level {
  const char* name;
  unsigned shift;     // bits of the linear address this level resolves start here
  bool largeAllowed;  // PS may map a page here
  unsigned bytes;     // entry size
};

constexpr Level TWO_LEVEL_PDE{"PDE", 22, true, 4}, TWO_LEVEL_PTE{"PTE", 12, false, 4};
constexpr Level PML5E{"PML5E", 48, false, 8}, PML4E{"PML4E", 39, false, 8},
    PDPTE{"PDPTE", 30, true, 8}, PDE{"PDE", 21, true, 8}, PTE{"PTE", 12, false, 8};

class Walker {
 public:
  Walker(const PagingRegisters& r, uint64_t linear, PageTables& tables, const PageAccess* access)
      : r(r), linear(linear), tables(tables), access(access), nx(r.efer & EFER_NXE) {
    if (access != nullptr) {
      base = (access->write ? PF_W : 0) | (access->user ? PF_U : 0) |
             (access->execute && nx ? PF_I : 0);
    }
  }

  PageWalk run() {
    walk.mode = pagingMode(r);
    walk.writable = walk.user = walk.executable = true;
    switch (walk.mode) {
      case PagingMode::NONE:
        walk.mapped = true;
        walk.physical = linear & 0xffffffff;
        return walk;
      case PagingMode::TWO_LEVEL:
        return twoLevel();
      case PagingMode::PAE:
        return pae();
      case PagingMode::FOUR_LEVEL:
      case PagingMode::FIVE_LEVEL:
        return longMode();
    }
    return walk;
  }

 private:
  // SDM 4.3: 4-byte entries; PDE.PS maps 4 MiB with PSE (bits 20:13 are address bits 39:32).
  PageWalk twoLevel() {
    linear &= 0xffffffff;
    uint64_t table = r.cr3 & bitRange(31, 12);
    uint64_t entry;
    if (!read(TWO_LEVEL_PDE, table + ((linear >> 22) & 0x3ff) * 4, entry)) return walk;
    if ((entry & PTE_PS) && (r.cr4 & CR4_PSE)) {
      if (entry & bit(21)) return fail(WalkFault::RESERVED, TWO_LEVEL_PDE);
      uint64_t frame = (entry & bitRange(31, 22)) | ((entry & bitRange(20, 13)) << 19);
      return leaf(TWO_LEVEL_PDE, entry, frame | (linear & bitRange(21, 0)), 4 << 20);
    }
    setAccessed(TWO_LEVEL_PDE, entry);
    table = entry & bitRange(31, 12);
    if (!read(TWO_LEVEL_PTE, table + ((linear >> 12) & 0x3ff) * 4, entry)) return walk;
    return leaf(TWO_LEVEL_PTE, entry, (entry & bitRange(31, 12)) | (linear & 0xfff), 4096);
  }

  // SDM 4.4: CR3 points at four PDPTEs (32-byte aligned); the linear address is 32 bits. Bits
  // 62:MAXPHYADDR of every entry are reserved.
  PageWalk pae() {
    linear &= 0xffffffff;
    uint64_t entry;
    if (!read(PDPTE, (r.cr3 & bitRange(31, 5)) + ((linear >> 30) & 3) * 8, entry)) return walk;
    // PAE PDPTEs have no R/W, U/S or XD; bits 2:1 and 8:5 are reserved.
    if (entry & (bitRange(2, 1) | bitRange(8, 5) | bitRange(63, r.maxPhysicalBits))) {
      return fail(WalkFault::RESERVED, PDPTE);
    }
    return levels(entry & addressMask(), {&PDE, &PTE}, bitRange(62, r.maxPhysicalBits));
  }

  // SDM 4.5: 4- and 5-level paging need a canonical address; bits 62:52 of entries are ignored
  // (software may use them), 51:MAXPHYADDR reserved.
  PageWalk longMode() {
    bool five = walk.mode == PagingMode::FIVE_LEVEL;
    unsigned width = five ? 57 : 48;
    uint64_t top = linear >> (width - 1);
    if (top != 0 && top != (uint64_t{1} << (64 - width + 1)) - 1) {
      walk.fault = WalkFault::NON_CANONICAL;
      return walk;
    }
    uint64_t reserved = r.maxPhysicalBits < 52 ? bitRange(51, r.maxPhysicalBits) : 0;
    if (five) return levels(r.cr3 & addressMask(), {&PML5E, &PML4E, &PDPTE, &PDE, &PTE}, reserved);
    return levels(r.cr3 & addressMask(), {&PML4E, &PDPTE, &PDE, &PTE}, reserved);
  }

  PageWalk levels(uint64_t table, std::initializer_list<const Level*> list, uint64_t reserved) {
    if (!nx) reserved |= PTE_XD;
    for (const Level* level : list) {
      uint64_t entry;
      if (!read(*level, table + ((linear >> level->shift) & 0x1ff) * 8, entry)) return walk;
      bool large = level->largeAllowed && (entry & PTE_PS);
      uint64_t levelReserved = reserved;
      if (!level->largeAllowed && level->shift != 12) levelReserved |= PTE_PS;
      if (large) levelReserved |= bitRange(level->shift - 1, 13);  // large frames are aligned
      if (entry & levelReserved) return fail(WalkFault::RESERVED, *level);
      if (nx && (entry & PTE_XD)) walk.executable = false;
      if (large || level->shift == 12) {
        uint64_t pageMask = bitRange(level->shift - 1, 0);
        return leaf(*level, entry, (entry & addressMask() & ~pageMask) | (linear & pageMask),
                    uint64_t{1} << level->shift);
      }
      setAccessed(*level, entry);
      table = entry & addressMask();
    }
    return walk;  // not reached: the last level always maps or faults
  }

  uint64_t addressMask() const { return bitRange(r.maxPhysicalBits - 1, 12); }

  // Reads the entry for `level`, records it, and checks it is present; false (with the fault
  // set) otherwise. Permissions accumulate here.
  bool read(const Level& level, uint64_t address, uint64_t& entry) {
    entry = 0;
    entryAddress = address;
    if (!tables.read(address, level.bytes, entry)) {
      walk.faultEntryAddress = address;
      fail(WalkFault::OUTSIDE_RAM, level);
      return false;
    }
    if (access == nullptr) walk.steps.push_back({level.name, address, entry});
    if (!(entry & PTE_P)) {
      fail(WalkFault::NOT_PRESENT, level);
      return false;
    }
    if (&level != &PDPTE || walk.mode != PagingMode::PAE) {
      walk.writable &= (entry & PTE_RW) != 0;
      walk.user &= (entry & PTE_US) != 0;
    }
    return true;
  }

  void setAccessed(const Level& level, uint64_t entry) {
    if (access != nullptr && !(entry & PTE_A)) tables.setBits(entryAddress, level.bytes, PTE_A);
  }

  // The final entry: check the access, set A (and D for a write), report the page.
  PageWalk leaf(const Level& level, uint64_t entry, uint64_t physical, uint64_t size) {
    walk.accessed = entry & PTE_A;
    walk.dirty = entry & PTE_D;
    if (access != nullptr) {
      bool denied = (access->user && !walk.user) ||
                    (access->write && !walk.writable && (access->user || (r.cr0 & CR0_WP))) ||
                    (access->execute && !walk.executable);
      if (denied) return fail(WalkFault::PROTECTION, level);
      uint64_t bits = access->write ? PTE_A | PTE_D : PTE_A;
      if ((entry & bits) != bits) tables.setBits(entryAddress, level.bytes, bits);
    }
    walk.mapped = true;
    walk.physical = physical;
    walk.pageSize = size;
    return walk;
  }

  PageWalk fail(WalkFault fault, const Level& level) {
    walk.fault = fault;
    walk.faultLevel = level.name;
    switch (fault) {
      case WalkFault::NOT_PRESENT:
        walk.errorCode = base;
        break;
      case WalkFault::PROTECTION:
        walk.errorCode = base | PF_P;
        break;
      default:  // reserved bits; a table outside RAM reads as all-ones, reserved bits and all
        walk.errorCode = base | PF_P | PF_RSVD;
        break;
    }
    return walk;
  }

  const PagingRegisters& r;
  uint64_t linear;
  PageTables& tables;
  const PageAccess* access;
  bool nx;
  uint32_t base = 0;  // the access's own error-code bits (W, U, I)
  uint64_t entryAddress = 0;
  PageWalk walk;
};

class ReaderTables final : public PageTables {
 public:
  explicit ReaderTables(const PhysicalReader& reader) : reader(reader) {}
  bool read(uint64_t address, unsigned bytes, uint64_t& entry) override {
    return reader(address, bytes, entry);
  }

 private:
  const PhysicalReader& reader;
};

}  // namespace

PagingMode pagingMode(const PagingRegisters& r) {
  if (!(r.cr0 & CR0_PG)) return PagingMode::NONE;
  if (!(r.cr4 & CR4_PAE)) return PagingMode::TWO_LEVEL;
  if (!(r.efer & EFER_LMA)) return PagingMode::PAE;
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

PageWalk walkPageTables(const PagingRegisters& registers, uint64_t linear, PageTables& tables,
                        const PageAccess* access) {
  return Walker(registers, linear, tables, access).run();
}

std::string describeWalkFault(const PageWalk& walk, uint64_t linear) {
  switch (walk.fault) {
    case WalkFault::NONE:
      return "";
    case WalkFault::NOT_PRESENT:
      return absl::StrFormat("#PF error code 0x%x: %s not present", walk.errorCode,
                             walk.faultLevel);
    case WalkFault::RESERVED:
      return absl::StrFormat("#PF error code 0x%x: %s has a reserved bit set", walk.errorCode,
                             walk.faultLevel);
    case WalkFault::PROTECTION:
      return absl::StrFormat("#PF error code 0x%x: the access is not allowed", walk.errorCode);
    case WalkFault::OUTSIDE_RAM:
      return absl::StrFormat("#PF error code 0x%x: %s at %#x lies outside guest RAM",
                             walk.errorCode, walk.faultLevel, walk.faultEntryAddress);
    case WalkFault::NON_CANONICAL:
      return absl::StrFormat("#GP: %#x is not canonical for %u-bit linear addresses", linear,
                             walk.mode == PagingMode::FIVE_LEVEL ? 57 : 48);
  }
  return "";
}

PageWalk walkPages(const PagingRegisters& registers, uint64_t linear, const PhysicalReader& read) {
  ReaderTables tables(read);
  return walkPageTables(registers, linear, tables, nullptr);
}

}  // namespace bulkhead
