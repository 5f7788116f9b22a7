#include "faults/fault-plan.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "faults/fault-engine.h"

namespace bulkhead {

namespace {

bool number(const std::string& text, uint64_t& out) {
  if (text.empty() || text[0] == '-') return false;
  char* end = nullptr;
  errno = 0;
  out = strtoull(text.c_str(), &end, 0);
  return errno == 0 && *end == '\0';
}

bool validName(const std::string& text) {
  if (text.empty() || text.size() > 40) return false;
  for (char c : text) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

struct Line {
  int number;
  std::string error;
  std::string fail(const std::string& what) const {
    return "fault plan line " + std::to_string(number) + ": " + what;
  }
};

// Sets the action from "NAME" or "NAME:ARGUMENT"; returns an error or "".
std::string setAction(const std::string& text, protocol::FaultAction::Builder action,
                      protocol::FaultEvent on) {
  std::string name = text.substr(0, text.find(':'));
  std::string argument = text.find(':') == std::string::npos ? "" : text.substr(text.find(':') + 1);
  uint64_t value = 0;
  bool needsArgument = name == "delay" || name == "answer" || name == "flip" || name == "corrupt" ||
                       name == "delay-irq" || name == "dma-short" || name == "dma-flip";
  if (needsArgument && !number(argument, value)) {
    return "action " + name + " needs a number, e.g. " + name + ":0x20";
  }
  if (!needsArgument && !argument.empty()) return "action " + name + " takes no argument";
  bool access = on == protocol::FaultEvent::ACCESS || on == protocol::FaultEvent::READ ||
                on == protocol::FaultEvent::WRITE;
  bool dma = on == protocol::FaultEvent::DMA;
  bool reads = on == protocol::FaultEvent::READ || on == protocol::FaultEvent::ACCESS;
  bool writes = on == protocol::FaultEvent::WRITE || on == protocol::FaultEvent::ACCESS;
  auto needs = [&](bool ok, const char* event) -> std::string {
    return ok ? "" : "action " + name + " needs on=" + event;
  };
  if (name == "drop") {
    action.setDrop();
    return needs(access, "access, read or write");
  } else if (name == "delay") {
    action.setDelay(value);
    return needs(access, "access, read or write");
  } else if (name == "answer") {
    action.setAnswer(value);
    return needs(reads, "read");
  } else if (name == "flip") {
    action.setFlip(value);
    return needs(reads, "read");
  } else if (name == "corrupt") {
    action.setCorrupt(value);
    return needs(writes, "write");
  } else if (name == "lose-irq") {
    action.setLoseIrq();
    return needs(on == protocol::FaultEvent::IRQ, "irq");
  } else if (name == "duplicate-irq") {
    action.setDuplicateIrq();
    return needs(on == protocol::FaultEvent::IRQ, "irq");
  } else if (name == "delay-irq") {
    action.setDelayIrq(value);
    return needs(on == protocol::FaultEvent::IRQ, "irq");
  } else if (name == "spurious-irq") {
    action.setSpuriousIrq();
  } else if (name == "crash") {
    action.setCrash();
  } else if (name == "hang") {
    action.setHang();
  } else if (name == "kill") {
    action.setKill();
    return needs(access, "access, read or write");
  } else if (name == "stop") {
    action.setStop();
    return needs(access, "access, read or write");
  } else if (name == "sever") {
    action.setSever();
    return needs(access, "access, read or write");
  } else if (name == "dma-refuse") {
    action.setDmaRefuse();
    return needs(dma, "dma");
  } else if (name == "dma-short") {
    action.setDmaShort(value);
    return needs(dma, "dma");
  } else if (name == "dma-flip") {
    action.setDmaFlip(value);
    return needs(dma, "dma");
  } else {
    return "unknown action '" + name +
           "' (drop, delay:US, answer:V, flip:MASK, corrupt:MASK, lose-irq, duplicate-irq, "
           "delay-irq:US, spurious-irq, crash, hang, kill, stop, sever, dma-refuse, dma-short:N, "
           "dma-flip:MASK)";
  }
  return "";
}

// The limits the fault engine runs within (fault-engine.h), checked here so that a plan over
// them is bad input, not a failure when a device loads it.
std::string checkLimits(protocol::FaultPlan::Reader plan) {
  std::map<std::string, size_t> perDevice;
  std::set<std::string> states;
  for (auto rule : plan.getRules()) {
    std::string device = rule.getDevice();
    if (++perDevice[device] > MAX_FAULT_RULES) {
      return "rule " + std::string(rule.getName().cStr()) + ": device " + device +
             " has more than " + std::to_string(MAX_FAULT_RULES) +
             " rules; a device may have at most " + std::to_string(MAX_FAULT_RULES);
    }
    for (capnp::Text::Reader state : {rule.getWhenState(), rule.getSetState()}) {
      if (state.size() > 0) states.insert(state);
    }
  }
  if (states.size() > MAX_FAULT_STATES - 1) {
    return "the plan names " + std::to_string(states.size()) + " states; at most " +
           std::to_string(MAX_FAULT_STATES - 1) + " besides the initial one";
  }
  return "";
}

std::string parseLines(const std::string& text, protocol::FaultPlan::Builder plan) {
  std::istringstream input(text);
  std::string raw;
  struct Parsed {
    std::vector<std::pair<std::string, std::string>> fields;
    std::string name;
    int line;
  };
  std::vector<Parsed> rules;
  int lineNumber = 0;
  bool seedGiven = false;
  while (std::getline(input, raw)) {
    ++lineNumber;
    Line line{lineNumber, ""};
    std::string content = raw.substr(0, raw.find('#'));
    std::istringstream words(content);
    std::string keyword;
    if (!(words >> keyword)) continue;
    if (keyword == "seed") {
      std::string value, extra;
      uint64_t seed = 0;
      if (!(words >> value) || !number(value, seed) || (words >> extra)) {
        return line.fail("seed needs one number, e.g. seed 42");
      }
      plan.setSeed(seed);
      seedGiven = true;
    } else if (keyword == "rule") {
      Parsed rule{{}, "", lineNumber};
      if (!(words >> rule.name) || !validName(rule.name) ||
          rule.name.find('=') != std::string::npos) {
        return line.fail("a rule starts with its name: rule NAME key=value ...");
      }
      std::string field;
      while (words >> field) {
        size_t equals = field.find('=');
        if (field == "once") {
          rule.fields.emplace_back("count", "1");
        } else if (equals == std::string::npos || equals == 0 || equals + 1 == field.size()) {
          return line.fail("'" + field + "' is not key=value");
        } else {
          rule.fields.emplace_back(field.substr(0, equals), field.substr(equals + 1));
        }
      }
      rules.push_back(std::move(rule));
    } else {
      return line.fail("unknown keyword '" + keyword + "' (seed, rule)");
    }
  }
  if (!seedGiven) plan.setSeed(0);
  auto list = plan.initRules(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) {
    Line line{rules[i].line, ""};
    auto rule = list[i];
    rule.setName(rules[i].name);
    std::string actionText;
    bool hasDevice = false, hasOn = false;
    for (auto& field : rules[i].fields) {
      const std::string& key = field.first;
      const std::string& value = field.second;
      uint64_t n = 0;
      bool numeric = number(value, n);
      auto needNumber = [&]() { return line.fail(key + "=" + value + " is not a number"); };
      if (key == "device") {
        if (!validName(value)) return line.fail("device=" + value + " is not a device kind");
        rule.setDevice(value);
        hasDevice = true;
      } else if (key == "on") {
        hasOn = true;
        if (value == "access") {
          rule.setOn(protocol::FaultEvent::ACCESS);
        } else if (value == "read") {
          rule.setOn(protocol::FaultEvent::READ);
        } else if (value == "write") {
          rule.setOn(protocol::FaultEvent::WRITE);
        } else if (value == "irq") {
          rule.setOn(protocol::FaultEvent::IRQ);
        } else if (value == "dma") {
          rule.setOn(protocol::FaultEvent::DMA);
        } else {
          return line.fail("on=" + value + ": use access, read, write, irq or dma");
        }
      } else if (key == "address" || key == "line") {
        if (!numeric) return needNumber();
        rule.setAddress(n);
        rule.setHasAddress(true);
      } else if (key == "value") {
        if (!numeric) return needNumber();
        rule.setValue(n);
        rule.setHasValue(true);
      } else if (key == "nth") {
        if (!numeric || n == 0) return line.fail("nth counts from 1");
        rule.setNth(n);
      } else if (key == "every") {
        if (!numeric) return needNumber();
        rule.setEvery(n);
      } else if (key == "count") {
        if (!numeric) return needNumber();
        rule.setCount(n);
      } else if (key == "from") {
        if (!numeric) return needNumber();
        rule.setFromEvent(n);
      } else if (key == "to") {
        if (!numeric) return needNumber();
        rule.setToEvent(n);
      } else if (key == "probability") {
        char* end = nullptr;
        double p = strtod(value.c_str(), &end);
        if (*end != '\0' || !(p >= 0.0 && p <= 1.0)) {
          return line.fail("probability=" + value + " is not between 0 and 1");
        }
        rule.setProbability(p);
      } else if (key == "when") {
        if (!validName(value)) return line.fail("when=" + value + " is not a state name");
        rule.setWhenState(value);
      } else if (key == "set") {
        if (!validName(value)) return line.fail("set=" + value + " is not a state name");
        rule.setSetState(value);
      } else if (key == "action") {
        actionText = value;
      } else {
        return line.fail("unknown field '" + key +
                         "' (device, on, address, value, nth, every, count, once, from, to, "
                         "probability, when, set, action)");
      }
    }
    if (!hasDevice) return line.fail("rule " + rules[i].name + " names no device=");
    if (!hasOn) return line.fail("rule " + rules[i].name + " needs on=access|read|write|irq");
    if (actionText.empty()) return line.fail("rule " + rules[i].name + " has no action=");
    std::string error = setAction(actionText, rule.initAction(), rule.getOn());
    if (!error.empty()) return line.fail(error);
  }
  return "";
}

// An error quotes the plan's own text, which may be anything (a binary file given by mistake):
// bytes outside printable ASCII are shown as \xNN, and a long quote is cut.
std::string printableError(const std::string& error) {
  constexpr size_t LIMIT = 240;
  std::string shown;
  for (size_t i = 0; i < error.size() && shown.size() < LIMIT; ++i) {
    unsigned char byte = error[i];
    if (byte >= 0x20 && byte < 0x7f) {
      shown += static_cast<char>(byte);
    } else {
      char escaped[5];
      snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
      shown += escaped;
    }
  }
  if (shown.size() >= LIMIT) shown += "...";
  return shown;
}

}  // namespace

absl::Status parseFaultPlan(const std::string& text, protocol::FaultPlan::Builder plan) {
  std::string error = parseLines(text, plan);
  if (error.empty()) error = checkLimits(plan.asReader());
  if (!error.empty()) return absl::InvalidArgumentError(printableError(error));
  return absl::OkStatus();
}

void selectFaultRules(protocol::FaultPlan::Reader plan, const std::string& kind,
                      protocol::FaultPlan::Builder out) {
  out.setSeed(plan.getSeed());
  size_t count = 0;
  for (auto rule : plan.getRules()) count += rule.getDevice() == kind;
  auto rules = out.initRules(count);
  size_t i = 0;
  for (auto rule : plan.getRules()) {
    if (rule.getDevice() == kind) rules.setWithCaveats(i++, rule);
  }
}

std::string describeFaultAction(protocol::FaultAction::Reader action) {
  auto hex = [](uint64_t v) {
    std::ostringstream out;
    out << "0x" << std::hex << v;
    return out.str();
  };
  switch (action.which()) {
    case protocol::FaultAction::DROP:
      return "drop";
    case protocol::FaultAction::DELAY:
      return "delay:" + std::to_string(action.getDelay());
    case protocol::FaultAction::ANSWER:
      return "answer:" + hex(action.getAnswer());
    case protocol::FaultAction::FLIP:
      return "flip:" + hex(action.getFlip());
    case protocol::FaultAction::CORRUPT:
      return "corrupt:" + hex(action.getCorrupt());
    case protocol::FaultAction::LOSE_IRQ:
      return "lose-irq";
    case protocol::FaultAction::DUPLICATE_IRQ:
      return "duplicate-irq";
    case protocol::FaultAction::DELAY_IRQ:
      return "delay-irq:" + std::to_string(action.getDelayIrq());
    case protocol::FaultAction::SPURIOUS_IRQ:
      return "spurious-irq";
    case protocol::FaultAction::CRASH:
      return "crash";
    case protocol::FaultAction::HANG:
      return "hang";
    case protocol::FaultAction::KILL:
      return "kill";
    case protocol::FaultAction::STOP:
      return "stop";
    case protocol::FaultAction::SEVER:
      return "sever";
    case protocol::FaultAction::DMA_REFUSE:
      return "dma-refuse";
    case protocol::FaultAction::DMA_SHORT:
      return "dma-short:" + std::to_string(action.getDmaShort());
    case protocol::FaultAction::DMA_FLIP:
      return "dma-flip:" + hex(action.getDmaFlip());
    default:
      return "unknown";
  }
}

}  // namespace bulkhead
