// The ATA disk model without a guest: IDENTIFY, LBA28 and LBA48 reads and writes through the
// data port, status and error bits, interrupts, the empty slave, software reset.
#include "servers/ide/ata.h"

#include <gtest/gtest.h>

#include <vector>

namespace bulkhead {
namespace {

constexpr uint16_t BASE = AtaDisk::COMMAND_BASE;
constexpr uint8_t BSY = 0x80, DRDY = 0x40, DRQ = 0x08, ERR = 0x01;

class AtaTest : public ::testing::Test {
 protected:
  explicit AtaTest(uint64_t sectors = 1000, bool readOnly = false)
      : image(sectors * 512),
        disk(sectors, readOnly,
             {[this](uint64_t lba, uint8_t* sector) {
                memcpy(sector, &image[lba * 512], 512);
                return true;
              },
              [this](uint64_t lba, const uint8_t* sector) {
                memcpy(&image[lba * 512], sector, 512);
                return true;
              },
              [this]() {
                ++flushes;
                return true;
              }},
             [this](bool level) { interrupt = level; }) {
    for (size_t i = 0; i < image.size(); ++i) image[i] = i * 7 + i / 512;
  }
  void lba28(uint32_t lba, uint8_t count) {
    disk.write(BASE + 6, 1, 0xe0 | (lba >> 24));
    disk.write(BASE + 2, 1, count);
    disk.write(BASE + 3, 1, lba & 0xff);
    disk.write(BASE + 4, 1, (lba >> 8) & 0xff);
    disk.write(BASE + 5, 1, (lba >> 16) & 0xff);
  }
  std::vector<uint8_t> readSector() {
    std::vector<uint8_t> sector(512);
    for (int i = 0; i < 256; ++i) {
      uint16_t word = disk.read(BASE, 2);
      sector[2 * i] = word;
      sector[2 * i + 1] = word >> 8;
    }
    return sector;
  }
  uint8_t status() { return disk.read(BASE + 7, 1); }

