// The page walker against hand-built page tables in a buffer: every paging mode, large pages,
// non-present levels, reserved bits, a table that points at itself, addresses outside RAM.
#include "kernel/x86/page-walk.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace bulkhead {
namespace {

constexpr uint64_t P = 1, RW = 2, US = 4, A = 0x20, D = 0x40, PS = 0x80, XD = 1ull << 63;

// 4 MiB of "guest RAM" starting at physical 0.
class Memory {
 public:
  Memory() : bytes(4 << 20, 0) {}
  void put64(uint64_t address, uint64_t value) { memcpy(&bytes[address], &value, 8); }
  void put32(uint64_t address, uint32_t value) { memcpy(&bytes[address], &value, 4); }
  PhysicalReader reader() {
    return [this](uint64_t address, unsigned size, uint64_t& value) {
      if (address > bytes.size() || size > bytes.size() - address) return false;
      value = 0;
      memcpy(&value, &bytes[address], size);
      return true;
    };
  }

 private:
  std::vector<uint8_t> bytes;
};

PagingRegisters fourLevel(uint64_t cr3) {
  return {0x80000011, cr3, 0x20, 0x500 | 0x800, 46};  // PG, PAE, LME+LMA, NXE
}

TEST(PageWalk, FourLevelSmallPageWithPermissionsAndAccessedDirty) {
  Memory m;
  m.put64(0x1000 + 0 * 8, 0x2000 | P | RW | US);                 // PML4[0]
  m.put64(0x2000 + 0 * 8, 0x3000 | P | RW | US);                 // PDPT[0]
  m.put64(0x3000 + 2 * 8, 0x4000 | P | US);                      // PD[2]: read-only
  m.put64(0x4000 + 1 * 8, 0x123000 | P | RW | US | A | D | XD);  // PT[1]
  PageWalk walk = walkPages(fourLevel(0x1000), 0x401abc, m.reader());
  ASSERT_TRUE(walk.mapped) << describeWalkFault(walk, 0);
  EXPECT_EQ(walk.mode, PagingMode::FOUR_LEVEL);
  EXPECT_EQ(walk.physical, 0x123abcu);
  EXPECT_EQ(walk.pageSize, 4096u);
  EXPECT_FALSE(walk.writable);  // the PDE says read-only
  EXPECT_TRUE(walk.user);
  EXPECT_FALSE(walk.executable);
  EXPECT_TRUE(walk.accessed);
  EXPECT_TRUE(walk.dirty);
  ASSERT_EQ(walk.steps.size(), 4u);
  EXPECT_STREQ(walk.steps[2].name, "PDE");
  EXPECT_EQ(walk.steps[2].entryAddress, 0x3010u);
}

TEST(PageWalk, LargePages) {
  Memory m;
  m.put64(0x1000, 0x2000 | P | RW);
  m.put64(0x2000 + 1 * 8, 0x40000000 | P | RW | PS);  // PDPT[1]: 1 GiB page at 1 GiB
  m.put64(0x2000, 0x3000 | P | RW);
  m.put64(0x3000 + 3 * 8, 0x200000 | P | PS | A);  // PD[3]: 2 MiB page at 2 MiB
  PageWalk gib = walkPages(fourLevel(0x1000), 0x40000000 + 0x1234567, m.reader());
  ASSERT_TRUE(gib.mapped) << describeWalkFault(gib, 0);
  EXPECT_EQ(gib.pageSize, 1u << 30);
  EXPECT_EQ(gib.physical, 0x41234567u);
  PageWalk mib = walkPages(fourLevel(0x1000), 0x600000 + 0x1234, m.reader());
  ASSERT_TRUE(mib.mapped) << describeWalkFault(mib, 0);
  EXPECT_EQ(mib.pageSize, 2u << 20);
  EXPECT_EQ(mib.physical, 0x201234u);
  EXPECT_FALSE(mib.writable);
  EXPECT_TRUE(mib.accessed);
  EXPECT_FALSE(mib.dirty);
}

TEST(PageWalk, NotPresentReservedAndNonCanonical) {
  Memory m;
  m.put64(0x1000, 0x2000 | P | RW);
  m.put64(0x2000, 0x3000 | P | RW);
  PageWalk absent = walkPages(fourLevel(0x1000), 0x5000, m.reader());
  EXPECT_FALSE(absent.mapped);
  EXPECT_EQ(describeWalkFault(absent, 0), "#PF error code 0x0: PDE not present");

  m.put64(0x3000, 0x4000 | P | (1ull << 50));  // above MAXPHYADDR 46
  PageWalk reserved = walkPages(fourLevel(0x1000), 0x5000, m.reader());
  EXPECT_FALSE(reserved.mapped);
  EXPECT_EQ(describeWalkFault(reserved, 0), "#PF error code 0x9: PDE has a reserved bit set");

  m.put64(0x1000 + 8, 0x2000 | P | PS);  // PS in a PML4E is reserved
  EXPECT_NE(describeWalkFault(walkPages(fourLevel(0x1000), 1ull << 39, m.reader()), 0)
                .find("PML4E has a reserved"),
            std::string::npos);

  m.put64(0x2000 + 8, 0x40100000 | P | PS);  // a 1 GiB frame that is not 1 GiB aligned
  EXPECT_NE(
      describeWalkFault(walkPages(fourLevel(0x1000), 1ull << 30, m.reader()), 0).find("reserved"),
      std::string::npos);

  PageWalk wild = walkPages(fourLevel(0x1000), 0x0000800000000000, m.reader());
  EXPECT_FALSE(wild.mapped);
  EXPECT_EQ(describeWalkFault(wild, 0).rfind("#GP", 0), 0u);
  EXPECT_TRUE(wild.steps.empty());

  // Without EFER.NXE, XD is a reserved bit.
  m.put64(0x3000, 0x4000 | P | XD);
  PagingRegisters noNx = fourLevel(0x1000);
  noNx.efer = 0x500;
  EXPECT_NE(describeWalkFault(walkPages(noNx, 0x5000, m.reader()), 0).find("reserved"),
            std::string::npos);
}

TEST(PageWalk, ATableThatPointsAtItselfEndsAfterFourSteps) {
  Memory m;
  m.put64(0x1000, 0x1000 | P | RW);  // PML4[0] -> the PML4 itself
  PageWalk walk = walkPages(fourLevel(0x1000), 0x0, m.reader());
  // PML4 -> PML4 (as PDPT) -> PML4 (as PD) -> PML4 (as PT): the "page" is the table.
  ASSERT_TRUE(walk.mapped) << describeWalkFault(walk, 0);
  EXPECT_EQ(walk.steps.size(), 4u);
  EXPECT_EQ(walk.physical, 0x1000u);
}

TEST(PageWalk, TablesOutsideRam) {
  Memory m;
  m.put64(0x1000, 0x7fff0000 | P);
  PageWalk walk = walkPages(fourLevel(0x1000), 0x0, m.reader());
  EXPECT_FALSE(walk.mapped);
  EXPECT_NE(describeWalkFault(walk, 0).find("PDPTE at 0x7fff0000 lies outside guest RAM"),
            std::string::npos)
      << describeWalkFault(walk, 0);
  EXPECT_FALSE(walkPages(fourLevel(0x7000000000), 0x0, m.reader()).mapped);
}

TEST(PageWalk, FiveLevel) {
  Memory m;
  PagingRegisters r = fourLevel(0x1000);
  r.cr4 |= 1 << 12;                         // LA57
  uint64_t linear = (1ull << 48) | 0x3000;  // PML5 index 1
  m.put64(0x1000 + 8, 0x2000 | P | RW);
  m.put64(0x2000, 0x3000 | P | RW);
  m.put64(0x3000, 0x4000 | P | RW);
  m.put64(0x4000, 0x5000 | P | RW);
  m.put64(0x5000 + 3 * 8, 0x9000 | P | RW);
  PageWalk walk = walkPages(r, linear, m.reader());
  ASSERT_TRUE(walk.mapped) << describeWalkFault(walk, 0);
  EXPECT_EQ(walk.steps.size(), 5u);
  EXPECT_STREQ(walk.steps[0].name, "PML5E");
  EXPECT_EQ(walk.physical, 0x9000u);
  // A 48-bit canonical-looking but 57-bit non-canonical address faults.
  EXPECT_EQ(describeWalkFault(walkPages(r, 0x0100000000000000, m.reader()), 0).rfind("#GP", 0), 0u);
}

TEST(PageWalk, PaeWithTwoMegabytePages) {
  Memory m;
  PagingRegisters r{0x80000011, 0x1020, 0x20, 0, 36};  // PAE, no LME; PDPTEs at 0x1020
  m.put64(0x1020 + 1 * 8, 0x3000 | P);                 // PDPTE[1]: linear 1-2 GiB
  m.put64(0x3000 + 5 * 8, 0x400000 | P | RW | PS);     // 2 MiB page
  m.put64(0x3000 + 6 * 8, 0x4000 | P | RW | US);
  m.put64(0x4000 + 2 * 8, 0x88000 | P | US);
  PageWalk big = walkPages(r, 0x40000000 + 5 * (2 << 20) + 0x10, m.reader());
  ASSERT_TRUE(big.mapped) << describeWalkFault(big, 0);
  EXPECT_EQ(big.mode, PagingMode::PAE);
  EXPECT_EQ(big.physical, 0x400010u);
  PageWalk small = walkPages(r, 0x40000000 + 6 * (2 << 20) + 0x2abc, m.reader());
  ASSERT_TRUE(small.mapped) << describeWalkFault(small, 0);
  EXPECT_EQ(small.physical, 0x88abcu);
  EXPECT_FALSE(small.writable);
  m.put64(0x1020, 0x3000 | P | RW);  // R/W is reserved in a PAE PDPTE
  EXPECT_NE(describeWalkFault(walkPages(r, 0x1000, m.reader()), 0).find("PDPTE has a reserved"),
            std::string::npos);
}

TEST(PageWalk, TwoLevelWithFourMegabytePages) {
  Memory m;
  PagingRegisters r{0x80000011, 0x1000, 0x10, 0, 40};               // PG, PSE
  m.put32(0x1000 + 1 * 4, 0x00c00000 | P | RW | PS | (0x1 << 13));  // 4 MiB at 4 GiB + 12 MiB
  m.put32(0x1000 + 2 * 4, 0x2000 | P | RW | US);
  m.put32(0x2000 + 3 * 4, 0x7000 | P | US | A);
  PageWalk big = walkPages(r, 0x400000 + 0x12345, m.reader());
  ASSERT_TRUE(big.mapped) << describeWalkFault(big, 0);
  EXPECT_EQ(big.mode, PagingMode::TWO_LEVEL);
  EXPECT_EQ(big.pageSize, 4u << 20);
  EXPECT_EQ(big.physical, 0x100c12345u);  // PSE-36: PDE bits 20:13 give address bits 39:32
  PageWalk small = walkPages(r, 0x800000 + 0x3123, m.reader());
  ASSERT_TRUE(small.mapped) << describeWalkFault(small, 0);
  EXPECT_EQ(small.physical, 0x7123u);
  EXPECT_FALSE(small.writable);
  EXPECT_TRUE(small.user);
  EXPECT_EQ(describeWalkFault(walkPages(r, 0xc00000, m.reader()), 0),
            "#PF error code 0x0: PDE not present");
}

// SDM 4.5, table 4-19: bits 62:52 of a 4-level entry are ignored (Linux keeps software bits
// there), bits 51:MAXPHYADDR are reserved.
TEST(PageWalk, FourLevelIgnoresBits62To52) {
  Memory m;
  m.put64(0x1000, 0x2000 | P | RW);
  m.put64(0x2000, 0x3000 | P | RW);
  m.put64(0x3000, 0x4000 | P | RW | (1ull << 58) | (1ull << 52));
  m.put64(0x4000 + 5 * 8, 0x7000 | P | RW | (1ull << 62));
  PageWalk walk = walkPages(fourLevel(0x1000), 0x5000, m.reader());
  ASSERT_TRUE(walk.mapped) << describeWalkFault(walk, 0x5000);
  EXPECT_EQ(walk.physical, 0x7000u);
}

// The tables as a CPU sees them: entries read from Memory, A/D bits written back.
class CpuTables final : public PageTables {
 public:
  explicit CpuTables(Memory& m) : m(m) {}
  bool read(uint64_t address, unsigned bytes, uint64_t& entry) override {
    return m.reader()(address, bytes, entry);
  }
  void setBits(uint64_t address, unsigned bytes, uint64_t bits) override {
    uint64_t entry = 0;
    read(address, bytes, entry);
    m.put64(address, entry | bits);
  }

