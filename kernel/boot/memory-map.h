// The guest-physical memory map every boot protocol reports (e820 types): conventional memory
// up to the EBDA, the EBDA and the BIOS area reserved, RAM from 1 MiB up to the PCI hole, and RAM
// above 4 GiB. The PCI hole and the IOAPIC/LAPIC pages are simply absent, as on a PC.
#pragma once

#include <cstdint>
#include <vector>

#include "kernel/memory/guest-memory.h"

namespace bulkhead {

enum MemoryType : uint32_t { MEMORY_RAM = 1, MEMORY_RESERVED = 2 };

struct MemoryMapEntry {
  uint64_t base;
  uint64_t length;
  uint32_t type;
};

std::vector<MemoryMapEntry> pcMemoryMap(const GuestMemory& memory);

}  // namespace bulkhead
