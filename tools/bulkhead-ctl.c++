// bulkhead-ctl: talks to a running VM's control socket (bulkhead run --control SOCKET).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "control.capnp.h"
#include "kernel/base/kj-status.h"

namespace {

// Each answer waits at most this long: a socket that is not Bulkhead's may never answer.
constexpr unsigned ANSWER_SECONDS = 5;

template <typename P>
auto answer(kj::AsyncIoContext& io, P&& promise) {
  return io.provider->getTimer().timeoutAfter(ANSWER_SECONDS * kj::SECONDS, kj::mv(promise));
}

const char* const USAGE = R"(bulkhead-ctl: control a running bulkhead VM

usage:
  bulkhead-ctl SOCKET devices              each device: its server, restarts, fenced or not
  bulkhead-ctl SOCKET stats                per-device counters: accesses, interrupts, faults
  bulkhead-ctl SOCKET faults load PLAN     apply the fault plan in file PLAN (replaces any)
  bulkhead-ctl SOCKET faults list          the plan loaded, and whether it is in force
  bulkhead-ctl SOCKET faults enable        put the loaded plan (back) in force
  bulkhead-ctl SOCKET faults disable       take it out of force, keeping it
  bulkhead-ctl SOCKET faults clear         forget it
  bulkhead-ctl SOCKET regs                 vCPU 0's registers (general, segment, control)
  bulkhead-ctl SOCKET walk VADDR           the page walk of a linear address
  bulkhead-ctl SOCKET gdt|idt|ldt          a descriptor table, decoded
  bulkhead-ctl SOCKET disas ADDR [N]       N instructions (default 10) at a linear address
  bulkhead-ctl SOCKET mem ADDR LEN         a hex dump of guest memory at a linear address
  bulkhead-ctl SOCKET pmem ADDR LEN        the same at a guest-physical address
  bulkhead-ctl --help

The views pause every vCPU for a moment, so what they show is consistent.

SOCKET is the path given to `bulkhead run --control`. Fault plans: docs/fault-injection.md.
)";

int fail(const std::string& message, int status = 2) {
  fprintf(stderr, "bulkhead-ctl: %s\n", message.c_str());
  return status;
}

bool readFile(const std::string& path, std::string& out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buffer[65536];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  close(fd);
  return n == 0;
}

