// virtio-rng (virtio spec 5.4): one request queue; the device fills each chain's writable
// buffers with random bytes.
//
// Contract: bytes come from the host's getrandom(), or, with `seed=N`, from a generator seeded
// with N whose state is part of the declared state, so a run (and a fault campaign's replay)
// sees the same bytes every time, across server restarts too. At most 64 KiB per chain.
#pragma once

#include <cstdint>
#include <optional>

#include "virtio-pci.h"

namespace bulkhead {

class VirtioRng final : public sdk::virtio::VirtioModel {
 public:
  static constexpr uint64_t MAX_BYTES_PER_CHAIN = 64 * 1024;

  explicit VirtioRng(std::optional<uint64_t> seed);

  uint16_t deviceType() const override { return 4; }
  uint32_t classCode() const override { return 0x00ff00; }
  uint64_t features() const override { return 0; }
  unsigned queueCount() const override { return 1; }
  int64_t serve(unsigned queue, const sdk::virtio::Chain& chain,
                const sdk::DmaMemory& memory) override;
  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(state); }

 private:
  void fill(uint8_t* bytes, size_t length);

  struct State {
    uint64_t generator;  // xorshift64* state; 0: use getrandom()
  } state;
};

}  // namespace bulkhead
