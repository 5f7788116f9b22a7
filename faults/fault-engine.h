// The fault engine: decides, event by event, which rules of a device's fault plan fire.
//
// Deterministic: the only inputs are the plan, its seed and the sequence of events, so the same
// guest run with the same plan and seed fires the same faults on the same events. Each rule
// draws from its own generator (splitmix64 seeded from the plan's seed and the rule's index),
// and only when the rule is otherwise due, so one rule's randomness never shifts another's.
//
// All its state is one plain struct, checkpointed with the device's state, so a restarted
// server continues the same sequence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <capnp/message.h>

#include "faults.capnp.h"

namespace bulkhead {

constexpr size_t MAX_FAULT_RULES = 32;
constexpr size_t MAX_FAULT_STATES = 16;

enum class FaultEventKind : uint8_t { READ, WRITE, IRQ, DMA };

struct FaultRuleState {
  uint64_t matched;  // matching events so far
  uint64_t fired;
  uint64_t random;  // the rule's generator state
};

struct FaultEngineState {
  uint64_t events;  // events seen (all kinds)
  uint8_t state;    // index into the plan's state names; 0 is the initial, unnamed state
  uint8_t reserved[7];
  FaultRuleState rules[MAX_FAULT_RULES];
};

struct FiredFault {
  uint16_t rule;
  uint64_t event;
  protocol::FaultAction::Reader action;
};

class FaultEngine {
 public:
  FaultEngine() = default;
  // Which rules an engine runs: the server's (everything but the supervisor's actions) or the
  // supervisor's (kill, stop, sever), which the core carries out.
  enum class Side { SERVER, SUPERVISOR };

  // Takes the rules of `plan` for `side` that apply to `device` (any device when empty).
  // Throws (KJ_REQUIRE) on a plan this engine cannot run: too many rules or states.
  void load(protocol::FaultPlan::Reader plan, const std::string& device, Side side = Side::SERVER);
  bool empty() const { return rules.empty(); }

  // Counts one event and returns the rules that fire on it, in plan order.
  std::vector<FiredFault> onEvent(FaultEventKind kind, uint64_t address, uint64_t value);

  FaultEngineState& state() { return engineState; }
  const std::string& ruleName(uint16_t rule) const { return names[rule]; }

 private:
  struct Rule {
    protocol::FaultRule::Reader reader;
    uint8_t whenState;  // 0xff: any
    uint8_t setState;   // 0xff: unchanged
  };
  uint8_t stateIndex(const std::string& name);

  kj::Own<capnp::MallocMessageBuilder> copy;  // the plan, owned here
  std::vector<Rule> rules;
  std::vector<std::string> names;
  std::vector<std::string> stateNames{""};
  FaultEngineState engineState{};
};

// Whether the core's supervisor, not the server, carries out this action.
bool isSupervisorAction(protocol::FaultAction::Reader action);

// splitmix64: the generator the engine uses, exposed for tests.
uint64_t splitmix64(uint64_t& state);

}  // namespace bulkhead
