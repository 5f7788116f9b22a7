// The primary IDE channel's master disk: an ATA device driven by PIO through the command block
// (0x1f0-0x1f7) and the control block (0x3f6), interrupting on IRQ 14.
//
// Contract: IDENTIFY DEVICE (LBA28 and LBA48, no DMA), READ/WRITE SECTORS and their EXT
// forms, FLUSH CACHE (EXT), SET FEATURES and INITIALIZE DEVICE PARAMETERS (accepted), a
// software reset through the device control register; every other command aborts (status ERR,
// error ABRT), as do transfers past the end of the disk. CHS addressing is not supported (LBA
// mode is required: the device register's bit 6). The slave position is empty: selecting it
// reads status 0. Transfers are whole 512-byte sectors moved 16 bits at a time through the data
// port; the status register's read clears the interrupt, as on real drives.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace bulkhead {

class AtaDisk {
 public:
  static constexpr uint16_t COMMAND_BASE = 0x1f0;
  static constexpr uint16_t CONTROL_PORT = 0x3f6;
  static constexpr uint64_t SECTOR = 512;

  // Where the sectors are; each returns whether the whole sector moved.
  struct Storage {
    std::function<bool(uint64_t lba, uint8_t* sector)> read;
    std::function<bool(uint64_t lba, const uint8_t* sector)> write;
    std::function<bool()> flush;
  };

  AtaDisk(uint64_t sectors, bool readOnly, Storage storage, std::function<void(bool)> irq);

  uint32_t read(uint16_t port, unsigned size);
  void write(uint16_t port, unsigned size, uint32_t value);

  // The registers and the sector buffer: what a restarted server must keep.
  struct State {
    uint8_t features, count, lbaLow, lbaMid, lbaHigh, device, status, error, control;
    uint8_t hob[4];   // the previous count, lbaLow, lbaMid, lbaHigh writes (LBA48)
    uint8_t command;  // the transfer in progress (0: none)
    uint8_t irq;
    uint32_t remaining;  // sectors still to move after the current one
    uint64_t lba;        // the current sector
    uint16_t offset;     // bytes of the buffer moved so far
    uint8_t buffer[SECTOR];
  };
  State& state() { return s; }

 private:
  void execute(uint8_t command);
  void startTransfer(uint8_t command, bool lba48);
  void sectorDone();
  void fail();
  void identify();
  void raise();
  bool selectedMaster() const { return !(s.device & 0x10); }

  uint64_t sectors;
  bool readOnly;
  Storage storage;
  std::function<void(bool)> irq;
  State s{};
};

}  // namespace bulkhead
