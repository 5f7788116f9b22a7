#include "dma-memory.h"

#include <sys/mman.h>

#include <algorithm>

#include <kj/debug.h>

namespace bulkhead::sdk {

DmaMemory::~DmaMemory() {
  for (Window& window : windows) {
    if (window.mapped) munmap(window.host, window.size);
  }
}

void DmaMemory::addWindow(int fd, uint64_t offset, uint64_t guestPhysical, uint64_t size) {
  KJ_REQUIRE(size > 0 && guestPhysical + size > guestPhysical && offset + size > offset,
             "a DMA window is empty or wraps", guestPhysical, size);
  void* mapped = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
  KJ_REQUIRE(mapped != MAP_FAILED, "cannot map a DMA window", guestPhysical, size);
  insert(Window{guestPhysical, size, static_cast<uint8_t*>(mapped), true});
}

void DmaMemory::addBuffer(uint8_t* bytes, uint64_t guestPhysical, uint64_t size) {
  KJ_REQUIRE(size > 0 && guestPhysical + size > guestPhysical, "a DMA window is empty or wraps");
  insert(Window{guestPhysical, size, bytes, false});
}

void DmaMemory::insert(Window window) {
  auto at =
      std::lower_bound(windows.begin(), windows.end(), window.guestPhysical,
                       [](const Window& w, uint64_t address) { return w.guestPhysical < address; });
  bool overlapsNext = at != windows.end() && at->guestPhysical < window.guestPhysical + window.size;
  bool overlapsPrevious =
      at != windows.begin() && (at - 1)->guestPhysical + (at - 1)->size > window.guestPhysical;
  if (overlapsNext || overlapsPrevious) {
    if (window.mapped) munmap(window.host, window.size);
    KJ_FAIL_REQUIRE("DMA windows overlap", window.guestPhysical, window.size);
  }
  windows.insert(at, window);
}

uint8_t* DmaMemory::span(uint64_t address, uint64_t length) const {
  if (length == 0) return nullptr;
  // The last window starting at or below `address`.
  auto at = std::upper_bound(windows.begin(), windows.end(), address,
                             [](uint64_t a, const Window& w) { return a < w.guestPhysical; });
  if (at == windows.begin()) return nullptr;
  const Window& window = *(at - 1);
  uint64_t offset = address - window.guestPhysical;
  if (offset >= window.size || length > window.size - offset) return nullptr;
  return window.host + offset;
}

}  // namespace bulkhead::sdk
