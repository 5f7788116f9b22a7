// The state region: where a device server keeps what must survive its own death.
//
// One memfd per device, created and owned by the core, mapped by each incarnation of the
// server. It holds two checkpoint copies and a commit word (which copy is current), and an
// output log the core drains to the host.
//
// After every request the server writes a complete checkpoint — the device's declared state,
// the sequence number of that request, the answer it gave (if any), its interrupt levels and
// how far its output log reaches — into the copy that is *not* current, then flips the commit
// word with one release store. A crash at any instant leaves one whole committed copy: either
// the old one (the request will run again, from the state before it) or the new one (it ran,
// and its answer is re-sent). docs/recovery.md argues why every request then takes effect
// exactly once.
//
// The core reads only `committedOutput` and the log bytes before it, and treats both as
// hostile (bounds-checked); it never interprets the device's state.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bulkhead {

constexpr size_t STATE_MAX_BYTES = 2048;        // a device's declared state, at most
constexpr size_t FAULT_STATE_MAX_BYTES = 1024;  // the fault engine's state, at most
constexpr size_t OUTPUT_LOG_BYTES = 64 * 1024;  // a power of two

enum class ReplyKind : uint8_t { NONE = 0, READ = 1, DONE = 2 };

struct Checkpoint {
  uint64_t lastSeq;     // the last request whose effects this copy includes
  uint64_t outputHead;  // bytes ever appended to the output log, including lastSeq's
  uint64_t replySeq;    // the last request that needed an answer, and the answer
  uint64_t replyValue;
  uint8_t replyKind;  // ReplyKind
  uint8_t reserved[3];
  uint32_t irqLevels;   // bit n: level of ISA line n
  uint32_t stateBytes;  // how much of `state` the device declared
  uint32_t reserved2;
  uint64_t faultsThrough;  // faults of requests up to this one were already decided
  // The fault engine's state (faults/fault-engine.h), so its sequence survives a restart. The
  // channel keeps it as bytes; the SDK checks `faultBytes` before it copies them back.
  uint32_t faultBytes;
  uint32_t reserved3;
  uint8_t faults[FAULT_STATE_MAX_BYTES];
  uint8_t state[STATE_MAX_BYTES];
};

struct StateRegionHeader {
  // Bit 0: the current copy. Bits 1-63: the number of commits so far (0 = nothing committed).
  alignas(64) std::atomic<uint64_t> commitWord;
  alignas(64) std::atomic<uint64_t> committedOutput;  // server-written: log bytes the core may take
  alignas(64) std::atomic<uint64_t> outputTail;       // core-written: log bytes the core took
  std::atomic<uint32_t> outputWanted;  // core-written: notify me (Reply.output) of new output
};

struct StateRegionLayout {
  StateRegionHeader header;
  Checkpoint copies[2];
  alignas(64) uint8_t outputLog[OUTPUT_LOG_BYTES];
};

constexpr size_t stateRegionBytes() { return (sizeof(StateRegionLayout) + 4095) & ~size_t{4095}; }

// The server's view: restore on start, commit after each request.
class StateWriter {
 public:
  explicit StateWriter(void* region) : layout(static_cast<StateRegionLayout*>(region)) {}

  // The committed checkpoint, or nullptr when nothing was ever committed.
  const Checkpoint* committed() const;
  // The copy to fill for the next commit (never the committed one).
  Checkpoint& next();
  // Publishes `next()` as the committed copy.
  void commit();

  // Output log: room left before the core's unread bytes would be overwritten.
  size_t outputRoom(uint64_t head) const;
  void writeOutput(uint64_t head, const uint8_t* bytes, size_t count);

 private:
  StateRegionLayout* layout;
};

}  // namespace bulkhead
