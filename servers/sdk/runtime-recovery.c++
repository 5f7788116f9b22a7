// Recovery (docs/recovery.md): every request is executed, checkpointed into the state region
// with its sequence number and answer, committed, and only then released from the ring and
// answered. A restarted server resumes right after the last commit.
#include "runtime.h"

#include <cstring>
#include <type_traits>

namespace bulkhead::sdk {

void Runtime::resume(const Checkpoint& saved) {
  kj::ArrayPtr<uint8_t> declared = device->declaredState();
  KJ_REQUIRE(saved.stateBytes == declared.size() && declared.size() <= STATE_MAX_BYTES,
             "the committed state does not match this device's declared state");
  memcpy(declared.begin(), saved.state, declared.size());
  device->stateRestored();
  outputHead = saved.outputHead;
  irqBits = saved.irqLevels & declaredLines;
  replySeq = saved.replySeq;
  replyValue = saved.replyValue;
  replyKind = static_cast<ReplyKind>(saved.replyKind);
  KJ_REQUIRE(saved.faultBytes == sizeof(FaultEngineState),
             "the committed fault state does not match this fault engine's");
  memcpy(&faults.state(), saved.faults, sizeof(FaultEngineState));
  faultsThrough = saved.faultsThrough;
  faultsDecided = true;
  stateMapping->header().committedOutput.store(outputHead, std::memory_order_release);
  // The answer to the last committed request may not have reached the core; the core ignores
  // answers it already has.
  if (replyKind != ReplyKind::NONE) pushAnswer();
  for (uint8_t line = 0; line < ISA_LINES; ++line) {
    if (declaredLines & (1u << line)) pushIrq(line, irqBits & (1u << line));
  }
  pciLevel = saved.irqLevels & PCI_LEVEL_BIT;
  notifyOutput(/*force=*/true);
}

void Runtime::commit(uint64_t seq) {
  Checkpoint& next = state->next();
  next.lastSeq = seq;
  next.outputHead = outputHead;
  next.replySeq = replySeq;
  next.replyValue = replyValue;
  next.replyKind = static_cast<uint8_t>(replyKind);
  next.irqLevels = irqBits | (pciLevel ? PCI_LEVEL_BIT : 0);
  saveFaults(next);
  next.faultsThrough = faultsThrough;
  kj::ArrayPtr<uint8_t> declared = device->declaredState();
  KJ_REQUIRE(declared.size() <= STATE_MAX_BYTES, "declared state is larger than 2 KiB");
  next.stateBytes = declared.size();
  memcpy(next.state, declared.begin(), declared.size());
  state->commit();
}

void Runtime::commitFaultsDecided() {
  const Checkpoint* committed = state->committed();
  Checkpoint& next = state->next();
  memcpy(&next, committed, sizeof(Checkpoint));
  saveFaults(next);
  next.faultsThrough = currentSeq;
  state->commit();
}

void Runtime::saveFaults(Checkpoint& next) {
  static_assert(sizeof(FaultEngineState) <= FAULT_STATE_MAX_BYTES);
  static_assert(std::is_trivially_copyable_v<FaultEngineState>);
  next.faultBytes = sizeof(FaultEngineState);
  memcpy(next.faults, &faults.state(), sizeof(FaultEngineState));
}

}  // namespace bulkhead::sdk
