// The two cascaded i8259A interrupt controllers of a PC (ports 0x20-0x21, 0xa0-0xa1, and the
// edge/level control registers at 0x4d0-0x4d1), for the software CPU; under KVM the kernel
// provides them.
//
// Contract: setLine() may be called from any thread; acknowledge() and the port handlers run
// on a vCPU thread. A guest can program anything: every command is taken as the 8259A's
// datasheet says, and modes the chip has but PCs do not use (8080 mode, buffered mode, special
// fully nested mode) are accepted and ignored. `onOutput` runs (on the calling thread) when
// the master's output may have become asserted.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "kernel/bus/io-bus.h"

namespace bulkhead::irqchip {

class Pic final : public IoHandler {
 public:
  explicit Pic(std::function<void()> onOutput) : onOutput(std::move(onOutput)) {}
  absl::Status attach(IoBus& bus);

  // ISA line 0-15 (2 is the cascade and cannot be driven).
  void setLine(unsigned line, bool level);
  // INTA: the vector of the interrupt to take, or -1 when none is pending and unmasked.
  int acknowledge();

  uint64_t read(Space space, uint64_t address, unsigned size) override;
  void write(Space space, uint64_t address, unsigned size, uint64_t value,
             bool synchronous) override;

 private:
  struct Chip {
    uint8_t irr = 0, isr = 0, imr = 0xff, levels = 0, elcr = 0;
    uint8_t vectorBase = 0;
    uint8_t initStep = 0;  // 0: running; 1-3: expecting ICW2-ICW4
    bool needIcw4 = false, single = false, autoEoi = false, readIsr = false;
    uint8_t lowestPriority = 7;  // rotation: the IRQ with the lowest priority
    int pending() const;         // the highest-priority IRQ to raise, or -1
  };
  void setChipLine(Chip& chip, unsigned irq, bool level);
  void writeCommand(Chip& chip, uint8_t value);
  void writeData(Chip& chip, uint8_t value);
  void updateCascade();
  bool outputLocked();

  std::mutex lock;
  Chip chips[2];
  std::function<void()> onOutput;
};

}  // namespace bulkhead::irqchip
