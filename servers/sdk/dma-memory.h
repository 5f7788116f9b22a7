// The guest RAM a device may reach: the DMA windows the core granted, mapped into the server.
//
// Every guest-physical address here comes from the guest and is hostile: a span is handed out
// only when all of it lies inside one window, checked with overflow-safe arithmetic. The guest
// may change the bytes under the device at any time (another vCPU), so a device copies what it
// parses (descriptors, headers) before it trusts it, and uses spans only for payload.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include <kj/common.h>

namespace bulkhead::sdk {

// What the fault plan does to one transfer (docs/fault-injection.md, on=dma).
struct DmaFault {
  bool refuse = false;    // the transfer fails
  uint64_t keep = ~0ull;  // only this many bytes move
  uint64_t flip = 0;      // XOR into the first 8 bytes that arrive
};

class DmaMemory {
 public:
  DmaMemory() = default;
  ~DmaMemory();
  KJ_DISALLOW_COPY(DmaMemory);

  // Maps `size` bytes of `fd` from `offset` for guest-physical `guestPhysical`. Throws when the
  // window overlaps another, wraps, or cannot be mapped.
  void addWindow(int fd, uint64_t offset, uint64_t guestPhysical, uint64_t size);
  // For tests: a window over memory the caller owns.
  void addBuffer(uint8_t* bytes, uint64_t guestPhysical, uint64_t size);

  bool empty() const { return windows.empty(); }

  // Devices call transfer() once per data transfer (not for ring bookkeeping); the fault plan
  // decides through the hook the SDK installs. `deviceWrites`: device to guest.
  using FaultHook = std::function<DmaFault(uint64_t address, uint64_t length, bool deviceWrites)>;
  void setFaultHook(FaultHook hook) { faultHook = std::move(hook); }
  DmaFault transfer(uint64_t address, uint64_t length, bool deviceWrites) const {
    return faultHook ? faultHook(address, length, deviceWrites) : DmaFault{};
  }

  // The host view of [address, address + length), or nullptr when any of it is outside the
  // windows (length 0 gives nullptr too).
  uint8_t* span(uint64_t address, uint64_t length) const;

  bool read(uint64_t address, void* out, uint64_t length) const {
    const uint8_t* from = span(address, length);
    if (from == nullptr) return false;
    memcpy(out, from, length);
    return true;
  }
  bool write(uint64_t address, const void* in, uint64_t length) const {
    uint8_t* to = span(address, length);
    if (to == nullptr) return false;
    memcpy(to, in, length);
    return true;
  }
  // One little-endian field, copied once (x86 hosts only, as the core is).
  template <typename T>
  bool load(uint64_t address, T& out) const {
    return read(address, &out, sizeof(T));
  }
  template <typename T>
  bool store(uint64_t address, T value) const {
    return write(address, &value, sizeof(T));
  }

 private:
  struct Window {
    uint64_t guestPhysical;
    uint64_t size;
    uint8_t* host;
    bool mapped;  // munmap on destruction
  };
  void insert(Window window);
  std::vector<Window> windows;  // sorted by guestPhysical
  FaultHook faultHook;
};

}  // namespace bulkhead::sdk
