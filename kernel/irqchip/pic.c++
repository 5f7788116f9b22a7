#include "kernel/irqchip/pic.h"

#include "kernel/base/status-macros.h"

namespace bulkhead::irqchip {

namespace {
constexpr unsigned CASCADE = 2;
}

absl::Status Pic::attach(IoBus& bus) {
  RETURN_IF_ERROR(bus.add(Space::PIO, 0x20, 2, Route{this, false, "pic"}));
  RETURN_IF_ERROR(bus.add(Space::PIO, 0xa0, 2, Route{this, false, "pic"}));
  return bus.add(Space::PIO, 0x4d0, 2, Route{this, false, "pic"});
}

int Pic::Chip::pending() const {
  uint8_t requested = irr & ~imr;
  if (requested == 0) return -1;
  // Priorities rotate: the IRQ after lowestPriority is the highest.
  for (unsigned step = 1; step <= 8; ++step) {
    unsigned irq = (lowestPriority + step) & 7;
    if (isr & (1 << irq)) return -1;  // an equal or higher one is in service
    if (requested & (1 << irq)) return static_cast<int>(irq);
  }
  return -1;
}

void Pic::setChipLine(Chip& chip, unsigned irq, bool level) {
  uint8_t bit = 1 << irq;
  bool was = chip.levels & bit;
  if (level) {
    chip.levels |= bit;
    if ((chip.elcr & bit) || !was) chip.irr |= bit;  // level: while high; edge: on rising
  } else {
    chip.levels &= ~bit;
    if (chip.elcr & bit) chip.irr &= ~bit;
  }
}

void Pic::updateCascade() { setChipLine(chips[0], CASCADE, chips[1].pending() >= 0); }

bool Pic::outputLocked() {
  updateCascade();
  return chips[0].pending() >= 0;
}

void Pic::setLine(unsigned line, bool level) {
  if (line >= 16 || line == CASCADE) return;
  bool raised;
  {
    std::lock_guard<std::mutex> guard(lock);
    setChipLine(chips[line / 8], line % 8, level);
    raised = outputLocked();
  }
  if (raised) onOutput();
}

int Pic::acknowledge() {
  std::lock_guard<std::mutex> guard(lock);
  updateCascade();
  Chip& master = chips[0];
  int irq = master.pending();
  if (irq < 0) return -1;
  auto take = [](Chip& chip, int line) {
    uint8_t bit = 1 << line;
    if (!(chip.elcr & bit)) chip.irr &= ~bit;
    if (!chip.autoEoi) chip.isr |= bit;
    return chip.vectorBase + line;
  };
  if (irq == static_cast<int>(CASCADE)) {
    Chip& slave = chips[1];
    int slaveIrq = slave.pending();
    take(master, irq);
    if (slaveIrq < 0) return slave.vectorBase + 7;  // spurious, as the chip answers
    int vector = take(slave, slaveIrq);
    updateCascade();
    return vector;
  }
  return take(master, irq);
}

void Pic::writeCommand(Chip& chip, uint8_t value) {
  if (value & 0x10) {  // ICW1
    chip.initStep = 1;
    chip.needIcw4 = value & 1;
    chip.single = value & 2;
    chip.imr = 0;
    chip.isr = 0;
    chip.irr = 0;
    chip.lowestPriority = 7;
    chip.readIsr = false;
    return;
  }
  if (value & 0x08) {  // OCW3
    if (value & 0x02) chip.readIsr = value & 0x01;
    return;
  }
  // OCW2: end of interrupt, with or without rotation.
  unsigned command = value >> 5;
  switch (command) {
    case 1:    // non-specific EOI
    case 5: {  // rotate on non-specific EOI
      for (unsigned step = 1; step <= 8; ++step) {
        unsigned irq = (chip.lowestPriority + step) & 7;
        if (chip.isr & (1 << irq)) {
          chip.isr &= ~(1 << irq);
          if (command == 5) chip.lowestPriority = irq;
          break;
        }
      }
      break;
    }
    case 3:  // specific EOI
      chip.isr &= ~(1 << (value & 7));
      break;
    case 7:  // rotate on specific EOI
      chip.isr &= ~(1 << (value & 7));
      chip.lowestPriority = value & 7;
      break;
    case 6:  // set priority
      chip.lowestPriority = value & 7;
      break;
    default:
      break;
  }
  // A level-triggered line still high asks again after its EOI.
  chip.irr |= chip.levels & chip.elcr;
}

void Pic::writeData(Chip& chip, uint8_t value) {
  switch (chip.initStep) {
    case 1:
      chip.vectorBase = value & 0xf8;
      chip.initStep = chip.single ? (chip.needIcw4 ? 3 : 0) : 2;
      return;
    case 2:
      chip.initStep = chip.needIcw4 ? 3 : 0;
      return;
    case 3:
      chip.autoEoi = value & 2;
      chip.initStep = 0;
      return;
    default:
      chip.imr = value;
      return;
  }
}

uint64_t Pic::read(Space, uint64_t address, unsigned) {
  std::lock_guard<std::mutex> guard(lock);
  if (address >= 0x4d0) return chips[address - 0x4d0].elcr;
  Chip& chip = chips[address >= 0xa0];
  if (address & 1) return chip.imr;
  return chip.readIsr ? chip.isr : chip.irr;
}

void Pic::write(Space, uint64_t address, unsigned, uint64_t value, bool) {
  bool raised;
  {
    std::lock_guard<std::mutex> guard(lock);
    uint8_t byte = static_cast<uint8_t>(value);
    if (address >= 0x4d0) {
      // IRQs 0, 1, 2, 8 and 13 are edge-triggered on a PC.
      chips[address - 0x4d0].elcr = byte & (address == 0x4d0 ? 0xf8 : 0xde);
    } else {
      Chip& chip = chips[address >= 0xa0];
      if (address & 1) {
        writeData(chip, byte);
      } else {
        writeCommand(chip, byte);
      }
    }
    raised = outputLocked();
  }
  if (raised) onOutput();
}

}  // namespace bulkhead::irqchip
