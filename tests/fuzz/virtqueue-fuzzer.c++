// libFuzzer target: the split virtqueue parser over guest RAM the fuzzer writes, with queue
// addresses it picks (in RAM, at its edges, or outside). Every chain the parser accepts must
// keep its promises: each buffer inside the DMA window, at most a queue's worth of descriptors,
// readable before writable, byte counts that add up; and pushing completions must stay inside
// the used ring.
//
// Input: [size exponent][desc offset (2)][avail offset (2)][used offset (2)] then RAM bytes.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "servers/sdk/virtio/chain-io.h"
#include "servers/sdk/virtio/virtqueue.h"

namespace {

constexpr uint64_t RAM_BASE = 0x10000;
constexpr uint64_t RAM_BYTES = 0x10000;

uint16_t read16(const uint8_t* data) { return data[0] | data[1] << 8; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulkhead::sdk;
  constexpr size_t HEADER = 7;
  if (size < HEADER) return 0;
  std::vector<uint8_t> ram(RAM_BYTES);
  memcpy(ram.data(), data + HEADER, std::min(size - HEADER, ram.size()));
  DmaMemory memory;
  memory.addBuffer(ram.data(), RAM_BASE, RAM_BYTES);

  virtio::QueueState queue{};
  queue.size = static_cast<uint16_t>(1u << (data[0] % 17));  // 1 .. 65536 (the last is invalid)
  if (data[0] & 0x80) queue.size += 1;                       // sometimes not a power of two
  // Offsets near the window's end reach past it; the top bit puts a ring below it.
  queue.descriptors = RAM_BASE + read16(data + 1) - (data[1] & 1 ? 0x20 : 0);
  queue.driverArea = RAM_BASE + read16(data + 3);
  queue.deviceArea = RAM_BASE + read16(data + 5);
  queue.enabled = 1;
  if (!virtio::queueValid(memory, queue, nullptr)) return 0;

  virtio::Virtqueue virtqueue(memory, queue);
  virtio::Chain chain;
  for (unsigned round = 0; round < 64; ++round) {
    auto popped = virtqueue.pop(chain, nullptr);
    if (popped != virtio::Virtqueue::Pop::CHAIN) break;
    if (chain.buffers.size() > queue.size) abort();
    uint64_t readable = 0, writable = 0;
    bool seenWritable = false;
    for (const virtio::Buffer& buffer : chain.buffers) {
      if (memory.span(buffer.address, buffer.length) == nullptr) abort();
      if (buffer.writable) {
        seenWritable = true;
        writable += buffer.length;
      } else {
        if (seenWritable) abort();
        readable += buffer.length;
      }
    }
    if (readable != chain.readableBytes || writable != chain.writableBytes) abort();
    if (readable + writable > virtio::MAX_CHAIN_BYTES) abort();
    // Touch every byte the chain offers, as a device would.
    std::vector<uint8_t> bytes(std::min<uint64_t>(readable, 1 << 16));
    if (!virtio::readChain(memory, chain, 0, bytes.data(), bytes.size())) abort();
    uint64_t fill = std::min<uint64_t>(writable, 1 << 16);
    std::vector<uint8_t> zeros(fill);
    if (!virtio::writeChain(memory, chain, 0, zeros.data(), fill)) abort();
    if (!virtqueue.push(chain.head, static_cast<uint32_t>(fill))) abort();
  }
  return 0;
}
