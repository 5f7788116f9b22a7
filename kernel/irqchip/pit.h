// The i8254 programmable interval timer of a PC (ports 0x40-0x43) and the port-0x61 gate and
// output bits of its channel 2, for the software CPU; under KVM the kernel provides it.
//
// Contract: channels count down at 1.193182 MHz from the time their count was written, on the
// clock the owner gives (the host's monotonic clock, or the instruction count under
// --deterministic). Channel 0 drives ISA line 0 (modes 0, 2 and 3: an edge per terminal count);
// channel 2's output is read at port 0x61 bit 5, gated by bit 0. The guest can write anything:
// the modes a PC does not use (1, 4, 5) count like mode 0, BCD counting is taken as binary, and
// nothing a guest writes can make poll() raise more than one interrupt per call. Port handlers
// and poll() may run on any vCPU thread.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "kernel/bus/io-bus.h"

namespace bulkhead::irqchip {

class Pit final : public IoHandler {
 public:
  static constexpr uint64_t HZ = 1193182;

  // `now`: nanoseconds on the timer's clock; `pulse`: an edge on ISA line 0.
  Pit(std::function<uint64_t()> now, std::function<void()> pulse)
      : clock(std::move(now)), pulse(std::move(pulse)) {}
  absl::Status attach(IoBus& bus);

  // Raises channel 0's interrupt if its time came; returns when to call again (clock
  // nanoseconds), or UINT64_MAX when channel 0 will not fire.
  uint64_t poll();

  uint64_t read(Space space, uint64_t address, unsigned size) override;
  void write(Space space, uint64_t address, unsigned size, uint64_t value,
             bool synchronous) override;

 private:
  struct Channel {
    uint32_t reload = 0x10000;
    uint8_t mode = 0;
    uint8_t access = 3;  // 1: low byte, 2: high byte, 3: low then high
    bool writeHigh = false, readHigh = false;
    bool latched = false;
    uint16_t latch = 0;
    uint8_t pendingLow = 0;
    uint64_t start = 0;  // clock time the count was loaded (ns)
    bool counting = false;
    uint64_t nextIrq = UINT64_MAX;  // channel 0: the next terminal count (ns)
  };
  uint64_t ticksSince(const Channel& channel, uint64_t now) const;
  uint16_t count(const Channel& channel, uint64_t now) const;
  bool output(const Channel& channel, uint64_t now) const;
  void load(unsigned index, uint64_t now);
  uint64_t periodNs(const Channel& channel) const;

  std::mutex lock;
  std::function<uint64_t()> clock;
  std::function<void()> pulse;
  Channel channels[3];
  bool gate2 = false;
  uint8_t port61 = 0;
  bool refresh = false;
};

}  // namespace bulkhead::irqchip
