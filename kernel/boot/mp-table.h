// The Intel MultiProcessor Specification 1.4 tables a Linux guest reads to find its CPUs, the
// IOAPIC and how interrupts are wired, placed in the BIOS area (0xf0000), where the spec says to
// look for the floating pointer.
//
// Wiring described (it is KVM's default GSI routing and the PCI host's INTx routing): ISA IRQ n
// to IOAPIC pin n for n < 16, each PCI function's INTA# to its GSI (level, active high), ExtINT
// to every LAPIC's LINT0 and NMI to LINT1.
#pragma once

#include <cstdint>
#include <vector>

#include <absl/status/status.h>

#include "kernel/memory/guest-memory.h"

namespace bulkhead {

constexpr uint64_t MP_TABLE_ADDRESS = 0xf0000;
constexpr uint64_t IOAPIC_ADDRESS = 0xfec00000;
constexpr uint64_t LAPIC_ADDRESS = 0xfee00000;

struct PciInterruptRoute {
  unsigned slot;  // bus 0, function 0
  uint32_t gsi;   // its INTA#
};

absl::Status writeMpTable(GuestMemory& memory, unsigned cpus,
                          const std::vector<PciInterruptRoute>& pci);

// The 8-bit sum that makes a structure's bytes add up to zero (what the checksum field holds).
uint8_t mpChecksum(const uint8_t* bytes, size_t length);

}  // namespace bulkhead
