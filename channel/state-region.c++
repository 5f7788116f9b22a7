#include "channel/state-region.h"

#include <cstring>

namespace bulkhead {

const Checkpoint* StateWriter::committed() const {
  uint64_t word = layout->header.commitWord.load(std::memory_order_acquire);
  if (word >> 1 == 0) return nullptr;
  return &layout->copies[word & 1];
}

Checkpoint& StateWriter::next() {
  uint64_t word = layout->header.commitWord.load(std::memory_order_relaxed);
  // Before the first commit both copies are free; use copy 0's partner so the first commit
  // lands in copy 1 and the pattern stays uniform.
  return layout->copies[(word & 1) ^ 1];
}

void StateWriter::commit() {
  uint64_t word = layout->header.commitWord.load(std::memory_order_relaxed);
  uint64_t nextCopy = (word & 1) ^ 1;
  uint64_t generation = (word >> 1) + 1;
  layout->header.commitWord.store(generation << 1 | nextCopy, std::memory_order_release);
  // Only after the commit may the core take the new output.
  layout->header.committedOutput.store(layout->copies[nextCopy].outputHead,
                                       std::memory_order_release);
}

size_t StateWriter::outputRoom(uint64_t head) const {
  uint64_t tail = layout->header.outputTail.load(std::memory_order_acquire);
  uint64_t used = head - tail;
  return used >= OUTPUT_LOG_BYTES ? 0 : OUTPUT_LOG_BYTES - used;
}

void StateWriter::writeOutput(uint64_t head, const uint8_t* bytes, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    layout->outputLog[(head + i) & (OUTPUT_LOG_BYTES - 1)] = bytes[i];
  }
}

}  // namespace bulkhead
