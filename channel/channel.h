// The shared parts of the device channel that both the core and the SDK use: the memory layout
// of the ring memfd and the encoding of ring messages.
//
// Layout of the ring memfd (docs/channel.md): the request ring (core -> server) at offset 0 and
// the reply ring (server -> core) at channelReplyOffset(slots).
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "channel/ring.h"
#include "device.capnp.h"

namespace bulkhead {

constexpr uint32_t DEFAULT_RING_SLOTS = 256;

size_t channelReplyOffset(uint32_t slots);
size_t channelBytes(uint32_t slots);

// A shared mapping of a ring memfd, unmapped when destroyed.
class ChannelMapping {
 public:
  ChannelMapping() = default;
  // Maps `fd`; false when the mapping fails or the file is smaller than the channel needs.
  bool map(int fd, uint32_t slots);
  ~ChannelMapping();
  ChannelMapping(ChannelMapping&& other) noexcept;
  KJ_DISALLOW_COPY(ChannelMapping);

  void* requests() const { return base; }
  void* replies() const { return static_cast<char*>(base) + channelReplyOffset(slots); }
  uint32_t slotCount() const { return slots; }

 private:
  void* base = nullptr;
  size_t bytes = 0;
  uint32_t slots = 0;
};

// Builds one message of type T with `fill` and pushes it.
template <typename T, typename Fill>
RingStatus pushMessage(RingProducer& ring, Fill&& fill) {
  capnp::word scratch[RING_SLOT_WORDS];
  memset(scratch, 0, sizeof(scratch));
  capnp::MallocMessageBuilder builder(kj::arrayPtr(scratch, RING_SLOT_WORDS));
  fill(builder.initRoot<T>());
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
  return ring.push(kj::arrayPtr(reinterpret_cast<const uint64_t*>(flat.begin()), flat.size()));
}

// Limits for parsing a slot: a slot holds at most RING_SLOT_WORDS words, so a message that
// claims to point further is corrupt.
capnp::ReaderOptions channelReaderOptions();

// One popped slot, copied out of shared memory.
struct PoppedMessage {
  capnp::word words[RING_SLOT_WORDS];
  size_t count = 0;
  uint64_t seq = 0;
  kj::ArrayPtr<const capnp::word> payload() const { return kj::arrayPtr(words, count); }
};

RingStatus popMessage(RingConsumer& ring, PoppedMessage& out);

// Wakes whoever sleeps on the eventfd.
void signalEventfd(int fd);
// Empties a non-blocking eventfd.
void drainEventfd(int fd);

}  // namespace bulkhead
