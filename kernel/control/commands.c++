#include "kernel/control/commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

namespace bulkhead {

const char* const CONTROL_COMMANDS_HELP =
    R"(  devices              each device: its server, restarts, fenced or not
  stats                per-device counters: accesses, interrupts, faults
  faults load PLAN     apply the fault plan in file PLAN (replaces any)
  faults list          the plan loaded, and whether it is in force
  faults enable        put the loaded plan (back) in force
  faults disable       take it out of force, keeping it
  faults clear         forget it
  regs                 vCPU 0's registers (general, segment, control)
  walk VADDR           the page walk of a linear address
  gdt|idt|ldt          a descriptor table, decoded
  disas ADDR [N]       N instructions (default 10) at a linear address
  mem ADDR LEN         a hex dump of guest memory at a linear address
  pmem ADDR LEN        the same at a guest-physical address
)";

namespace {

using protocol::Inspect;

bool number(const std::string& text, uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  out = strtoull(text.c_str(), &end, 0);
  return !text.empty() && errno == 0 && *end == '\0';
}

bool readFile(const std::string& path, std::string& out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buffer[65536];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  int saved = errno;
  close(fd);
  errno = saved;
  return n == 0;
}

kj::Promise<CommandResult> refuse(std::string why) { return CommandResult{"", kj::mv(why)}; }

std::string hexDump(uint64_t address, capnp::Data::Reader data) {
  std::string text;
  for (size_t i = 0; i < data.size(); i += 16) {
    text += absl::StrFormat("%016x ", address + i);
    for (size_t j = i; j < i + 16 && j < data.size(); ++j)
      text += absl::StrFormat(" %02x", data[j]);
    text += "\n";
  }
  return text;
}

kj::Promise<CommandResult> inspect(protocol::Control::Client& control, Inspect what,
                                   uint64_t address, uint64_t count) {
  auto request = control.inspectRequest();
  request.setVcpu(0);
  request.setWhat(what);
  request.setAddress(address);
  request.setCount(static_cast<uint32_t>(count));
  return request.send().then([address](auto response) {
    return CommandResult{
        std::string(response.getText().cStr()) + hexDump(address, response.getData()), ""};
  });
}

kj::Promise<CommandResult> devices(protocol::Control::Client& control, bool stats) {
  return control.devicesRequest().send().then([stats](auto response) {
    std::string text =
        stats ? absl::StrFormat("%-14s %12s %12s %10s %8s %8s\n", "DEVICE", "READS", "WRITES",
                                "IRQS", "FAULTS", "REPEATS")
              : absl::StrFormat("%-14s %8s %9s %s\n", "DEVICE", "PID", "RESTARTS", "STATE");
    for (auto device : response.getDevices()) {
      if (stats) {
        text += absl::StrFormat("%-14s %12u %12u %10u %8u %8u\n", device.getKind().cStr(),
                                device.getReads(), device.getWrites(), device.getIrqChanges(),
                                device.getFaultsFired(), device.getStaleAnswers());
      } else {
        text += absl::StrFormat("%-14s %8d %9u %s\n", device.getKind().cStr(), device.getPid(),
                                device.getRestarts(), device.getFenced() ? "fenced" : "serving");
      }
    }
    return CommandResult{text, ""};
  });
}

kj::Promise<CommandResult> faults(protocol::Control::Client& control,
                                  const std::vector<std::string>& words) {
  const std::string& what = words.size() >= 2 ? words[1] : "";
  if (words.size() == 3 && what == "load") {
    std::string plan;
    if (!readFile(words[2], plan)) {
      return refuse(absl::StrFormat("cannot read fault plan %s: %s", words[2], strerror(errno)));
    }
    auto request = control.loadFaultsRequest();
    request.setPlan(plan);
    std::string name = words[2];
    return request.send().then([name](auto) {
      return CommandResult{absl::StrFormat("fault plan %s in force\n", name), ""};
    });
  }
  if (words.size() != 2) return refuse("faults: say load PLAN, list, enable, disable or clear");
  if (what == "list") {
    return control.faultsRequest().send().then([](auto response) {
      if (response.getPlan().size() == 0) return CommandResult{"no fault plan\n", ""};
      return CommandResult{
          absl::StrFormat("# %s\n%s", response.getEnabled() ? "in force" : "disabled",
                          response.getPlan().cStr()),
          ""};
    });
  }
  if (what == "enable" || what == "disable") {
    auto request = control.enableFaultsRequest();
    request.setEnabled(what == "enable");
    return request.send().then([](auto) { return CommandResult{}; });
  }
  if (what == "clear") {
    return control.clearFaultsRequest().send().then([](auto) { return CommandResult{}; });
  }
  return refuse("faults: say load PLAN, list, enable, disable or clear");
}

}  // namespace

kj::Promise<CommandResult> runControlCommand(protocol::Control::Client& control,
                                             const std::vector<std::string>& words) {
  if (words.empty()) return refuse("no command given");
  const std::string& verb = words[0];
  if ((verb == "devices" || verb == "stats") && words.size() == 1) {
    return devices(control, verb == "stats");
  }
  if (verb == "faults") return faults(control, words);
  if (words.size() == 1) {
    if (verb == "regs" || verb == "sregs") return inspect(control, Inspect::REGISTERS, 0, 0);
    if (verb == "gdt") return inspect(control, Inspect::GDT, 0, 0);
    if (verb == "idt") return inspect(control, Inspect::IDT, 0, 0);
    if (verb == "ldt") return inspect(control, Inspect::LDT, 0, 0);
  }
  if (verb == "walk" || verb == "disas" || verb == "mem" || verb == "pmem") {
    uint64_t address = 0, count = verb == "disas" ? 10 : 0;
    bool ok = words.size() >= 2 && number(words[1], address);
    if (words.size() == 3) ok = ok && number(words[2], count);
    ok = ok && words.size() <= (verb == "walk" ? 2u : 3u);
    ok = ok && (verb == "walk" || verb == "disas" || words.size() == 3);
    if (!ok) return refuse(verb + ": bad or missing address or count");
    Inspect what = verb == "walk"    ? Inspect::WALK
                   : verb == "disas" ? Inspect::DISASSEMBLE
                   : verb == "mem"   ? Inspect::MEMORY
                                     : Inspect::PHYSICAL_MEMORY;
    return inspect(control, what, address, count);
  }
  return refuse("unknown command " + verb);
}

}  // namespace bulkhead
