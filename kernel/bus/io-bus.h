// The I/O bus: port and MMIO address ranges, each routed to exactly one handler.
//
// Accesses nobody claims behave as on a PC with nothing at that address: reads return all-ones,
// writes are ignored. They are counted; under --verbose the first access to each address is
// logged, and the VM's end says how many there were. Port 0x80 (POST codes, which firmware and
// kernels write to as a delay) is a known sink: counted, never logged.
//
// Every guest port and MMIO access of either CPU backend passes here, so this is where they are
// traced (--trace exits) and where doorbells a backend cannot match itself are rung.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "channel/device-description.h"
#include "kernel/base/log.h"
#include "kernel/bus/range-map.h"

namespace bulkhead {

class IoHandler {
 public:
  virtual ~IoHandler() noexcept(false) = default;
  // `address` is absolute (not relative to the range); `size` is 1, 2, 4 or 8.
  virtual uint64_t read(Space space, uint64_t address, unsigned size) = 0;
  // `synchronous`: the range asked that the vCPU wait until the write took effect.
  virtual void write(Space space, uint64_t address, unsigned size, uint64_t value,
                     bool synchronous) = 0;
};

struct Route {
  IoHandler* handler;
  bool synchronous;
  std::string owner;  // for messages
};

// Sees every access, on the accessing vCPU's thread (writes before they are handled, reads
// after, with the value the guest gets).
class BusTracer {
 public:
  virtual ~BusTracer() noexcept(false) = default;
  virtual void traced(bool write, Space space, uint64_t address, unsigned size, uint64_t value) = 0;
};

class IoBus {
 public:
  absl::Status add(Space space, uint64_t base, uint64_t size, Route route);

  uint64_t read(Space space, uint64_t address, unsigned size);
  void write(Space space, uint64_t address, unsigned size, uint64_t value);
  // --deterministic: every write waits for its device, so what the device does in answer (an
  // interrupt, a completion) takes effect before the next instruction, in every run.
  void makeWritesSynchronous() { allSynchronous = true; }
  void setTracer(BusTracer* tracer) { this->tracer = tracer; }

  // Guest accesses that reached no device, and how many distinct addresses they went to.
  uint64_t unclaimedAccesses() const { return unclaimedCount.load(std::memory_order_relaxed); }
  size_t unclaimedAddresses();

  // A doorbell: a guest write of `value` (`size` bytes; size 0: any write) at `address` signals
  // eventfd `fd` instead of reaching the range's handler (for a backend without ioeventfds of
  // its own). `assign` false removes it.
  void setDoorbell(Space space, uint64_t address, unsigned size, uint64_t value, int fd,
                   bool assign);

 private:
  struct Doorbell {
    Space space;
    uint64_t address;
    unsigned size;
    uint64_t value;
    int fd;
  };
  bool ringDoorbell(Space space, uint64_t address, unsigned size, uint64_t value);
  void unclaimed(bool write, Space space, uint64_t address, unsigned size, uint64_t value);

  RangeMap<Route>& mapFor(Space space) { return space == Space::PIO ? ports : mmio; }

  RangeMap<Route> ports;
  RangeMap<Route> mmio;
  std::atomic<uint64_t> unclaimedCount{0};
  std::mutex unclaimedLock;
  std::set<std::pair<Space, uint64_t>> unclaimedSeen;  // at most MAX_UNCLAIMED_SEEN
  bool allSynchronous = false;
  BusTracer* tracer = nullptr;
  std::mutex doorbellsLock;
  std::vector<Doorbell> doorbells;
  std::atomic<bool> anyDoorbell{false};
};

constexpr uint64_t allOnes(unsigned size) { return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1; }

}  // namespace bulkhead
