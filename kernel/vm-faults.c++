// The VM's fault plan: parsed and checked against its devices, handed to each device (its own
// rules), and every fault that fired recorded in the fault log.
#include "kernel/vm.h"

#include <unistd.h>

#include <absl/strings/str_format.h>

#include "faults/fault-plan.h"
#include "kernel/base/log.h"
#include "kernel/base/status-macros.h"

namespace bulkhead {

absl::Status Vm::loadFaults(const std::string& text) {
  auto parsed = std::make_shared<capnp::MallocMessageBuilder>();
  auto root = parsed->initRoot<protocol::FaultPlan>();
  RETURN_IF_ERROR(parseFaultPlan(text, root));
  if (seedOverride) root.setSeed(*seedOverride);
  for (auto rule : root.asReader().getRules()) {
    bool present = false;
    for (auto& process : processes) present = present || process->kind() == rule.getDevice();
    if (!present) {
      return absl::InvalidArgumentError(
          absl::StrFormat("rule %s names device %s, which this VM does not have",
                          rule.getName().cStr(), rule.getDevice().cStr()));
    }
  }
  plan = root.getRules().size() > 0 ? parsed : nullptr;
  planText = text;
  planEnabled = true;
  return absl::OkStatus();
}

kj::Promise<void> Vm::applyFaults() {
  kj::Vector<kj::Promise<void>> applied;
  // Every change is a new generation, even one to no rules, so a server's report of a rule
  // from before the change is told apart (protocols/faults.capnp).
  ++faultGeneration;
  for (auto& process : processes) {
    auto rules = std::make_shared<capnp::MallocMessageBuilder>();
    auto root = rules->initRoot<protocol::FaultPlan>();
    if (plan != nullptr && planEnabled) {
      selectFaultRules(plan->getRoot<protocol::FaultPlan>().asReader(), process->kind(), root);
    }
    root.setGeneration(faultGeneration);
    applied.add(process->setFaults(rules));
  }
  return kj::joinPromises(applied.releaseAsArray());
}

void Vm::faultFired(const std::string& device, const std::string& rule, const std::string& action,
                    uint64_t event) {
  if (faultLogFd == nullptr) {
    if (faultLines.admit()) {
      logf("fault %s fired on device %s (%s, event %u)", rule, device, action, event);
    }
    return;
  }
  // Names are checked by the plan parser ([A-Za-z0-9._-]), so they need no JSON escaping.
  std::string line =
      absl::StrFormat("{\"device\":\"%s\",\"rule\":\"%s\",\"action\":\"%s\",\"event\":%u}\n",
                      device, rule, action, event);
  std::lock_guard<std::mutex> lock(faultLogLock);
  ssize_t ignored = ::write(faultLogFd.get(), line.data(), line.size());
  (void)ignored;
}

}  // namespace bulkhead
