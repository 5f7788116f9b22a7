#include "kernel/boot/memory-map.h"

#include "kernel/boot/layout.h"

namespace bulkhead {

std::vector<MemoryMapEntry> pcMemoryMap(const GuestMemory& memory) {
  std::vector<MemoryMapEntry> map = {
      {0, layout::EBDA, MEMORY_RAM},
      {layout::EBDA, 0xa0000 - layout::EBDA, MEMORY_RESERVED},
      {layout::BIOS_AREA, MIB - layout::BIOS_AREA, MEMORY_RESERVED},
  };
  for (const RamRegion& region : memory.regions()) {
    if (region.guestPhysical == 0) {
      if (region.size > MIB) map.push_back({MIB, region.size - MIB, MEMORY_RAM});
    } else {
      map.push_back({region.guestPhysical, region.size, MEMORY_RAM});
    }
  }
  return map;
}

}  // namespace bulkhead
