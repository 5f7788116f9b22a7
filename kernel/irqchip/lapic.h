// A local APIC (xAPIC, version 0x14, memory-mapped at the APIC base MSR's page) for one
// software vCPU; under KVM the kernel provides it. It holds the vCPU's pending (IRR) and
// in-service (ISR) interrupts, prioritises them against the task priority, and runs the APIC
// timer (one-shot and periodic; a 1 GHz bus clock divided as the divide register says, on the
// clock the owner gives: host time, or the instruction count under --deterministic).
//
// Contract: accept() may be called from any thread; the register accessors, acknowledge() and
// poll() run on the vCPU's thread. `poke` is called, with no lock held, whenever an interrupt
// may have become deliverable; `levelEoi(vector)` when the guest ends a level-triggered
// interrupt (the IOAPIC's remote IRR); `sendIpi(icrLow, destination)` for an IPI the guest
// writes to the ICR, which the owner delivers to every APIC it names (this one included) with
// matches(). As KVM does: a software-disabled APIC drops fixed interrupts and masks its LVT
// entries; vCPU 0's LINT0 starts as unmasked ExtINT, so the PIC reaches a CPU whose guest
// never touches the APIC. TSC-deadline mode and x2APIC are not offered in CPUID, and CR8 is
// not tied to the task priority register.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

namespace bulkhead::irqchip {

class Lapic {
 public:
  Lapic(
      unsigned id, std::function<uint64_t()> clock, std::function<void()> poke,
      std::function<void(uint8_t)> levelEoi,
      std::function<void(uint32_t, uint8_t)> sendIpi = [](uint32_t, uint8_t) {});

  // The 4 KiB register page; `offset` is within it. Accesses other than aligned 32-bit ones
  // read the dword that holds them and write nothing, as on hardware (where they are undefined).
  uint32_t read(uint32_t offset);
  void write(uint32_t offset, uint32_t value);

  // An interrupt message for this CPU (IOAPIC, or an IPI): sets IRR, and TMR if level.
  void accept(uint8_t vector, bool level);
  // INTA: the vector the CPU takes now (moved from IRR to ISR), or -1.
  int acknowledge();
  // Whether a message for `destination` (an APIC ID, 0xff for all, or with `logical` a mask
  // against the logical destination register, flat or cluster model) is for this APIC.
  bool matches(uint8_t destination, bool logical);
  // Whether the PIC's INTR reaches the CPU: LINT0 unmasked in ExtINT mode.
  bool acceptsPic();
  // Fires the timer if due; returns when to call again (clock nanoseconds), or UINT64_MAX.
  uint64_t poll();

 private:
  static constexpr unsigned REGISTERS = 0x40;  // 16-byte registers in the page
  uint32_t& reg(uint32_t offset) { return regs[offset >> 4]; }
  bool bit(uint32_t base, uint8_t vector) {
    return reg(base + (vector >> 5) * 0x10) & (1u << (vector & 31));
  }
  void setBit(uint32_t base, uint8_t vector, bool on);
  int highest(uint32_t base);             // the highest vector set in IRR/ISR/TMR, or -1
  int deliverable();                      // the IRR vector the CPU may take now, or -1
  uint32_t processorPriority();           // PPR: the task priority or the in-service class
  void pend(uint8_t vector, bool level);  // sets IRR, and TMR for a level interrupt
  bool softwareEnabled() { return reg(SVR) & 0x100; }
  uint32_t currentCount(uint64_t now);

  static constexpr uint32_t ID = 0x20, VERSION = 0x30, TPR = 0x80, PPR = 0xa0, EOI = 0xb0,
                            LDR = 0xd0, DFR = 0xe0, SVR = 0xf0, ISR = 0x100, TMR = 0x180,
                            IRR = 0x200, ESR = 0x280, LVT_CMCI = 0x2f0, ICR_LOW = 0x300,
                            ICR_HIGH = 0x310, LVT_TIMER = 0x320, LVT_THERMAL = 0x330,
                            LVT_PERF = 0x340, LVT_LINT0 = 0x350, LVT_LINT1 = 0x360,
                            LVT_ERROR = 0x370, TIMER_INITIAL = 0x380, TIMER_CURRENT = 0x390,
                            TIMER_DIVIDE = 0x3e0;
  static constexpr uint32_t LVTS[] = {LVT_CMCI,  LVT_TIMER, LVT_THERMAL, LVT_PERF,
                                      LVT_LINT0, LVT_LINT1, LVT_ERROR};

  std::mutex lock;
  std::function<uint64_t()> clock;
  std::function<void()> poke;
  std::function<void(uint8_t)> levelEoi;
  std::function<void(uint32_t, uint8_t)> sendIpi;
  uint32_t regs[REGISTERS] = {};
  uint64_t divisor = 2;            // bus-clock nanoseconds per timer tick
  uint64_t timerStart = 0;         // when the initial count was written
  uint64_t timerDue = UINT64_MAX;  // the next expiry
};

}  // namespace bulkhead::irqchip