 private:
  Memory& m;
};

TEST(PageWalk, ACpuAccessIsCheckedAndSetsAccessedAndDirty) {
  Memory m;
  CpuTables tables(m);
  m.put64(0x1000, 0x2000 | P | RW | US);
  m.put64(0x2000, 0x3000 | P | RW | US);
  m.put64(0x3000, 0x4000 | P | RW | US);
  m.put64(0x4000 + 5 * 8, 0x7000 | P | US);  // read-only user page
  m.put64(0x4000 + 6 * 8, 0x8000 | P | RW);  // supervisor page
  PagingRegisters r = fourLevel(0x1000);
  PageAccess write{.write = true};
  // A supervisor write to a read-only page is allowed while CR0.WP is clear...
  PageWalk allowed = walkPageTables(r, 0x5000, tables, &write);
  ASSERT_TRUE(allowed.mapped) << describeWalkFault(allowed, 0x5000);
  uint64_t pte = 0;
  m.reader()(0x4000 + 5 * 8, 8, pte);
  EXPECT_EQ(pte & (A | D), A | D);
  uint64_t pml4e = 0;
  m.reader()(0x1000, 8, pml4e);
  EXPECT_TRUE(pml4e & A);
  EXPECT_FALSE(pml4e & D);  // only the final entry gets D
  // ...and a protection fault with CR0.WP: P | W.
  r.cr0 |= x86::CR0_WP;
  PageWalk denied = walkPageTables(r, 0x5000, tables, &write);
  EXPECT_FALSE(denied.mapped);
  EXPECT_EQ(denied.fault, WalkFault::PROTECTION);
  EXPECT_EQ(denied.errorCode, x86::PF_P | x86::PF_W);
  // A user read of a supervisor page: P | U.
  PageAccess userRead{.user = true};
  EXPECT_EQ(walkPageTables(r, 0x6000, tables, &userRead).errorCode, x86::PF_P | x86::PF_U);
  // A user fetch from a page that is not there: U | I (NXE is on), no P.
  PageAccess userFetch{.user = true, .execute = true};
  PageWalk absent = walkPageTables(r, 0x9000, tables, &userFetch);
  EXPECT_EQ(absent.fault, WalkFault::NOT_PRESENT);
  EXPECT_EQ(absent.errorCode, x86::PF_U | x86::PF_I);
  EXPECT_TRUE(absent.steps.empty());  // CPU accesses record no steps
}

TEST(PageWalk, PagingOff) {
  Memory m;
  PageWalk walk = walkPages(PagingRegisters{0x11, 0, 0, 0, 36}, 0x1234, m.reader());
  EXPECT_EQ(walk.mode, PagingMode::NONE);
  EXPECT_TRUE(walk.mapped);
  EXPECT_EQ(walk.physical, 0x1234u);
}

}  // namespace
}  // namespace bulkhead
