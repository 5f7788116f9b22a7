#include "kernel/irqchip/irqchip.h"

#include <absl/strings/str_format.h>

#include "kernel/base/status-macros.h"
#include "kernel/boot/mp-table.h"

namespace bulkhead {

IrqChip::IrqChip(Wiring wiring)
    : wiring(std::move(wiring)),
      pic([this]() { this->wiring.picOutput(); }),
      ioapic([this](uint8_t vector, bool level, uint8_t destination,
                    bool logical) { this->wiring.deliver(vector, level, destination, logical); },
             [this]() {
               extint = true;
               this->wiring.picOutput();
             }) {}

absl::StatusOr<std::unique_ptr<IrqChip>> IrqChip::create(IoBus& bus, Wiring wiring, bool pit) {
  std::unique_ptr<IrqChip> chip(new IrqChip(std::move(wiring)));
  RETURN_IF_ERROR(chip->pic.attach(bus));
  RETURN_IF_ERROR(chip->ioapic.attach(bus, IOAPIC_ADDRESS));
  if (pit) {
    IrqChip* raw = chip.get();
    chip->pit = std::make_unique<irqchip::Pit>(raw->wiring.clock, [raw]() {
      raw->setLine(0, true).IgnoreError();
      raw->setLine(0, false).IgnoreError();
    });
    RETURN_IF_ERROR(chip->pit->attach(bus));
  }
  return chip;
}

absl::Status IrqChip::setLine(uint32_t gsi, bool level) {
  if (gsi >= irqchip::Ioapic::PINS) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GSI %u is beyond the IOAPIC's %u pins", gsi, irqchip::Ioapic::PINS));
  }
  if (gsi < 16) pic.setLine(gsi, level);
  ioapic.setLine(gsi, level);
  return absl::OkStatus();
}

}  // namespace bulkhead
