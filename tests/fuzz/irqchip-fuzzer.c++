// libFuzzer target: the interrupt controllers the software CPU's guests program (the PIC pair,
// the PIT, the IOAPIC through the I/O bus as the guest reaches them, and a local APIC), driven
// by arbitrary register accesses, interrupt lines and clock steps. Whatever a guest writes, the
// core must not crash or read out of bounds, and what it hands the CPU must be a vector it can
// take: PIC acknowledges give -1 or 0-255, a local APIC never delivers vectors 0-15.
//
// Input: records of 6 bytes: [op][address/line][value x 4]. op % 8: 0 port write, 1 port read,
// 2 IOAPIC write, 3 IOAPIC read, 4 line change, 5 local APIC write, 6 local APIC read,
// 7 acknowledge, EOI and a clock step.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernel/irqchip/irqchip.h"
#include "kernel/irqchip/lapic.h"

namespace {

void check(bool ok, const char* what) {
  if (ok) return;
  fprintf(stderr, "irqchip-fuzzer: %s\n", what);
  abort();
}

// The ports the controllers answer: PIC, ELCR, PIT, port 0x61.
constexpr uint16_t PORTS[] = {0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61};
constexpr uint64_t IOAPIC = 0xfec00000;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulkhead;
  IoBus bus;
  uint64_t now = 0;
  IrqChip::Wiring wiring;
  wiring.clock = [&now]() { return now; };
  wiring.picOutput = []() {};
  wiring.deliver = [](uint8_t, bool, uint8_t, bool) {};
  auto chip = IrqChip::create(bus, wiring, /*pit=*/true);
  if (!chip.ok()) abort();
  irqchip::Lapic lapic(
      0, [&now]() { return now; }, []() {}, [](uint8_t) {});
  for (size_t i = 0; i + 6 <= size; i += 6) {
    uint8_t op = data[i], where = data[i + 1];
    uint32_t value;
    memcpy(&value, data + i + 2, 4);
    switch (op % 8) {
      case 0:
        bus.write(Space::PIO, PORTS[where % std::size(PORTS)], 1, value & 0xff);
        break;
      case 1:
        bus.read(Space::PIO, PORTS[where % std::size(PORTS)], 1);
        break;
      case 2:
        bus.write(Space::MMIO, IOAPIC + (where & 0x10), 4, value);
        break;
      case 3:
        bus.read(Space::MMIO, IOAPIC + (where & 0x10), 4);
        break;
      case 4:
        (*chip)->setLine(where % 24, value & 1).IgnoreError();
        break;
      case 5:
        lapic.write((static_cast<uint32_t>(where) << 4) & 0x3f0, value);
        break;
      case 6:
        lapic.read((static_cast<uint32_t>(where) << 4) & 0x3f0);
        break;
      default: {
        int vector = (*chip)->acknowledgePic();
        check(vector >= -1 && vector <= 255, "the PIC gave a vector outside 0-255");
        lapic.accept(static_cast<uint8_t>(value), value & 0x100);
        int taken = lapic.acknowledge();
        check(taken == -1 || (taken >= 16 && taken <= 255), "the local APIC gave vector 0-15");
        (*chip)->endOfInterrupt(static_cast<uint8_t>(value >> 16));
        now += value >> 8;
        (*chip)->pollTimer();
        lapic.poll();
        break;
      }
    }
  }
  return 0;
}
