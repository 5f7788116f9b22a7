// A split virtqueue (virtio 1.x, section 2.7) read and written in the device's DMA window.
//
// The driver (the guest) owns the descriptor table and the available ring and may rewrite them
// at any moment, so every field is copied once and checked before use: ring addresses must lie
// in the window, a chain may not loop or be longer than the queue, every buffer must lie in the
// window, device-writable buffers must follow the readable ones, and a chain carries at most
// MAX_CHAIN_BYTES. A queue that breaks a rule is "broken": the transport reports NEEDS_RESET
// and stops serving it, as the virtio spec asks of a device that meets a driver error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dma-memory.h"

namespace bulkhead::sdk::virtio {

constexpr uint16_t MAX_QUEUE_SIZE = 32768;
constexpr uint64_t MAX_CHAIN_BYTES = 64ull << 20;

struct Buffer {
  uint64_t address;
  uint32_t length;
  bool writable;  // device-writable (the device fills it)
};

struct Chain {
  uint16_t head = 0;
  std::vector<Buffer> buffers;  // readable ones first, then writable ones
  uint64_t readableBytes = 0;
  uint64_t writableBytes = 0;
};

// Where a queue lives and how far the device has got; the transport keeps it in the declared
// state so a restarted server continues the queue.
struct QueueState {
  uint16_t size;  // as the driver set it; a power of two
  uint16_t enabled;
  uint16_t lastAvail;  // next available-ring entry the device will take
  uint16_t used;       // the used ring's index as the device last published it
  uint64_t descriptors;
  uint64_t driverArea;  // the available ring
  uint64_t deviceArea;  // the used ring
  // A chain served and committed but perhaps not yet on the used ring (see virtio-pci.h).
  uint32_t pendingLength;
  uint16_t pendingHead;
  uint16_t pending;  // 1 while pendingHead/pendingLength await publishing
};

// Whether a queue's size and rings are usable; `why` says what is wrong.
bool queueValid(const DmaMemory& memory, const QueueState& queue, std::string* why);

class Virtqueue {
 public:
  // `queue` must have passed queueValid(); it is updated in place.
  Virtqueue(const DmaMemory& memory, QueueState& queue) : memory(memory), queue(queue) {}

  enum class Pop { EMPTY, CHAIN, BROKEN };
  // Takes the next available chain into `chain`. BROKEN sets `why`.
  Pop pop(Chain& chain, std::string* why);
  // Puts a finished chain on the used ring and publishes the new index.
  bool push(uint16_t head, uint32_t written);
  // Whether the driver wants an interrupt for used buffers (VIRTQ_AVAIL_F_NO_INTERRUPT clear).
  bool wantsInterrupt() const;

 private:
  bool readChain(uint16_t head, Chain& chain, std::string* why);

  const DmaMemory& memory;
  QueueState& queue;
};

}  // namespace bulkhead::sdk::virtio
