#include "faults/fault-engine.h"

#include <kj/debug.h>

namespace bulkhead {

namespace {
constexpr uint8_t ANY_STATE = 0xff;
}  // namespace

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint8_t FaultEngine::stateIndex(const std::string& name) {
  for (size_t i = 0; i < stateNames.size(); ++i) {
    if (stateNames[i] == name) return i;
  }
  KJ_REQUIRE(stateNames.size() < MAX_FAULT_STATES, "a fault plan may name at most 16 states");
  stateNames.push_back(name);
  return stateNames.size() - 1;
}

bool isSupervisorAction(protocol::FaultAction::Reader action) {
  switch (action.which()) {
    case protocol::FaultAction::KILL:
    case protocol::FaultAction::STOP:
    case protocol::FaultAction::SEVER:
      return true;
    default:
      return false;
  }
}

void FaultEngine::load(protocol::FaultPlan::Reader plan, const std::string& device, Side side) {
  copy = kj::heap<capnp::MallocMessageBuilder>();
  copy->setRoot(plan);
  auto owned = copy->getRoot<protocol::FaultPlan>().asReader();
  rules.clear();
  names.clear();
  stateNames = {""};
  engineState = FaultEngineState{};
  uint16_t index = 0;
  for (auto rule : owned.getRules()) {
    ++index;
    if (!device.empty() && rule.getDevice() != device) continue;
    if (isSupervisorAction(rule.getAction()) != (side == Side::SUPERVISOR)) continue;
    KJ_REQUIRE(rules.size() < MAX_FAULT_RULES, "a device may have at most 32 fault rules");
    Rule entry{rule, ANY_STATE, ANY_STATE};
    if (rule.getWhenState().size() > 0) entry.whenState = stateIndex(rule.getWhenState());
    if (rule.getSetState().size() > 0) entry.setState = stateIndex(rule.getSetState());
    // Each rule's generator depends on the seed and the rule's place in the whole plan only.
    engineState.rules[rules.size()].random = owned.getSeed() ^ (0x632be59bd9b4e019ull * index);
    rules.push_back(entry);
    names.push_back(rule.getName());
  }
}

std::vector<FiredFault> FaultEngine::onEvent(FaultEventKind kind, uint64_t address,
                                             uint64_t value) {
  std::vector<FiredFault> fired;
  if (rules.empty()) return fired;
  uint64_t event = ++engineState.events;
  for (size_t i = 0; i < rules.size(); ++i) {
    const Rule& rule = rules[i];
    auto r = rule.reader;
    bool kindMatches = false;
    switch (r.getOn()) {
      case protocol::FaultEvent::ACCESS:
        kindMatches = kind == FaultEventKind::READ || kind == FaultEventKind::WRITE;
        break;
      case protocol::FaultEvent::READ:
        kindMatches = kind == FaultEventKind::READ;
        break;
      case protocol::FaultEvent::WRITE:
        kindMatches = kind == FaultEventKind::WRITE;
        break;
      case protocol::FaultEvent::IRQ:
        kindMatches = kind == FaultEventKind::IRQ;
        break;
      case protocol::FaultEvent::DMA:
        kindMatches = kind == FaultEventKind::DMA;
        break;
      default:
        break;  // an event kind from a newer plan: never matches
    }
    if (!kindMatches) continue;
    if (r.getHasAddress() && r.getAddress() != address) continue;
    if (r.getHasValue() && r.getValue() != value) continue;
    if (r.getFromEvent() != 0 && event < r.getFromEvent()) continue;
    if (r.getToEvent() != 0 && event > r.getToEvent()) continue;
    if (rule.whenState != ANY_STATE && rule.whenState != engineState.state) continue;
    FaultRuleState& s = engineState.rules[i];
    uint64_t matched = ++s.matched;
    uint64_t nth = r.getNth() == 0 ? 1 : r.getNth();
    bool due = matched == nth ||
               (matched > nth && r.getEvery() != 0 && (matched - nth) % r.getEvery() == 0);
    if (!due || (r.getCount() != 0 && s.fired >= r.getCount())) continue;
    double probability = r.getProbability();
    if (probability < 1.0) {
      // 53 random bits as a fraction in [0, 1).
      double draw = static_cast<double>(splitmix64(s.random) >> 11) * 0x1.0p-53;
      if (!(draw < probability)) continue;
    }
    ++s.fired;
    if (rule.setState != ANY_STATE) engineState.state = rule.setState;
    fired.push_back({static_cast<uint16_t>(i), event, r.getAction()});
  }
  return fired;
}

}  // namespace bulkhead
