// The I/O bus: port and MMIO address ranges, each routed to exactly one handler.
//
// Accesses nobody claims behave as on a PC with nothing at that address: reads return all-ones,
// writes are ignored; both are counted and logged with a rate limit.
#pragma once

#include <cstdint>
#include <string>

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

class IoBus {
 public:
  absl::Status add(Space space, uint64_t base, uint64_t size, Route route);

  uint64_t read(Space space, uint64_t address, unsigned size);
  void write(Space space, uint64_t address, unsigned size, uint64_t value);
  // --deterministic: every write waits for its device, so what the device does in answer (an
  // interrupt, a completion) takes effect before the next instruction, in every run.
  void makeWritesSynchronous() { allSynchronous = true; }

 private:
  RangeMap<Route>& mapFor(Space space) { return space == Space::PIO ? ports : mmio; }

  RangeMap<Route> ports;
  RangeMap<Route> mmio;
  RateLimitedLog unclaimed;
  bool allSynchronous = false;
};

constexpr uint64_t allOnes(unsigned size) { return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1; }

}  // namespace bulkhead
