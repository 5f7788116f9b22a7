#include "servers/ide/ata.h"

#include <algorithm>

#include <cstring>

namespace bulkhead {

namespace {

constexpr uint8_t BSY = 0x80, DRDY = 0x40, DSC = 0x10, DRQ = 0x08, ERR = 0x01;
constexpr uint8_t ABRT = 0x04;
constexpr uint8_t CONTROL_NIEN = 0x02, CONTROL_SRST = 0x04;
constexpr uint8_t DEVICE_LBA = 0x40;

enum Command : uint8_t {
  READ_SECTORS = 0x20,
  READ_SECTORS_EXT = 0x24,
  WRITE_SECTORS = 0x30,
  WRITE_SECTORS_EXT = 0x34,
  INITIALIZE_DEVICE_PARAMETERS = 0x91,
  FLUSH_CACHE = 0xe7,
  FLUSH_CACHE_EXT = 0xea,
  IDENTIFY_DEVICE = 0xec,
  SET_FEATURES = 0xef,
};

// ATA strings: space-padded, two characters to a word, the first in the high byte.
void putString(uint16_t* words, size_t count, const std::string& text) {
  for (size_t i = 0; i < count * 2; ++i) {
    char c = i < text.size() ? text[i] : ' ';
    if (i % 2 == 0) {
      words[i / 2] = static_cast<uint16_t>(c) << 8;
    } else {
      words[i / 2] |= static_cast<uint8_t>(c);
    }
  }
}

}  // namespace

AtaDisk::AtaDisk(uint64_t sectors, bool readOnly, Storage storage, std::function<void(bool)> irq)
    : sectors(sectors), readOnly(readOnly), storage(std::move(storage)), irq(std::move(irq)) {
  s.status = DRDY | DSC;
  s.count = 1;
  s.lbaLow = 1;  // the ATA signature after power-on: count 1, LBA 1, cylinder 0
  s.device = 0xa0;
}

void AtaDisk::raise() {
  if (s.control & CONTROL_NIEN) return;
  s.irq = 1;
  irq(true);
}

uint32_t AtaDisk::read(uint16_t port, unsigned size) {
  if (port == CONTROL_PORT) return selectedMaster() ? s.status : 0;   // alternate status
  if (!selectedMaster()) return port == COMMAND_BASE + 7 ? 0 : 0xff;  // no slave
  switch (port - COMMAND_BASE) {
    case 0: {  // data: 16-bit, or 32-bit as the PIIX passes it on (two words), in order
      uint32_t value = 0;
      for (unsigned i = 0; i < std::min(size, 4u); ++i) {
        if (!(s.status & DRQ) || (s.command != READ_SECTORS && s.command != READ_SECTORS_EXT &&
                                  s.command != IDENTIFY_DEVICE)) {
          value |= 0xffu << (8 * i);  // past the transfer's end: all-ones
          continue;
        }
        value |= static_cast<uint32_t>(s.buffer[s.offset++]) << (8 * i);
        if (s.offset >= SECTOR) sectorDone();
      }
      return value;
    }
    case 1:
      return s.error;
    case 2:
      return s.count;
    case 3:
      return s.lbaLow;
    case 4:
      return s.lbaMid;
    case 5:
      return s.lbaHigh;
    case 6:
      return s.device;
    default:  // 7: status; reading it acknowledges the interrupt
      if (s.irq) {
        s.irq = 0;
        irq(false);
      }
      return s.status;
  }
}

void AtaDisk::write(uint16_t port, unsigned size, uint32_t value) {
  if (port == CONTROL_PORT) {
    bool reset = (s.control & CONTROL_SRST) && !(value & CONTROL_SRST);
    s.control = value;
    if (reset) {  // the end of a software reset: the signature, ready
      s.count = 1;
      s.lbaLow = 1;
      s.lbaMid = s.lbaHigh = 0;
      s.error = 1;  // diagnostic: no error
      s.status = DRDY | DSC;
      s.command = 0;
    }
    return;
  }
  uint8_t byte = value;
  switch (port - COMMAND_BASE) {
    case 0:  // data
      for (unsigned i = 0; i < std::min(size, 4u); ++i) {
        if (!selectedMaster() || !(s.status & DRQ) ||
            (s.command != WRITE_SECTORS && s.command != WRITE_SECTORS_EXT)) {
          return;
        }
        s.buffer[s.offset++] = static_cast<uint8_t>(value >> (8 * i));
        if (s.offset >= SECTOR) sectorDone();
      }
      return;
    case 1:
      s.features = byte;
      return;
    case 2:
      s.hob[0] = s.count;
      s.count = byte;
      return;
    case 3:
      s.hob[1] = s.lbaLow;
      s.lbaLow = byte;
      return;
    case 4:
      s.hob[2] = s.lbaMid;
      s.lbaMid = byte;
      return;
    case 5:
      s.hob[3] = s.lbaHigh;
      s.lbaHigh = byte;
      return;
    case 6:
      s.device = byte;
      return;
    default:
      if (selectedMaster()) execute(byte);
      return;
  }
}

void AtaDisk::fail() {
  s.command = 0;
  s.error = ABRT;
  s.status = DRDY | DSC | ERR;
  raise();
}

void AtaDisk::execute(uint8_t command) {
  s.error = 0;
  switch (command) {
    case IDENTIFY_DEVICE:
      identify();
      return;
    case READ_SECTORS:
    case WRITE_SECTORS:
      startTransfer(command, false);
      return;
    case READ_SECTORS_EXT:
    case WRITE_SECTORS_EXT:
      startTransfer(command, true);
      return;
    case FLUSH_CACHE:
    case FLUSH_CACHE_EXT:
      if (!storage.flush()) return fail();
      s.status = DRDY | DSC;
      raise();
      return;
    case SET_FEATURES:
    case INITIALIZE_DEVICE_PARAMETERS:
      s.status = DRDY | DSC;
      raise();
      return;
    default:
      fail();
      return;
  }
}

void AtaDisk::identify() {
  uint16_t words[256] = {};
  words[0] = 0x0040;  // fixed disk
  uint64_t chsSectors = sectors < 16383ull * 16 * 63 ? sectors : 16383ull * 16 * 63;
  words[1] = words[54] = chsSectors / (16 * 63);  // cylinders
  words[3] = words[55] = 16;                      // heads
  words[6] = words[56] = 63;                      // sectors per track
  putString(&words[10], 10, "BULKHEAD0001");
  putString(&words[23], 4, "1.0");
  putString(&words[27], 20, "BULKHEAD IDE DISK");
  words[47] = 0x8001;  // one sector per READ/WRITE MULTIPLE (not offered beyond that)
  words[49] = 0x0200;  // LBA
  words[53] = 0x0007;
  uint64_t lba28 = sectors < 0x0fffffff ? sectors : 0x0fffffff;
  words[57] = chsSectors & 0xffff;
  words[58] = chsSectors >> 16;
  words[60] = lba28 & 0xffff;
  words[61] = lba28 >> 16;
  words[80] = 0x007e;  // ATA-1 to ATA-6
  words[82] = 0x4000;
  words[83] = 0x4000 | 0x0400 | 0x1000;  // LBA48, FLUSH CACHE EXT
  words[84] = 0x4000;
  words[85] = 0x4000;
  words[86] = 0x0400 | 0x1000;
  words[87] = 0x4000;
  for (int i = 0; i < 4; ++i) words[100 + i] = sectors >> (16 * i);
  memcpy(s.buffer, words, SECTOR);
  s.command = IDENTIFY_DEVICE;
  s.remaining = 0;
  s.offset = 0;
  s.status = DRDY | DSC | DRQ;
  raise();
}

void AtaDisk::startTransfer(uint8_t command, bool lba48) {
  if (!(s.device & DEVICE_LBA)) return fail();  // CHS addressing: not supported
  uint64_t lba;
  uint32_t count;
  if (lba48) {
    lba = static_cast<uint64_t>(s.lbaLow) | static_cast<uint64_t>(s.lbaMid) << 8 |
          static_cast<uint64_t>(s.lbaHigh) << 16 | static_cast<uint64_t>(s.hob[1]) << 24 |
          static_cast<uint64_t>(s.hob[2]) << 32 | static_cast<uint64_t>(s.hob[3]) << 40;
    count = s.count | s.hob[0] << 8;
    if (count == 0) count = 65536;
  } else {
    lba = s.lbaLow | s.lbaMid << 8 | s.lbaHigh << 16 | (s.device & 0x0f) << 24;
    count = s.count == 0 ? 256 : s.count;
  }
  bool writing = command == WRITE_SECTORS || command == WRITE_SECTORS_EXT;
  if (lba >= sectors || count > sectors - lba || (writing && readOnly)) return fail();
  s.command = command;
  s.lba = lba;
  s.remaining = count - 1;
  s.offset = 0;
  if (writing) {
    s.status = DRDY | DSC | DRQ;  // the host sends the first sector; no interrupt yet
    return;
  }
  if (!storage.read(s.lba, s.buffer)) return fail();
  s.status = DRDY | DSC | DRQ;
  raise();
}

void AtaDisk::sectorDone() {
  s.offset = 0;
  if (s.command == WRITE_SECTORS || s.command == WRITE_SECTORS_EXT) {
    if (!storage.write(s.lba, s.buffer)) return fail();
  }
  if (s.remaining == 0 || s.command == IDENTIFY_DEVICE) {
    // A write interrupts once its last sector is on disk; a read's last interrupt came with
    // its data.
    bool writing = s.command == WRITE_SECTORS || s.command == WRITE_SECTORS_EXT;
    s.command = 0;
    s.status = DRDY | DSC;
    if (writing) raise();
    return;
  }
  --s.remaining;
  ++s.lba;
  if (s.command == READ_SECTORS || s.command == READ_SECTORS_EXT) {
    if (!storage.read(s.lba, s.buffer)) return fail();
  }
  s.status = DRDY | DSC | DRQ;
  raise();
}

}  // namespace bulkhead
