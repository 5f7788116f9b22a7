// The PC's interrupt controllers and timer where the core emulates them (the software CPU; a KVM
// split irqchip could use the same): the i8259A pair (pic.h), the IOAPIC (ioapic.h) and, when
// the machine has one, the i8254 PIT (pit.h), wired as a PC wires them: GSIs 0-15 reach both
// the PIC and the IOAPIC, 16-23 the IOAPIC alone, the PIT's channel 0 is line 0. Local APICs
// (lapic.h) belong to their vCPUs; IOAPIC messages reach them through `Wiring::deliver`.
//
// Contract: setLine() may be called from any thread; the rest runs on vCPU threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include <absl/status/statusor.h>

#include "kernel/bus/io-bus.h"
#include "kernel/irqchip/ioapic.h"
#include "kernel/irqchip/pic.h"
#include "kernel/irqchip/pit.h"

namespace bulkhead {

class IrqChip {
 public:
  struct Wiring {
    // The timers' clock in nanoseconds.
    std::function<uint64_t()> clock;
    // The PIC's output, or an IOAPIC pin in ExtINT mode, may have become asserted.
    std::function<void()> picOutput;
    // An IOAPIC message for the local APICs.
    std::function<void(uint8_t vector, bool level, uint8_t destination, bool logical)> deliver;
  };

  // Claims the controllers' ports and MMIO (and the PIT's, with `pit`) on `bus`.
  static absl::StatusOr<std::unique_ptr<IrqChip>> create(IoBus& bus, Wiring wiring, bool pit);

  // GSI numbering: ISA lines 0-15, PCI lines 16-23.
  absl::Status setLine(uint32_t gsi, bool level);
  // INTA through the PIC: its vector, or -1 when nothing is pending and unmasked.
  int acknowledgePic() { return pic.acknowledge(); }
  // Whether an IOAPIC pin in ExtINT mode fired since the last call (the PIC gives the vector).
  bool takeExtint() { return extint.exchange(false); }
  // A local APIC's EOI of a level-triggered vector, for the IOAPIC.
  void endOfInterrupt(uint8_t vector) { ioapic.endOfInterrupt(vector); }
  // Fires the PIT's interrupt if due; returns when to look again (clock time), UINT64_MAX for
  // never.
  uint64_t pollTimer() { return pit == nullptr ? UINT64_MAX : pit->poll(); }

 private:
  explicit IrqChip(Wiring wiring);

  Wiring wiring;
  irqchip::Pic pic;
  irqchip::Ioapic ioapic;
  std::unique_ptr<irqchip::Pit> pit;
  std::atomic<bool> extint{false};
};

}  // namespace bulkhead
