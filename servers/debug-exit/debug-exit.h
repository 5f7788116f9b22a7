// A port that ends the VM: the guest writes v and the VM exits with status (v << 1) | 1.
//
// Contract: the convention of QEMU's isa-debug-exit, so test kernels written for it work
// unchanged. The status is computed from the value's low 7 bits (what fits an exit status
// after the shift); reads return all-ones, as from an empty port. No datasheet: it is a
// virtual device.
#pragma once

#include <cstdint>

namespace bulkhead {

class DebugExit {
 public:
  static constexpr uint16_t DEFAULT_PORT = 0xf4;
  static constexpr uint16_t PORTS = 4;

  // The process exit status for a written value.
  static constexpr uint8_t exitStatus(uint64_t value) {
    return static_cast<uint8_t>(((value & 0x7f) << 1) | 1);
  }
};

}  // namespace bulkhead
