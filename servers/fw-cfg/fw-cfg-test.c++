// fw_cfg without a guest: the selector/data protocol, the fixed items, the file directory.
#include "servers/fw-cfg/fw-cfg.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

std::vector<uint8_t> item(FwCfg& fw, uint16_t selector, size_t bytes) {
  fw.write(FwCfg::SELECTOR_PORT, 2, selector);
  std::vector<uint8_t> out;
  for (size_t i = 0; i < bytes; ++i) out.push_back(fw.read(FwCfg::DATA_PORT));
  return out;
}

uint64_t little(const std::vector<uint8_t>& bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

TEST(FwCfg, SignatureIdRamAndCpus) {
  FwCfg fw(256ull << 20, 2, {});
  EXPECT_EQ(item(fw, 0x00, 4), (std::vector<uint8_t>{'Q', 'E', 'M', 'U'}));
  EXPECT_EQ(little(item(fw, 0x01, 4)), 1u);  // traditional interface, no DMA
  EXPECT_EQ(little(item(fw, 0x03, 8)), 256ull << 20);
  EXPECT_EQ(little(item(fw, 0x05, 2)), 2u);
  // Past an item's end, and an unknown item, read 0.
  EXPECT_EQ(item(fw, 0x00, 6), (std::vector<uint8_t>{'Q', 'E', 'M', 'U', 0, 0}));
  EXPECT_EQ(item(fw, 0x1234, 2), (std::vector<uint8_t>{0, 0}));
  // Architecture-specific items (bit 15) are not the generic ones: none here.
  EXPECT_EQ(item(fw, 0x8000, 2), (std::vector<uint8_t>{0, 0}));
  EXPECT_EQ(item(fw, 0x4000, 1), (std::vector<uint8_t>{'Q'}));  // bit 14: write channel
}

TEST(FwCfg, SelectingRestartsTheItem) {
  FwCfg fw(64 << 20, 1, {});
  EXPECT_EQ(item(fw, 0x00, 2), (std::vector<uint8_t>{'Q', 'E'}));
  EXPECT_EQ(item(fw, 0x00, 2), (std::vector<uint8_t>{'Q', 'E'}));
  fw.write(FwCfg::SELECTOR_PORT, 1, 0x03);  // only 16-bit selector writes count
  EXPECT_EQ(fw.read(FwCfg::DATA_PORT), 'M');
}

TEST(FwCfg, TheFileDirectoryListsTheFiles) {
  FwCfg fw(64 << 20, 1, {{"etc/e820", std::vector<uint8_t>(40, 7)}, {"bootorder", {'/', 'x'}}});
  std::vector<uint8_t> directory = item(fw, 0x19, 4 + 2 * 64);
  EXPECT_EQ(directory[3], 2);  // count, big-endian
  const uint8_t* first = &directory[4];
  EXPECT_EQ(first[3], 40);                    // size, big-endian
  EXPECT_EQ(first[4] << 8 | first[5], 0x20);  // selector, big-endian
  EXPECT_STREQ(reinterpret_cast<const char*>(first + 8), "etc/e820");
  const uint8_t* second = first + 64;
  EXPECT_EQ(second[4] << 8 | second[5], 0x21);
  EXPECT_STREQ(reinterpret_cast<const char*>(second + 8), "bootorder");
  EXPECT_EQ(item(fw, 0x20, 2), (std::vector<uint8_t>{7, 7}));
  EXPECT_EQ(item(fw, 0x21, 3), (std::vector<uint8_t>{'/', 'x', 0}));
}

}  // namespace
}  // namespace bulkhead