  std::vector<uint8_t> image;
  AtaDisk disk;
  bool interrupt = false;
  int flushes = 0;
};

TEST_F(AtaTest, PowersOnReadyWithTheAtaSignature) {
  EXPECT_EQ(status() & (BSY | DRDY), DRDY);
  EXPECT_EQ(disk.read(BASE + 2, 1), 1);
  EXPECT_EQ(disk.read(BASE + 3, 1), 1);
  EXPECT_EQ(disk.read(BASE + 4, 1), 0);
  disk.write(BASE + 6, 1, 0xb0);  // the slave: absent
  EXPECT_EQ(status(), 0);
}

TEST_F(AtaTest, IdentifySaysLbaAndTheSize) {
  disk.write(BASE + 7, 1, 0xec);
  EXPECT_TRUE(interrupt);
  EXPECT_EQ(status() & (DRQ | ERR), DRQ);
  EXPECT_FALSE(interrupt);  // the status read acknowledged it
  std::vector<uint8_t> words = readSector();
  auto word = [&](int i) { return words[2 * i] | words[2 * i + 1] << 8; };
  EXPECT_EQ(word(0), 0x0040);
  EXPECT_TRUE(word(49) & 0x0200);
  EXPECT_EQ(word(60) | word(61) << 16, 1000);
  EXPECT_TRUE(word(83) & 0x0400);  // LBA48
  EXPECT_EQ(word(100), 1000);
  EXPECT_EQ(words[54], 'U');  // model "BULKHEAD...", byte-swapped words
  EXPECT_EQ(words[55], 'B');
  EXPECT_EQ(status() & DRQ, 0);
}

TEST_F(AtaTest, ReadsSectorsWithLba28) {
  lba28(5, 2);
  disk.write(BASE + 7, 1, 0x20);
  EXPECT_EQ(status() & DRQ, DRQ);
  EXPECT_EQ(readSector(), std::vector<uint8_t>(&image[5 * 512], &image[6 * 512]));
  EXPECT_EQ(status() & DRQ, DRQ);
  EXPECT_EQ(readSector(), std::vector<uint8_t>(&image[6 * 512], &image[7 * 512]));
  EXPECT_EQ(status() & (DRQ | ERR), 0);
}

// 32-bit PIO (insl/outsl), as a small Unix reads its kernel with: four bytes per access, in
// order, across the sector boundary of a two-sector transfer; then all-ones past its end.
TEST_F(AtaTest, ThirtyTwoBitDataAccessesMoveFourBytes) {
  lba28(5, 2);
  disk.write(BASE + 7, 1, 0x20);
  std::vector<uint8_t> got;
  for (int i = 0; i < 256; ++i) {
    uint32_t dword = disk.read(BASE, 4);
    for (int b = 0; b < 4; ++b) got.push_back(static_cast<uint8_t>(dword >> (8 * b)));
  }
  EXPECT_EQ(got, std::vector<uint8_t>(&image[5 * 512], &image[7 * 512]));
  EXPECT_EQ(status() & (DRQ | ERR), 0);
  EXPECT_EQ(disk.read(BASE, 4), 0xffffffffu);

  lba28(9, 1);
  disk.write(BASE + 7, 1, 0x30);  // WRITE SECTORS
  for (uint32_t i = 0; i < 128; ++i) {
    uint32_t dword = 0;
    for (uint32_t b = 0; b < 4; ++b) dword |= ((4 * i + b) & 0xff) << (8 * b);
    disk.write(BASE, 4, dword);
  }
  EXPECT_EQ(status() & (DRQ | ERR), 0);
  for (int i = 0; i < 512; ++i) EXPECT_EQ(image[9 * 512 + i], static_cast<uint8_t>(i)) << i;
}

TEST_F(AtaTest, WritesSectorsWithLba48AndFlushes) {
  disk.write(BASE + 6, 1, 0x40);
  disk.write(BASE + 2, 1, 0);  // count high, then low
  disk.write(BASE + 2, 1, 1);
  disk.write(BASE + 3, 1, 0);  // LBA bytes 3, 4, 5 then 0, 1, 2
  disk.write(BASE + 4, 1, 0);
  disk.write(BASE + 5, 1, 0);
  disk.write(BASE + 3, 1, 200);
  disk.write(BASE + 4, 1, 3);
  disk.write(BASE + 5, 1, 0);
  disk.write(BASE + 7, 1, 0x34);
  EXPECT_EQ(status() & DRQ, DRQ);
  for (int i = 0; i < 256; ++i) disk.write(BASE, 2, 0xa500 | i);
  EXPECT_TRUE(interrupt);
  EXPECT_EQ(status() & (DRQ | ERR), 0);
  size_t at = (3 * 256 + 200) * 512;
  EXPECT_EQ(image[at], 0x00);
  EXPECT_EQ(image[at + 1], 0xa5);
  EXPECT_EQ(image[at + 510], 0xff);
  disk.write(BASE + 7, 1, 0xea);
  EXPECT_EQ(flushes, 1);
}

TEST_F(AtaTest, PastTheEndAndUnknownCommandsAbort) {
  lba28(999, 2);
  disk.write(BASE + 7, 1, 0x20);
  EXPECT_EQ(status() & ERR, ERR);
  EXPECT_EQ(disk.read(BASE + 1, 1), 0x04);  // ABRT
  disk.write(BASE + 7, 1, 0xa1);            // IDENTIFY PACKET: not ATAPI
  EXPECT_EQ(status() & ERR, ERR);
  disk.write(BASE + 6, 1, 0xa0);  // CHS: not supported
  disk.write(BASE + 7, 1, 0x20);
  EXPECT_EQ(status() & ERR, ERR);
}

TEST_F(AtaTest, ASoftwareResetRestoresTheSignature) {
  lba28(7, 1);
  disk.write(AtaDisk::CONTROL_PORT, 1, 0x04);
  disk.write(AtaDisk::CONTROL_PORT, 1, 0x00);
  EXPECT_EQ(disk.read(BASE + 2, 1), 1);
  EXPECT_EQ(disk.read(BASE + 3, 1), 1);
  EXPECT_EQ(status() & (BSY | DRQ | ERR), 0);
}

TEST_F(AtaTest, InterruptsCanBeMasked) {
  disk.write(AtaDisk::CONTROL_PORT, 1, 0x02);  // nIEN
  disk.write(BASE + 7, 1, 0xec);
  EXPECT_FALSE(interrupt);
  EXPECT_EQ(disk.read(AtaDisk::CONTROL_PORT, 1) & DRQ, DRQ);  // alternate status
}

class ReadOnlyAtaTest : public AtaTest {
 protected:
  ReadOnlyAtaTest() : AtaTest(100, true) {}
};

TEST_F(ReadOnlyAtaTest, RefusesWrites) {
  lba28(1, 1);
  disk.write(BASE + 7, 1, 0x30);
  EXPECT_EQ(status() & ERR, ERR);
}

}  // namespace
}  // namespace bulkhead
