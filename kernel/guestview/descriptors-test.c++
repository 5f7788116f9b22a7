// Descriptor decoding on hand-assembled tables: code, data, system descriptors and gates in
// their 16-, 32- and 64-bit forms.
#include "kernel/guestview/descriptors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace bulkhead {
namespace {

LinearReader from(const std::vector<uint64_t>& table) {
  return [table](uint64_t address, unsigned bytes, uint8_t* out) {
    uint64_t end = table.size() * 8;
    if (address > end || bytes > end - address) return false;
    memcpy(out, reinterpret_cast<const uint8_t*>(table.data()) + address, bytes);
    return true;
  };
}

// A 16-byte IA-32e system descriptor or gate, as two words.
void tss64(std::vector<uint64_t>& t, uint64_t base, uint32_t limit, bool busy) {
  uint64_t low = (limit & 0xffff) | (base & 0xffffff) << 16 | uint64_t{busy ? 0xbu : 0x9u} << 40 |
                 uint64_t{1} << 47 | uint64_t{(limit >> 16) & 0xf} << 48 |
                 ((base >> 24) & 0xff) << 56;
  t.push_back(low);
  t.push_back(base >> 32);
}

uint64_t gate32(uint16_t selector, uint32_t offset, unsigned type, unsigned dpl) {
  return (offset & 0xffff) | uint64_t{selector} << 16 | uint64_t{type} << 40 | uint64_t{dpl} << 45 |
         uint64_t{1} << 47 | uint64_t{offset >> 16} << 48;
}

TEST(Descriptors, GdtWithCodeDataAndA64BitTss) {
  std::vector<uint64_t> gdt = {0, 0x00cf9b000000ffff, 0x00cf93000000ffff, 0x00af9b000000ffff,
                               0x0000f2000000ffff};
  tss64(gdt, 0x123456789000, 0x67, false);
  auto entries = decodeTable(TableKind::GDT, 0, gdt.size() * 8 - 1, true, from(gdt));
  ASSERT_EQ(entries.size(), 6u);
  EXPECT_EQ(entries[0].kind, "null");
  EXPECT_EQ(describe(TableKind::GDT, entries[1]),
            "0x0008 code 32-bit execute/read, accessed base 0x0 limit 0xffffffff DPL 0 present");
  EXPECT_EQ(entries[2].kind, "data");
  EXPECT_EQ(entries[2].attributes, "read/write, accessed");
  EXPECT_EQ(entries[3].width, 64u);
  EXPECT_EQ(entries[3].selector, 0x18);
  // Byte granularity, DPL 3, not accessed, 16-bit.
  EXPECT_EQ(describe(TableKind::GDT, entries[4]),
            "0x0020 data 16-bit read/write base 0x0 limit 0xffff DPL 3 present");
  EXPECT_EQ(entries[5].kind, "tss");
  EXPECT_EQ(entries[5].bytes, 16u);
  EXPECT_EQ(entries[5].base, 0x123456789000u);
  EXPECT_EQ(entries[5].limit, 0x67u);
  EXPECT_EQ(describe(TableKind::GDT, entries[5]),
            "0x0028 tss 64-bit available base 0x123456789000 limit 0x67 DPL 0 present");
}

TEST(Descriptors, LegacySystemDescriptorsAndCallGate) {
  std::vector<uint64_t> gdt = {0, 0x0000820000001000 | (uint64_t{0x20} << 56),  // LDT at 0x20000000
                               0x00008b0000000067,                              // 32-bit TSS, busy
                               gate32(0x08, 0x12345678, 0xc, 3) | uint64_t{2} << 32,
                               0x0000850000180000};  // task gate -> TSS 0x18
  auto entries = decodeTable(TableKind::GDT, 0, gdt.size() * 8 - 1, false, from(gdt));
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[1].kind, "ldt");
  EXPECT_EQ(entries[1].base, 0x20000000u);
  EXPECT_EQ(entries[2].kind, "tss");
  EXPECT_EQ(entries[2].width, 32u);
  EXPECT_EQ(entries[2].attributes, "busy");
  EXPECT_EQ(describe(TableKind::GDT, entries[3]),
            "0x0018 call gate 32-bit -> 0x0008:0x12345678 2 parameters DPL 3 present");
  EXPECT_EQ(describe(TableKind::GDT, entries[4]), "0x0020 task gate tss 0x0018 DPL 0 present");
}

TEST(Descriptors, Idt32And64) {
  std::vector<uint64_t> idt32 = {gate32(0x08, 0x00101234, 0xe, 0), gate32(0x08, 0x2000, 0xf, 3),
                                 0x0000060000000000};  // a 16-bit interrupt gate, not present
  auto legacy = decodeTable(TableKind::IDT, 0, idt32.size() * 8 - 1, false, from(idt32));
  ASSERT_EQ(legacy.size(), 3u);
  EXPECT_EQ(describe(TableKind::IDT, legacy[0]),
            "vector 0x00 interrupt gate 32-bit -> 0x0008:0x101234 DPL 0 present");
  EXPECT_EQ(legacy[1].kind, "trap gate");
  EXPECT_EQ(legacy[1].dpl, 3u);
  EXPECT_EQ(legacy[2].width, 16u);
  EXPECT_FALSE(legacy[2].present);

  std::vector<uint64_t> idt64 = {gate32(0x18, 0x89abcdef, 0xe, 0) | uint64_t{2} << 32, 0xffffffff,
                                 0x00000c0000000000, 0};  // then a reserved type
  auto wide = decodeTable(TableKind::IDT, 0, idt64.size() * 8 - 1, true, from(idt64));
  ASSERT_EQ(wide.size(), 2u);
  EXPECT_EQ(wide[0].offset, 0xffffffff89abcdefu);
  EXPECT_EQ(wide[0].ist, 2u);
  EXPECT_EQ(describe(TableKind::IDT, wide[0]),
            "vector 0x00 interrupt gate 64-bit -> 0x0018:0xffffffff89abcdef ist 2 DPL 0 present");
  EXPECT_EQ(wide[1].selector, 1);
  EXPECT_EQ(wide[1].kind, "invalid");  // a call gate has no place in the IDT
}

TEST(Descriptors, TheLimitAndUnreadableMemoryEndTheTable) {
  std::vector<uint64_t> gdt = {0, 0x00cf9b000000ffff, 0x00cf93000000ffff};
  EXPECT_EQ(decodeTable(TableKind::GDT, 0, 15, false, from(gdt)).size(), 2u);
  // A limit that claims more than memory holds stops at the first unreadable entry.
  EXPECT_EQ(decodeTable(TableKind::GDT, 0, 0xffff, false, from(gdt)).size(), 3u);
  // A half 16-byte descriptor at the end of the limit is not decoded.
  std::vector<uint64_t> cut = {0};
  tss64(cut, 0x1000, 0x67, false);
  EXPECT_EQ(decodeTable(TableKind::GDT, 0, 15, true, from(cut)).size(), 1u);
  EXPECT_TRUE(decodeTable(TableKind::IDT, 0x100000, 0xfff, true, from(gdt)).empty());
}

}  // namespace
}  // namespace bulkhead
