#include "servers/virtio-rng/virtio-rng.h"

#include <sys/random.h>

#include <algorithm>
#include <vector>

#include "chain-io.h"

namespace bulkhead {

VirtioRng::VirtioRng(std::optional<uint64_t> seed) {
  // xorshift needs a non-zero state; 0 means "host randomness" here.
  state.generator = seed ? (*seed ^ 0x9e3779b97f4a7c15ull) | 1 : 0;
}

void VirtioRng::fill(uint8_t* bytes, size_t length) {
  if (state.generator == 0) {
    while (length > 0) {
      ssize_t got = getrandom(bytes, length, 0);
      if (got <= 0) continue;  // EINTR; the call does not fail otherwise for these sizes
      bytes += got;
      length -= got;
    }
    return;
  }
  for (size_t i = 0; i < length; ++i) {
    if (i % 8 == 0) {
      state.generator ^= state.generator >> 12;
      state.generator ^= state.generator << 25;
      state.generator ^= state.generator >> 27;
    }
    bytes[i] = (state.generator * 0x2545f4914f6cdd1dull) >> (8 * (i % 8));
  }
}

int64_t VirtioRng::serve(unsigned, const sdk::virtio::Chain& chain, const sdk::DmaMemory& memory) {
  uint64_t length = std::min(chain.writableBytes, MAX_BYTES_PER_CHAIN);
  std::vector<uint8_t> bytes(length);
  fill(bytes.data(), bytes.size());
  if (!sdk::virtio::writeChain(memory, chain, 0, bytes.data(), bytes.size())) return -1;
  return length;
}

}  // namespace bulkhead
