// A single-producer, single-consumer ring of fixed-size slots in shared memory.
//
// The device channel uses two of them in one memfd: requests flow core -> server, replies
// server -> core. Each slot carries one Cap'n Proto message and the sequence number the producer
// gave it. Either side may be hostile, so neither trusts what the other wrote: each side keeps
// its own copy of its index, checks the peer's index against it before use, checks every slot's
// sequence number and length, and copies a slot out before parsing it (the peer could change it
// while we read). A violation is reported as `Corrupt`; the caller fences the peer.
//
// Sequence numbers are 64-bit and compared by unsigned difference, so they may wrap.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <kj/common.h>

namespace bulkhead {

constexpr size_t RING_SLOT_BYTES = 256;
constexpr size_t RING_SLOT_WORDS = (RING_SLOT_BYTES - 16) / 8;  // payload, in 8-byte words

struct RingHeader {
  alignas(64) std::atomic<uint64_t> head;  // next sequence number the producer writes
  alignas(64) std::atomic<uint64_t> tail;  // next sequence number the consumer reads
  alignas(64) std::atomic<uint32_t> consumerSleeping;
};

struct RingSlot {
  std::atomic<uint64_t> seq;
  uint32_t words;
  uint32_t reserved;
  uint64_t payload[RING_SLOT_WORDS];
};
static_assert(sizeof(RingSlot) == RING_SLOT_BYTES);

// Bytes needed for one ring of `slots` slots (header included).
size_t ringBytes(uint32_t slots);
// Whether `slots` is an acceptable ring size: a power of two between 2 and 65536.
bool ringSlotsValid(uint32_t slots);

// Writes the initial header of a ring at `memory`. Only the side that owns the memory does this.
void ringInit(void* memory, uint32_t slots, uint64_t firstSeq);

enum class RingStatus { OK, EMPTY, FULL, CORRUPT };

class RingProducer {
 public:
  // `memory` points at a ring initialised by ringInit(); `slots` must match.
  RingProducer(void* memory, uint32_t slots);

  // Copies `payload` into the next slot and publishes it. FULL when the consumer is `slots`
  // behind; CORRUPT when the consumer's index is impossible or the payload does not fit.
  RingStatus push(kj::ArrayPtr<const uint64_t> payload);

  // After a push: whether the consumer said it sleeps and so needs a wake-up (clears the flag).
  bool consumerNeedsWake();

  uint64_t nextSeq() const { return head; }
  // Requests pushed but not yet taken by the consumer, as the consumer reports it (bounded).
  uint64_t pending();

 private:
  RingHeader* header;
  RingSlot* slotArray;
  uint32_t slots;
  uint64_t head;  // our own copy; the shared one is only ever written from it
};

class RingConsumer {
 public:
  RingConsumer(void* memory, uint32_t slots);

  // A consumer that tells the producer a slot is free only when release() says so, so that
  // requests taken but not yet committed survive the consumer's death. It starts at `startSeq`
  // (where the last incarnation's committed work ends), which must lie within the ring's
  // unreleased window; false from `valid()` otherwise.
  struct Deferred {};
  RingConsumer(void* memory, uint32_t slots, Deferred, uint64_t startSeq);
  bool valid() const { return startValid; }
  // Frees every slot before `upTo` (at most what was popped).
  void release(uint64_t upTo);

  // Copies the next message into `out` (which must hold RING_SLOT_WORDS words) and sets
  // `words` and `seq`. EMPTY when nothing is there; CORRUPT when the producer lied.
  RingStatus pop(kj::ArrayPtr<uint64_t> out, size_t& words, uint64_t& seq);

  // Whether a message is waiting. CORRUPT is reported as true so the caller pops and sees it.
  bool hasMessages();

  // Announces that the consumer is about to sleep. Returns false (and withdraws the announcement)
  // when a message arrived meanwhile, so the caller must not sleep.
  bool prepareSleep();
  void cancelSleep();
  // For a consumer shared by several threads (the core's side of the reply ring): asks to be
  // woken and says whether sleeping is safe, but never withdraws the request, which another
  // thread may be relying on. An unneeded wake-up costs little; a missed one stalls.
  bool requestWake();

  uint64_t nextSeq() const { return tail; }

 private:
  RingHeader* header;
  RingSlot* slotArray;
  uint32_t slots;
  uint64_t tail;
  bool deferRelease = false;
  bool startValid = true;
};

}  // namespace bulkhead
