// The I/O APIC of a PC (82093AA-compatible, version 0x20, 24 pins) at 0xfec00000, for the
// software CPU; under KVM the kernel provides it. It turns interrupt lines (GSIs 0-23: the ISA
// lines one to one, then the PCI lines the MP table lists) into messages to a local APIC.
//
// Contract: setLine() may be called from any thread; the MMIO handlers and endOfInterrupt()
// run on a vCPU thread. An edge pin sends one message per rising edge; a level pin sends one
// when it is asserted and unmasked, then waits for the local APIC's end-of-interrupt of that
// vector (remote IRR) before it sends again. `deliver` is called with the IOAPIC's lock held
// and must not call back into it. A guest can write anything: reserved bits read back as
// written except the read-only ones (delivery status, remote IRR); a redirection entry with a
// vector below 16 is taken as written (a real APIC would flag an illegal vector; Linux never
// programs one); NMI, SMI and INIT messages are dropped. The owner delivers each message to
// the first local APIC its destination matches (lowest priority is not arbitrated).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "kernel/bus/io-bus.h"

namespace bulkhead::irqchip {

class Ioapic final : public IoHandler {
 public:
  static constexpr unsigned PINS = 24;
  // Delivery modes (bits 8-10 of an entry) the software CPU tells apart.
  static constexpr unsigned MODE_EXTINT = 7;

  // `deliver(vector, level, destination, logical)`: a fixed or lowest-priority message for the
  // APIC(s) `destination` names (Lapic::matches()); `extint()`: an ExtINT pin fired (the vector
  // comes from the PIC when the CPU acknowledges).
  using Deliver =
      std::function<void(uint8_t vector, bool level, uint8_t destination, bool logical)>;
  Ioapic(Deliver deliver, std::function<void()> extint)
      : deliver(std::move(deliver)), extint(std::move(extint)) {
    for (uint64_t& entry : entries) entry = MASKED;
  }
  absl::Status attach(IoBus& bus, uint64_t base);

  void setLine(unsigned pin, bool level);
  // A local APIC's EOI of a level-triggered `vector`: clears remote IRR, sends again if the
  // line is still asserted.
  void endOfInterrupt(uint8_t vector);

  uint64_t read(Space space, uint64_t address, unsigned size) override;
  void write(Space space, uint64_t address, unsigned size, uint64_t value,
             bool synchronous) override;

  // For tests: a redirection entry as the guest would read it.
  uint64_t entry(unsigned pin);

 private:
  static constexpr uint64_t MASKED = 1ull << 16, LEVEL = 1ull << 15, REMOTE_IRR = 1ull << 14;
  void service(unsigned pin);  // with the lock held

  std::mutex lock;
  Deliver deliver;
  std::function<void()> extint;
  uint64_t base = 0;
  uint8_t select = 0;
  uint8_t id = 0;
  uint64_t entries[PINS];
  bool asserted[PINS] = {};
};

}  // namespace bulkhead::irqchip
