#include "channel/ring.h"

#include <cstring>

namespace bulkhead {

namespace {

RingHeader* headerOf(void* memory) { return static_cast<RingHeader*>(memory); }

RingSlot* slotsOf(void* memory) {
  return reinterpret_cast<RingSlot*>(static_cast<char*>(memory) + sizeof(RingHeader));
}

}  // namespace

bool ringSlotsValid(uint32_t slots) {
  return slots >= 2 && slots <= 65536 && (slots & (slots - 1)) == 0;
}

size_t ringBytes(uint32_t slots) { return sizeof(RingHeader) + size_t{slots} * sizeof(RingSlot); }

void ringInit(void* memory, uint32_t slots, uint64_t firstSeq) {
  memset(memory, 0, ringBytes(slots));
  RingHeader* header = headerOf(memory);
  header->head.store(firstSeq, std::memory_order_relaxed);
  header->tail.store(firstSeq, std::memory_order_relaxed);
  header->consumerSleeping.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

RingProducer::RingProducer(void* memory, uint32_t slots)
    : header(headerOf(memory)),
      slotArray(slotsOf(memory)),
      slots(slots),
      head(header->head.load(std::memory_order_acquire)) {}

RingStatus RingProducer::push(kj::ArrayPtr<const uint64_t> payload) {
  if (payload.size() > RING_SLOT_WORDS) return RingStatus::CORRUPT;
  uint64_t tail = header->tail.load(std::memory_order_acquire);
  uint64_t used = head - tail;  // unsigned difference: correct across wrap
  if (used > slots) return RingStatus::CORRUPT;
  if (used == slots) return RingStatus::FULL;
  RingSlot& slot = slotArray[head & (slots - 1)];
  memcpy(slot.payload, payload.begin(), payload.size() * sizeof(uint64_t));
  slot.words = payload.size();
  slot.seq.store(head, std::memory_order_relaxed);
  ++head;
  header->head.store(head, std::memory_order_release);
  return RingStatus::OK;
}

bool RingProducer::consumerNeedsWake() {
  // Pairs with the fence in RingConsumer::prepareSleep(): either the consumer sees our new head
  // or we see its flag.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (header->consumerSleeping.load(std::memory_order_relaxed) == 0) return false;
  return header->consumerSleeping.exchange(0, std::memory_order_acq_rel) != 0;
}

uint64_t RingProducer::pending() {
  uint64_t used = head - header->tail.load(std::memory_order_acquire);
  return used > slots ? slots : used;
}

RingConsumer::RingConsumer(void* memory, uint32_t slots)
    : header(headerOf(memory)),
      slotArray(slotsOf(memory)),
      slots(slots),
      tail(header->tail.load(std::memory_order_acquire)) {}

RingConsumer::RingConsumer(void* memory, uint32_t slots, Deferred, uint64_t startSeq)
    : header(headerOf(memory)), slotArray(slotsOf(memory)), slots(slots), tail(startSeq) {
  deferRelease = true;
  uint64_t released = header->tail.load(std::memory_order_acquire);
  uint64_t head = header->head.load(std::memory_order_acquire);
  // The start must lie in [released, head]: released slots may already hold new requests.
  startValid = startSeq - released <= head - released && head - released <= slots;
  if (startValid) header->tail.store(startSeq, std::memory_order_release);
}

void RingConsumer::release(uint64_t upTo) {
  uint64_t released = header->tail.load(std::memory_order_relaxed);
  if (upTo - released <= tail - released) header->tail.store(upTo, std::memory_order_release);
}

bool RingConsumer::hasMessages() { return header->head.load(std::memory_order_acquire) != tail; }

RingStatus RingConsumer::pop(kj::ArrayPtr<uint64_t> out, size_t& words, uint64_t& seq) {
  uint64_t head = header->head.load(std::memory_order_acquire);
  uint64_t available = head - tail;
  if (available == 0) return RingStatus::EMPTY;
  if (available > slots) return RingStatus::CORRUPT;
  RingSlot& slot = slotArray[tail & (slots - 1)];
  uint64_t slotSeq = slot.seq.load(std::memory_order_relaxed);
  uint32_t slotWords = slot.words;
  if (slotSeq != tail || slotWords > RING_SLOT_WORDS || slotWords > out.size()) {
    return RingStatus::CORRUPT;
  }
  memcpy(out.begin(), slot.payload, slotWords * sizeof(uint64_t));
  words = slotWords;
  seq = tail;
  ++tail;
  if (!deferRelease) header->tail.store(tail, std::memory_order_release);
  return RingStatus::OK;
}

bool RingConsumer::prepareSleep() {
  header->consumerSleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (hasMessages()) {
    cancelSleep();
    return false;
  }
  return true;
}

bool RingConsumer::requestWake() {
  header->consumerSleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return !hasMessages();
}

void RingConsumer::cancelSleep() { header->consumerSleeping.store(0, std::memory_order_relaxed); }

}  // namespace bulkhead
