// The MC146818 real-time clock and its 128 bytes of CMOS RAM, at ports 0x70 (index; bit 7
// masks NMI) and 0x71 (data), as a PC BIOS reads them.
//
// Contract: the clock registers (0x00-0x09) read the host's wall-clock time in BCD and 24-hour
// form (status B = 0x02), never mid-update (status A's UIP bit stays clear); status D says the
// CMOS is valid. The memory-size bytes are filled from the guest's RAM as SeaBIOS and older
// BIOSes expect: 0x15-0x16 base memory (640 KiB), 0x17-0x18 and 0x30-0x31 KiB above 1 MiB (at
// most 63 MiB), 0x34-0x35 64 KiB units above 16 MiB below the PCI hole, 0x5b-0x5d 64 KiB units
// above 4 GiB, 0x5f the number of CPUs less one. Every other byte is RAM the guest may write
// (the clock registers too: writes are kept but reads keep showing the host's time). Its owner
// may give another clock (setClock): the server's time= option, a clock that does not move.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>

namespace bulkhead {

class Cmos {
 public:
  static constexpr uint16_t INDEX_PORT = 0x70;
  static constexpr uint16_t DATA_PORT = 0x71;

  // `lowRam`: bytes below the PCI hole; `highRam`: bytes above 4 GiB.
  Cmos(uint64_t lowRam, uint64_t highRam, unsigned cpus);

  uint8_t read(uint16_t port);
  void write(uint16_t port, uint8_t value);

  // Where the time comes from (the host's wall clock unless set).
  void setClock(std::function<time_t()> clock) { now = std::move(clock); }

  // The registers a restarted server must keep (what the guest wrote, and its index).
  struct State {
    uint8_t index;
    uint8_t bytes[128];
  };
  State& state() { return saved; }

 private:
  uint8_t clockRegister(uint8_t index);

  State saved{};
  std::function<time_t()> now = [] { return time(nullptr); };
};

}  // namespace bulkhead