int run(const std::string& socket, const std::vector<std::string>& command) {
  std::string planText;
  bool knownCommand = (command.size() == 1 && (command[0] == "devices" || command[0] == "stats")) ||
                      (command.size() == 2 && command[0] == "faults" &&
                       (command[1] == "list" || command[1] == "enable" || command[1] == "disable" ||
                        command[1] == "clear")) ||
                      (command.size() == 3 && command[0] == "faults" && command[1] == "load");
  using bulkhead::protocol::Inspect;
  std::optional<Inspect> view;
  uint64_t address = 0, count = 0;
  const std::string& verb = command[0];
  auto number = [](const std::string& text, uint64_t& out) {
    char* end = nullptr;
    errno = 0;
    out = strtoull(text.c_str(), &end, 0);
    return !text.empty() && errno == 0 && *end == '\0';
  };
  if (command.size() == 1 && (verb == "regs" || verb == "sregs")) view = Inspect::REGISTERS;
  if (command.size() == 1 && verb == "gdt") view = Inspect::GDT;
  if (command.size() == 1 && verb == "idt") view = Inspect::IDT;
  if (command.size() == 1 && verb == "ldt") view = Inspect::LDT;
  if (verb == "walk" || verb == "disas" || verb == "mem" || verb == "pmem") {
    bool ok = command.size() >= 2 && number(command[1], address);
    count = verb == "disas" ? 10 : 0;
    if (command.size() == 3) ok = ok && number(command[2], count);
    ok = ok && command.size() <= (verb == "walk" ? 2u : 3u);
    ok = ok && (verb == "walk" || verb == "disas" || command.size() == 3);
    if (!ok) return fail(verb + ": bad or missing address or count; see bulkhead-ctl --help");
    view = verb == "walk"    ? Inspect::WALK
           : verb == "disas" ? Inspect::DISASSEMBLE
           : verb == "mem"   ? Inspect::MEMORY
                             : Inspect::PHYSICAL_MEMORY;
  }
  if (!knownCommand && !view) return fail("unknown command; see bulkhead-ctl --help");
  if (knownCommand && command.size() == 3 && !readFile(command[2], planText)) {
    return fail("cannot read fault plan " + command[2] + ": " + strerror(errno));
  }
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> stream;
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                 stream = io.provider->getNetwork()
                              .parseAddress(kj::str("unix:", socket))
                              .wait(io.waitScope)
                              ->connect()
                              .wait(io.waitScope);
               })) {
    return fail("cannot connect to " + socket + " (is bulkhead running with --control " + socket +
                "?)");
  }
  capnp::TwoPartyClient client(*stream);
  auto control = client.bootstrap().castAs<bulkhead::protocol::Control>();
  int status = 0;
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                 if (view) {
                   auto request = control.inspectRequest();
                   request.setVcpu(0);
                   request.setWhat(*view);
                   request.setAddress(address);
                   request.setCount(count);
                   auto response = answer(io, request.send()).wait(io.waitScope);
                   fputs(response.getText().cStr(), stdout);
                   auto data = response.getData();
                   for (size_t i = 0; i < data.size(); i += 16) {
                     printf("%016llx ", (unsigned long long)(address + i));
                     for (size_t j = i; j < i + 16 && j < data.size(); ++j)
                       printf(" %02x", data[j]);
                     printf("\n");
                   }
                   return;
                 }
                 if (command[0] == "devices" || command[0] == "stats") {
                   auto response = answer(io, control.devicesRequest().send()).wait(io.waitScope);
                   bool stats = command[0] == "stats";
                   if (stats) {
                     printf("%-14s %12s %12s %10s %8s %8s\n", "DEVICE", "READS", "WRITES", "IRQS",
                            "FAULTS", "REPEATS");
                   } else {
                     printf("%-14s %8s %9s %s\n", "DEVICE", "PID", "RESTARTS", "STATE");
                   }
                   for (auto device : response.getDevices()) {
                     if (stats) {
                       printf("%-14s %12llu %12llu %10llu %8llu %8llu\n", device.getKind().cStr(),
                              (unsigned long long)device.getReads(),
                              (unsigned long long)device.getWrites(),
                              (unsigned long long)device.getIrqChanges(),
                              (unsigned long long)device.getFaultsFired(),
                              (unsigned long long)device.getStaleAnswers());
                     } else {
                       printf("%-14s %8d %9u %s\n", device.getKind().cStr(), device.getPid(),
                              device.getRestarts(), device.getFenced() ? "fenced" : "serving");
                     }
                   }
                 } else if (command[1] == "load") {
                   auto request = control.loadFaultsRequest();
                   request.setPlan(planText);
                   answer(io, request.send()).wait(io.waitScope);
                   printf("fault plan %s in force\n", command[2].c_str());
                 } else if (command[1] == "list") {
                   auto response = answer(io, control.faultsRequest().send()).wait(io.waitScope);
                   if (response.getPlan().size() == 0) {
                     printf("no fault plan\n");
                   } else {
                     printf("# %s\n%s", response.getEnabled() ? "in force" : "disabled",
                            response.getPlan().cStr());
                   }
                 } else if (command[1] == "enable" || command[1] == "disable") {
                   auto request = control.enableFaultsRequest();
                   request.setEnabled(command[1] == "enable");
                   answer(io, request.send()).wait(io.waitScope);
                 } else {
                   answer(io, control.clearFaultsRequest().send()).wait(io.waitScope);
                 }
               })) {
    if (exception->getType() == kj::Exception::Type::DISCONNECTED ||
        exception->getType() == kj::Exception::Type::OVERLOADED) {
      // A socket that is not Bulkhead's, or a VM that ended or hangs, gives no Cap'n Proto answer.
      return fail(socket + " did not answer as a Bulkhead control socket within " +
                  std::to_string(ANSWER_SECONDS) +
                  " s (did the VM end, or is it another kind of "
                  "socket?)");
    }
    status = fail(bulkhead::describeException(*exception), 1);
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> arguments(argv + 1, argv + argc);
  if (arguments.empty() || arguments[0] == "--help" || arguments[0] == "-h") {
    fputs(USAGE, arguments.empty() ? stderr : stdout);
    return arguments.empty() ? 2 : 0;
  }
  if (arguments.size() < 2) return fail("no command given; see bulkhead-ctl --help");
  return run(arguments[0], std::vector<std::string>(arguments.begin() + 1, arguments.end()));
}
