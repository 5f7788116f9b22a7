#include "kernel/irqchip/lapic.h"

#include <algorithm>
#include <iterator>
#include <optional>

namespace bulkhead::irqchip {

namespace {
constexpr uint32_t MASKED = 1u << 16;
constexpr uint32_t PERIODIC = 1u << 17;
constexpr uint32_t EXTINT = 7u << 8;
constexpr uint32_t DELIVERY_MODE = 7u << 8;
// What an LVT entry keeps: vector, delivery mode, polarity, trigger mode, mask (the timer's
// also its mode bits); delivery status and remote IRR read as 0.
constexpr uint32_t LVT_BITS = 0x1a7ff, LVT_TIMER_BITS = 0x700ff;
}  // namespace

Lapic::Lapic(unsigned id, std::function<uint64_t()> clock, std::function<void()> poke,
             std::function<void(uint8_t)> levelEoi, std::function<void(uint32_t, uint8_t)> sendIpi)
    : clock(std::move(clock)),
      poke(std::move(poke)),
      levelEoi(std::move(levelEoi)),
      sendIpi(std::move(sendIpi)) {
  reg(ID) = id << 24;
  reg(VERSION) = 0x14 | (5u << 16);  // integrated APIC; six LVT entries
  reg(DFR) = 0xffffffff;
  reg(SVR) = 0xff;
  for (uint32_t lvt : LVTS) reg(lvt) = MASKED;
  if (id == 0) reg(LVT_LINT0) = EXTINT;  // virtual wire: the PIC reaches the BSP
}

void Lapic::setBit(uint32_t base, uint8_t vector, bool on) {
  uint32_t& word = reg(base + (vector >> 5) * 0x10);
  uint32_t mask = 1u << (vector & 31);
  word = on ? word | mask : word & ~mask;
}

int Lapic::highest(uint32_t base) {
  for (int word = 7; word >= 0; --word) {
    uint32_t bits = reg(base + word * 0x10);
    if (bits != 0) return word * 32 + 31 - __builtin_clz(bits);
  }
  return -1;
}

uint32_t Lapic::processorPriority() {
  int inService = highest(ISR);
  uint32_t tpr = reg(TPR);
  return inService >= 0 && (static_cast<uint32_t>(inService) & 0xf0) > (tpr & 0xf0)
             ? inService & 0xf0
             : tpr;
}

int Lapic::deliverable() {
  if (!softwareEnabled()) return -1;
  int vector = highest(IRR);
  if (vector < 0) return -1;
  return (static_cast<uint32_t>(vector) & 0xf0) > (processorPriority() & 0xf0) ? vector : -1;
}

void Lapic::pend(uint8_t vector, bool level) {
  setBit(IRR, vector, true);
  setBit(TMR, vector, level);
}

uint32_t Lapic::currentCount(uint64_t now) {
  uint32_t initial = reg(TIMER_INITIAL);
  if (timerDue == UINT64_MAX || initial == 0 || now < timerStart) return 0;
  uint64_t elapsed = (now - timerStart) / divisor;
  if (reg(LVT_TIMER) & PERIODIC) return initial - static_cast<uint32_t>(elapsed % initial);
  return elapsed >= initial ? 0 : initial - static_cast<uint32_t>(elapsed);
}

uint32_t Lapic::read(uint32_t offset) {
  if (offset >= REGISTERS * 0x10 || (offset & 0xf) != 0) return 0;
  // The clock before the lock: under --deterministic it takes the machine's vCPU list lock,
  // which interrupt delivery holds while it takes this one.
  uint64_t now = offset == TIMER_CURRENT ? clock() : 0;
  std::lock_guard<std::mutex> guard(lock);
  switch (offset) {
    case PPR:
      return processorPriority();
    case TIMER_CURRENT:
      return currentCount(now);
    case EOI:
      return 0;
    default:
      return reg(offset);
  }
}

void Lapic::write(uint32_t offset, uint32_t value) {
  if (offset >= REGISTERS * 0x10 || (offset & 0xf) != 0) return;
  int ended = -1;  // a level-triggered vector the guest ended
  bool wake = false;
  std::optional<uint8_t> ipiDestination;  // an IPI the guest sent, and its ICR destination
  uint64_t now = offset == TIMER_INITIAL ? clock() : 0;  // before the lock, as in read()
  {
    std::lock_guard<std::mutex> guard(lock);
    bool lvt = std::find(std::begin(LVTS), std::end(LVTS), offset) != std::end(LVTS);
    switch (offset) {
      case ID:
      case LDR:
        reg(offset) = value & 0xff000000;
        break;
      case DFR:
        reg(DFR) = value | 0x0fffffff;
        break;
      case TPR:
        reg(TPR) = value & 0xff;
        wake = true;
        break;
      case EOI: {
        int vector = highest(ISR);
        if (vector >= 0) {
          setBit(ISR, static_cast<uint8_t>(vector), false);
          if (bit(TMR, static_cast<uint8_t>(vector))) ended = vector;
          wake = true;
        }
        break;
      }
      case SVR:
        reg(SVR) = value & 0x13ff;
        if (!softwareEnabled()) {
          for (uint32_t entry : LVTS) reg(entry) |= MASKED;
        }
        wake = true;
        break;
      case ESR:
        reg(ESR) = 0;
        break;
      case ICR_HIGH:
        reg(ICR_HIGH) = value & 0xff000000;
        break;
      case ICR_LOW:
        reg(ICR_LOW) = value & ~(1u << 12);  // delivery status: sent at once
        ipiDestination = static_cast<uint8_t>(reg(ICR_HIGH) >> 24);
        break;
      case TIMER_INITIAL: {
        reg(TIMER_INITIAL) = value;
        timerStart = now;
        timerDue = value == 0 ? UINT64_MAX : now + value * divisor;
        break;
      }
      case TIMER_DIVIDE: {
        reg(TIMER_DIVIDE) = value & 0xb;
        unsigned code = (value & 3) | ((value & 8) >> 1);
        divisor = code == 7 ? 1 : 2u << code;
        break;
      }
      default:
        if (lvt) {
          reg(offset) = value & (offset == LVT_TIMER ? LVT_TIMER_BITS : LVT_BITS);
          if (!softwareEnabled()) reg(offset) |= MASKED;
          wake = offset == LVT_LINT0;
        }
        break;  // read-only and reserved registers ignore writes
    }
  }
  if (ended >= 0) levelEoi(static_cast<uint8_t>(ended));
  if (wake) poke();
  if (ipiDestination) {
    if (((value >> 18) & 3) == 1) {  // shorthand: self
      if ((value & DELIVERY_MODE) == 0) accept(static_cast<uint8_t>(value), false);
    } else {
      sendIpi(value & ~(1u << 12), *ipiDestination);
    }
  }
}

bool Lapic::matches(uint8_t destination, bool logical) {
  std::lock_guard<std::mutex> guard(lock);
  if (!logical) return destination == 0xff || destination == reg(ID) >> 24;
  // Flat model (DFR 0xffffffff): a bit per APIC; cluster model: a 4-bit cluster, 4 bits each.
  uint8_t mine = static_cast<uint8_t>(reg(LDR) >> 24);
  if ((reg(DFR) >> 28) == 0xf) return (destination & mine) != 0;
  return ((destination >> 4) == 0xf || (destination >> 4) == (mine >> 4)) &&
         (destination & mine & 0xf) != 0;
}

void Lapic::accept(uint8_t vector, bool level) {
  {
    std::lock_guard<std::mutex> guard(lock);
    if (!softwareEnabled() || vector < 16) return;  // as KVM: dropped
    pend(vector, level);
  }
  poke();
}

int Lapic::acknowledge() {
  std::lock_guard<std::mutex> guard(lock);
  int vector = deliverable();
  if (vector >= 0) {
    setBit(IRR, static_cast<uint8_t>(vector), false);
    setBit(ISR, static_cast<uint8_t>(vector), true);
  }
  return vector;
}

bool Lapic::acceptsPic() {
  std::lock_guard<std::mutex> guard(lock);
  uint32_t lint0 = reg(LVT_LINT0);
  return !(lint0 & MASKED) && (lint0 & DELIVERY_MODE) == EXTINT;
}

uint64_t Lapic::poll() {
  bool fired = false;
  uint64_t due;
  uint64_t now = clock();  // before the lock, as in read()
  {
    std::lock_guard<std::mutex> guard(lock);
    if (timerDue == UINT64_MAX || now < timerDue) return timerDue;
    uint32_t lvt = reg(LVT_TIMER);
    uint64_t period = static_cast<uint64_t>(reg(TIMER_INITIAL)) * divisor;
    if ((lvt & PERIODIC) && period != 0) {
      timerDue += ((now - timerDue) / period + 1) * period;  // ticks missed while away are lost
      timerStart = timerDue - period;
    } else {
      timerDue = UINT64_MAX;
    }
    if (!(lvt & MASKED) && softwareEnabled() && static_cast<uint8_t>(lvt) >= 16) {
      pend(static_cast<uint8_t>(lvt), false);
      fired = true;
    }
    due = timerDue;
  }
  if (fired) poke();
  return due;
}

}  // namespace bulkhead::irqchip
