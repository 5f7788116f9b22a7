#include "kernel/boot/mp-table.h"

#include <cstring>

#include <absl/strings/str_format.h>

namespace bulkhead {

namespace {

constexpr uint8_t ENTRY_PROCESSOR = 0;
constexpr uint8_t ENTRY_BUS = 1;
constexpr uint8_t ENTRY_IOAPIC = 2;
constexpr uint8_t ENTRY_IO_INTERRUPT = 3;
constexpr uint8_t ENTRY_LOCAL_INTERRUPT = 4;
constexpr uint8_t INT_VECTORED = 0, INT_NMI = 1, INT_EXTINT = 3;
constexpr uint16_t FLAGS_CONFORMING = 0;
constexpr uint16_t FLAGS_LEVEL_ACTIVE_HIGH = 0x1 | 0x3 << 2;
constexpr uint8_t BUS_PCI = 0, BUS_ISA = 1;
constexpr unsigned ISA_IRQS = 16;

class Writer {
 public:
  void u8(uint8_t value) { bytes.push_back(value); }
  void u16(uint16_t value) { put(&value, 2); }
  void u32(uint32_t value) { put(&value, 4); }
  void text(const char* value, size_t width) {
    for (size_t i = 0; i < width; ++i) u8(i < strlen(value) ? value[i] : ' ');
  }
  void zeros(size_t count) { bytes.insert(bytes.end(), count, 0); }
  void put(const void* value, size_t size) {
    const auto* raw = static_cast<const uint8_t*>(value);
    bytes.insert(bytes.end(), raw, raw + size);
  }
  void interrupt(uint8_t type, uint8_t kind, uint16_t flags, uint8_t bus, uint8_t busIrq,
                 uint8_t destination, uint8_t pin) {
    u8(type);
    u8(kind);
    u16(flags);
    u8(bus);
    u8(busIrq);
    u8(destination);
    u8(pin);
  }
  std::vector<uint8_t> bytes;
};

}  // namespace

uint8_t mpChecksum(const uint8_t* bytes, size_t length) {
  uint8_t sum = 0;
  for (size_t i = 0; i < length; ++i) sum += bytes[i];
  return static_cast<uint8_t>(-sum);
}

absl::Status writeMpTable(GuestMemory& memory, unsigned cpus,
                          const std::vector<PciInterruptRoute>& pci) {
  if (cpus == 0 || cpus > 254) {
    return absl::InvalidArgumentError(absl::StrFormat("an MP table cannot list %u CPUs", cpus));
  }
  uint8_t ioapicId = cpus;  // after the LAPIC ids 0..cpus-1

  Writer entries;
  uint16_t count = 0;
  for (unsigned cpu = 0; cpu < cpus; ++cpu) {
    entries.u8(ENTRY_PROCESSOR);
    entries.u8(cpu);                   // LAPIC id
    entries.u8(0x14);                  // LAPIC version (integrated)
    entries.u8(cpu == 0 ? 0x3 : 0x1);  // enabled, bootstrap processor
    entries.u32(0x600);                // family 6
    entries.u32(0x201);                // FPU, APIC
    entries.zeros(8);
    ++count;
  }
  entries.u8(ENTRY_BUS);
  entries.u8(BUS_PCI);
  entries.text("PCI", 6);
  entries.u8(ENTRY_BUS);
  entries.u8(BUS_ISA);
  entries.text("ISA", 6);
  count += 2;
  entries.u8(ENTRY_IOAPIC);
  entries.u8(ioapicId);
  entries.u8(0x11);  // version
  entries.u8(0x1);   // enabled
  entries.u32(IOAPIC_ADDRESS);
  ++count;
  for (unsigned irq = 0; irq < ISA_IRQS; ++irq) {
    entries.interrupt(ENTRY_IO_INTERRUPT, INT_VECTORED, FLAGS_CONFORMING, BUS_ISA, irq, ioapicId,
                      irq);
    ++count;
  }
  for (const PciInterruptRoute& route : pci) {
    // Source bus IRQ for PCI: device number in bits 2-6, INTA# = 0 in bits 0-1.
    entries.interrupt(ENTRY_IO_INTERRUPT, INT_VECTORED, FLAGS_LEVEL_ACTIVE_HIGH, BUS_PCI,
                      route.slot << 2, ioapicId, route.gsi);
    ++count;
  }
  entries.interrupt(ENTRY_LOCAL_INTERRUPT, INT_EXTINT, FLAGS_CONFORMING, BUS_ISA, 0, 0xff, 0);
  entries.interrupt(ENTRY_LOCAL_INTERRUPT, INT_NMI, FLAGS_CONFORMING, BUS_ISA, 0, 0xff, 1);
  count += 2;

  constexpr size_t FLOATING_BYTES = 16;
  constexpr size_t HEADER_BYTES = 44;
  uint32_t tableAddress = MP_TABLE_ADDRESS + FLOATING_BYTES;
  Writer table;
  table.text("PCMP", 4);
  table.u16(HEADER_BYTES + entries.bytes.size());
  table.u8(4);  // spec revision 1.4
  table.u8(0);  // checksum, below
  table.text("BULKHEAD", 8);
  table.text("VMM", 12);
  table.u32(0);  // no OEM table
  table.u16(0);
  table.u16(count);
  table.u32(LAPIC_ADDRESS);
  table.u16(0);  // no extended entries
  table.u8(0);
  table.u8(0);
  table.put(entries.bytes.data(), entries.bytes.size());
  table.bytes[7] = mpChecksum(table.bytes.data(), table.bytes.size());

  Writer floating;
  floating.text("_MP_", 4);
  floating.u32(tableAddress);
  floating.u8(1);     // length in 16-byte units
  floating.u8(4);     // spec revision 1.4
  floating.u8(0);     // checksum, below
  floating.zeros(5);  // feature bytes: a configuration table is present, no IMCR
  floating.bytes[10] = mpChecksum(floating.bytes.data(), floating.bytes.size());

  if (tableAddress + table.bytes.size() > MP_TABLE_ADDRESS + 0x10000) {
    return absl::InvalidArgumentError("the MP table does not fit the BIOS area");
  }
  if (!memory.write(MP_TABLE_ADDRESS, kj::arrayPtr(floating.bytes.data(), floating.bytes.size())) ||
      !memory.write(tableAddress, kj::arrayPtr(table.bytes.data(), table.bytes.size()))) {
    return absl::InternalError("guest RAM has no BIOS area for the MP table");
  }
  return absl::OkStatus();
}

}  // namespace bulkhead
