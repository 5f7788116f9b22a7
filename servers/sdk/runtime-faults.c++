// The fault hooks between the device and the channel (docs/fault-injection.md): which rules of
// the plan fire on an event, what they do to the access, and how a replayed request keeps the
// faults it already had.
#include "runtime.h"

#include <thread>

namespace bulkhead::sdk {

void Runtime::setFaults(protocol::FaultPlan::Reader plan) {
  faults.load(plan, "");
  faultGeneration = plan.getGeneration();
  faultsDecided = false;
}

Runtime::Tampering Runtime::tamper(uint64_t seq, FaultEventKind kind, uint64_t address,
                                   uint64_t value) {
  Tampering t;
  currentSeq = seq;
  // A request replayed after a crash or hang the plan itself caused has had its faults.
  if (faultsDecided && static_cast<int64_t>(seq - faultsThrough) <= 0) return t;
  for (const FiredFault& fault : decideFaults(kind, address, value)) {
    switch (fault.action.which()) {
      case protocol::FaultAction::DROP:
        t.drop = true;
        break;
      case protocol::FaultAction::DELAY:
        pause(fault.action.getDelay());
        break;
      case protocol::FaultAction::ANSWER:
        t.answer = fault.action.getAnswer();
        break;
      case protocol::FaultAction::FLIP:
        t.flip ^= fault.action.getFlip();
        break;
      case protocol::FaultAction::CORRUPT:
        t.corrupt ^= fault.action.getCorrupt();
        break;
      default:
        applyCommon(fault);
        break;
    }
  }
  return t;
}

std::vector<FiredFault> Runtime::decideFaults(FaultEventKind kind, uint64_t address,
                                              uint64_t value) {
  std::vector<FiredFault> fired = faults.onEvent(kind, address, value);
  for (const FiredFault& fault : fired) {
    pushReply([&](protocol::Reply::Builder reply) {
      auto report = reply.initFaultFired();
      report.setRule(fault.rule);
      report.setEvent(fault.event);
      report.setGeneration(faultGeneration);
    });
  }
  return fired;
}

void Runtime::applyCommon(const FiredFault& fault) {
  switch (fault.action.which()) {
    case protocol::FaultAction::SPURIOUS_IRQ:
      for (uint8_t line = 0; line < ISA_LINES; ++line) {
        if (!(declaredLines & (1u << line))) continue;
        bool level = irqBits & (1u << line);
        pushIrq(line, !level);
        pushIrq(line, level);
        return;
      }
      if (pciInterrupt) pushIrq(PCI_LINE, true);  // the device's ISR says "nothing happened"
      break;
    case protocol::FaultAction::CRASH:
      commitFaultsDecided();
      abort();
    case protocol::FaultAction::HANG:
      commitFaultsDecided();
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(3600));
    default:
      break;  // DMA faults act where the device transfers (the DmaMemory hook)
  }
}

void Runtime::pause(uint32_t microseconds) {
  if (inRequest) commitFaultsDecided();
  // At most 10 s: longer only trips the core's watchdog.
  std::this_thread::sleep_for(
      std::chrono::microseconds(std::min<uint32_t>(microseconds, 10000000)));
}

}  // namespace bulkhead::sdk
