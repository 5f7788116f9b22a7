#include "kernel/irqchip/ioapic.h"

#include "kernel/base/status-macros.h"

namespace bulkhead::irqchip {

namespace {
// Registers reached through the select register (offset 0) and the window (offset 0x10).
constexpr uint8_t REG_ID = 0, REG_VERSION = 1, REG_ARBITRATION = 2, REG_TABLE = 0x10;
constexpr uint32_t VERSION = 0x20 | ((Ioapic::PINS - 1) << 16);
constexpr uint64_t WINDOW = 0x10, EOI = 0x40;
// Bits a guest cannot set: delivery status (12) and remote IRR (14).
constexpr uint64_t READ_ONLY = (1ull << 12) | (1ull << 14);
}  // namespace

absl::Status Ioapic::attach(IoBus& bus, uint64_t address) {
  base = address;
  return bus.add(Space::MMIO, address, 0x1000, Route{this, false, "ioapic"});
}

void Ioapic::setLine(unsigned pin, bool level) {
  if (pin >= PINS) return;
  std::lock_guard<std::mutex> guard(lock);
  bool rising = level && !asserted[pin];
  asserted[pin] = level;
  if (rising || (entries[pin] & LEVEL)) service(pin);
}

void Ioapic::service(unsigned pin) {
  uint64_t& entry = entries[pin];
  if ((entry & MASKED) || !asserted[pin]) return;
  bool level = entry & LEVEL;
  if (level) {
    if (entry & REMOTE_IRR) return;
    entry |= REMOTE_IRR;
  }
  unsigned mode = (entry >> 8) & 7;
  if (mode == MODE_EXTINT) {
    extint();
  } else if (mode <= 1) {  // fixed, lowest priority
    deliver(static_cast<uint8_t>(entry), level, static_cast<uint8_t>(entry >> 56),
            entry & (1ull << 11));
  }
}

void Ioapic::endOfInterrupt(uint8_t vector) {
  std::lock_guard<std::mutex> guard(lock);
  for (unsigned pin = 0; pin < PINS; ++pin) {
    uint64_t& entry = entries[pin];
    if ((entry & REMOTE_IRR) && static_cast<uint8_t>(entry) == vector) {
      entry &= ~REMOTE_IRR;
      service(pin);
    }
  }
}

uint64_t Ioapic::entry(unsigned pin) {
  std::lock_guard<std::mutex> guard(lock);
  return pin < PINS ? entries[pin] : 0;
}

uint64_t Ioapic::read(Space, uint64_t address, unsigned) {
  std::lock_guard<std::mutex> guard(lock);
  uint64_t offset = address - base;
  if (offset == 0) return select;
  if (offset != WINDOW) return 0;
  switch (select) {
    case REG_ID:
      return static_cast<uint32_t>(id) << 24;
    case REG_VERSION:
      return VERSION;
    case REG_ARBITRATION:
      return static_cast<uint32_t>(id) << 24;
    default:
      break;
  }
  unsigned index = select - REG_TABLE;
  if (select < REG_TABLE || index / 2 >= PINS) return 0;
  uint64_t value = entries[index / 2];
  return index % 2 ? value >> 32 : value & 0xffffffff;
}

void Ioapic::write(Space, uint64_t address, unsigned, uint64_t value, bool) {
  uint64_t offset = address - base;
  if (offset == EOI) {
    endOfInterrupt(static_cast<uint8_t>(value));
    return;
  }
  std::lock_guard<std::mutex> guard(lock);
  if (offset == 0) {
    select = static_cast<uint8_t>(value);
    return;
  }
  if (offset != WINDOW) return;
  if (select == REG_ID) {
    id = (value >> 24) & 0xf;
    return;
  }
  unsigned index = select - REG_TABLE;
  if (select < REG_TABLE || index / 2 >= PINS) return;
  uint64_t& entry = entries[index / 2];
  uint64_t written = static_cast<uint32_t>(value);
  uint64_t updated = index % 2
                         ? (entry & 0xffffffffull) | (written << 32)
                         : (entry & ~0xffffffffull) | (written & ~READ_ONLY) | (entry & READ_ONLY);
  // Switching a pin to edge clears remote IRR, as the 82093AA does.
  if (!(updated & LEVEL)) updated &= ~REMOTE_IRR;
  entry = updated;
  if (updated & LEVEL) service(index / 2);  // unmasking an asserted level pin sends it
}

}  // namespace bulkhead::irqchip
