#include "virtqueue.h"

#include <atomic>

#include <kj/string.h>

namespace bulkhead::sdk::virtio {

namespace {

constexpr uint16_t DESC_F_NEXT = 1;
constexpr uint16_t DESC_F_WRITE = 2;
constexpr uint16_t DESC_F_INDIRECT = 4;
constexpr uint16_t AVAIL_F_NO_INTERRUPT = 1;

struct Descriptor {
  uint64_t address;
  uint32_t length;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Descriptor) == 16);

uint64_t descriptorBytes(uint16_t size) { return 16ull * size; }
uint64_t availBytes(uint16_t size) { return 6 + 2ull * size; }
uint64_t usedBytes(uint16_t size) { return 6 + 8ull * size; }

bool fail(std::string* why, std::string text) {
  if (why != nullptr) *why = std::move(text);
  return false;
}

}  // namespace

bool queueValid(const DmaMemory& memory, const QueueState& queue, std::string* why) {
  uint16_t size = queue.size;
  if (size == 0 || size > MAX_QUEUE_SIZE || (size & (size - 1)) != 0) {
    return fail(why, kj::str("queue size ", size, " is not a power of two up to 32768").cStr());
  }
  if (queue.descriptors % 16 != 0 || queue.driverArea % 2 != 0 || queue.deviceArea % 4 != 0) {
    return fail(why, "a ring is misaligned (descriptors 16, available 2, used 4 bytes)");
  }
  if (memory.span(queue.descriptors, descriptorBytes(size)) == nullptr ||
      memory.span(queue.driverArea, availBytes(size)) == nullptr ||
      memory.span(queue.deviceArea, usedBytes(size)) == nullptr) {
    return fail(why, kj::str("a ring lies outside guest RAM (descriptors 0x",
                             kj::hex(queue.descriptors), ", available 0x",
                             kj::hex(queue.driverArea), ", used 0x", kj::hex(queue.deviceArea), ")")
                         .cStr());
  }
  return true;
}

Virtqueue::Pop Virtqueue::pop(Chain& chain, std::string* why) {
  uint16_t availIndex;
  if (!memory.load(queue.driverArea + 2, availIndex)) {
    fail(why, "the available ring left guest RAM");
    return Pop::BROKEN;
  }
  uint16_t waiting = availIndex - queue.lastAvail;
  if (waiting == 0) return Pop::EMPTY;
  if (waiting > queue.size) {
    fail(why,
         kj::str("the available index jumped by ", waiting, " in a queue of ", queue.size).cStr());
    return Pop::BROKEN;
  }
  // The ring entry is read after the index that published it.
  std::atomic_thread_fence(std::memory_order_acquire);
  uint16_t head;
  uint16_t slot = queue.lastAvail & (queue.size - 1);
  if (!memory.load(queue.driverArea + 4 + 2ull * slot, head)) {
    fail(why, "the available ring left guest RAM");
    return Pop::BROKEN;
  }
  if (!readChain(head, chain, why)) return Pop::BROKEN;
  ++queue.lastAvail;
  return Pop::CHAIN;
}

bool Virtqueue::readChain(uint16_t head, Chain& chain, std::string* why) {
  chain.head = head;
  chain.buffers.clear();
  chain.readableBytes = 0;
  chain.writableBytes = 0;
  uint16_t index = head;
  for (unsigned count = 0;; ++count) {
    if (index >= queue.size) {
      return fail(why, kj::str("descriptor ", index, " is beyond the queue's ", queue.size).cStr());
    }
    if (count >= queue.size) return fail(why, "a descriptor chain loops");
    Descriptor descriptor;
    if (!memory.load(queue.descriptors + 16ull * index, descriptor)) {
      return fail(why, "the descriptor table left guest RAM");
    }
    if (descriptor.flags & DESC_F_INDIRECT) {
      return fail(why, "an indirect descriptor, which this device did not offer");
    }
    bool writable = descriptor.flags & DESC_F_WRITE;
    if (!writable && chain.writableBytes > 0) {
      return fail(why, "a device-readable buffer follows a device-writable one");
    }
    if (descriptor.length > 0) {
      if (memory.span(descriptor.address, descriptor.length) == nullptr) {
        return fail(why, kj::str("buffer 0x", kj::hex(descriptor.address), "+0x",
                                 kj::hex(descriptor.length), " lies outside guest RAM")
                             .cStr());
      }
      uint64_t& total = writable ? chain.writableBytes : chain.readableBytes;
      total += descriptor.length;
      if (chain.readableBytes + chain.writableBytes > MAX_CHAIN_BYTES) {
        return fail(why, "a descriptor chain carries more than 64 MiB");
      }
      chain.buffers.push_back(Buffer{descriptor.address, descriptor.length, writable});
    }
    if (!(descriptor.flags & DESC_F_NEXT)) return true;
    index = descriptor.next;
  }
}

bool Virtqueue::push(uint16_t head, uint32_t written) {
  struct {
    uint32_t id;
    uint32_t length;
  } element{head, written};
  uint16_t slot = queue.used & (queue.size - 1);
  if (!memory.write(queue.deviceArea + 4 + 8ull * slot, &element, sizeof(element))) return false;
  ++queue.used;
  // The element is visible before the index that publishes it.
  std::atomic_thread_fence(std::memory_order_release);
  return memory.store(queue.deviceArea + 2, queue.used);
}

bool Virtqueue::wantsInterrupt() const {
  uint16_t flags = 0;
  if (!memory.load(queue.driverArea, flags)) return true;
  return !(flags & AVAIL_F_NO_INTERRUPT);
}

}  // namespace bulkhead::sdk::virtio
