#include "kernel/debug/gdb-stub.h"

#include <absl/strings/str_format.h>

#include "kernel/base/log.h"
#include "kernel/guestview/inspect.h"
#include "kernel/vm.h"

namespace bulkhead {

namespace {

// GDB's signal numbers in stop replies.
constexpr int GDB_SIGINT = 2;
constexpr int GDB_SIGTRAP = 5;
constexpr size_t MAX_BREAKPOINTS = 4;  // DR0-DR3

std::string hex32(uint32_t value) {
  std::string out;
  for (int i = 0; i < 4; ++i) absl::StrAppendFormat(&out, "%02x", (value >> (8 * i)) & 0xff);
  return out;
}

bool parseHex(const std::string& text, uint64_t& out) {
  if (text.empty() || text.size() > 16) return false;
  out = 0;
  for (char c : text) {
    int digit = isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (digit < 0) return false;
    out = out << 4 | digit;
  }
  return true;
}

}  // namespace

kj::Promise<void> GdbStub::serve(kj::ConnectionReceiver& listener) {
  return listener.accept().then([this, &listener](kj::Own<kj::AsyncIoStream> stream) {
    return session(kj::mv(stream)).then([this, &listener]() { return serve(listener); });
  });
}

kj::Promise<void> GdbStub::session(kj::Own<kj::AsyncIoStream> stream) {
  connection = kj::mv(stream);
  buffer.clear();
  logf("gdb: debugger attached");
  return readPackets().then(
      [this]() {
        logf("gdb: debugger detached");
        connection = nullptr;
      },
      [this](kj::Exception&&) { connection = nullptr; });
}

kj::Promise<void> GdbStub::readPackets() {
  return connection->tryRead(readBuffer, 1, sizeof(readBuffer))
      .then([this](size_t n) -> kj::Promise<void> {
        if (n == 0) return kj::READY_NOW;  // the debugger hung up
        buffer.append(readBuffer, n);
        kj::Promise<void> replies = kj::READY_NOW;
        for (;;) {
          // An interrupt (Ctrl-C) arrives as a lone 0x03 byte.
          size_t interrupt = buffer.find('\x03');
          size_t start = buffer.find('$');
          if (interrupt != std::string::npos && (start == std::string::npos || interrupt < start)) {
            buffer.erase(0, interrupt + 1);
            if (running && vm.pauseVcpus(std::chrono::milliseconds(2000))) {
              running = false;
              replies = replies.then([this]() { return send(stopReply(GDB_SIGINT)); });
            }
            continue;
          }
          if (start == std::string::npos) {
            buffer.clear();  // acks ('+', '-') and noise
            break;
          }
          size_t hash = buffer.find('#', start);
          if (hash == std::string::npos || buffer.size() < hash + 3) break;  // incomplete
          std::string packet = buffer.substr(start + 1, hash - start - 1);
          buffer.erase(0, hash + 3);
          std::string reply = handle(packet);
          replies = replies.then([this, reply]() {
            return connection->write("+", 1).then([this, reply]() {
              return reply == "\x01" ? kj::Promise<void>(kj::READY_NOW) : send(reply);
            });
          });
        }
        return replies.then([this]() { return readPackets(); });
      });
}

kj::Promise<void> GdbStub::send(const std::string& payload) {
  uint8_t sum = 0;
  for (char c : payload) sum += static_cast<uint8_t>(c);
  auto packet = kj::heapString(absl::StrFormat("$%s#%02x", payload, sum));
  auto& ref = *connection;
  return ref.write(packet.begin(), packet.size()).attach(kj::mv(packet));
}

std::string GdbStub::stopReply(int signal) const { return absl::StrFormat("S%02x", signal); }

std::string GdbStub::registers() {
  absl::StatusOr<ArchState> s = vm.snapshot(0);
  if (!s.ok()) return "E01";
  const uint64_t* g = s->gpr;  // rax rcx rdx rbx rsp rbp rsi rdi r8-r15
  uint32_t segments[6] = {s->cs.selector, s->ss.selector, s->ds.selector,
                          s->es.selector, s->fs.selector, s->gs.selector};
  std::string out;
  if (s->cs.longMode) {
    // GDB's amd64 order: rax rbx rcx rdx rsi rdi rbp rsp r8-r15 rip (8 bytes each), then
    // eflags and the six selectors (4 bytes each).
    const int order[16] = {0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int i : order) out += hex32(g[i]) + hex32(g[i] >> 32);
    out += hex32(s->rip) + hex32(s->rip >> 32);
  } else {
    // GDB's i386 order: eax ecx edx ebx esp ebp esi edi eip (4 bytes each).
    for (int i = 0; i < 8; ++i) out += hex32(g[i]);
    out += hex32(s->rip);
  }
  out += hex32(s->rflags);
  for (uint32_t selector : segments) out += hex32(selector);
  return out;
}

std::string GdbStub::readMemory(const std::string& arguments) {
  size_t comma = arguments.find(',');
  uint64_t address, length;
  if (comma == std::string::npos || !parseHex(arguments.substr(0, comma), address) ||
      !parseHex(arguments.substr(comma + 1), length) || length > 4096) {
    return "E01";
  }
  absl::StatusOr<ArchState> s = vm.snapshot(0);
  if (!s.ok()) return "E01";
  GuestInspector inspector(*s, vm.memory());
  absl::StatusOr<std::string> bytes = inspector.memory(address, length, /*physical=*/false);
  if (!bytes.ok()) return "E14";  // EFAULT
  std::string out;
  for (unsigned char c : *bytes) absl::StrAppendFormat(&out, "%02x", c);
  return out;
}

std::string GdbStub::breakpoint(const std::string& arguments, bool insert) {
  // Z0/Z1,ADDR,KIND: both become hardware breakpoints.
  if (arguments.size() < 3 || (arguments[0] != '0' && arguments[0] != '1')) return "";
  std::string rest = arguments.substr(2);
  uint64_t address;
  if (!parseHex(rest.substr(0, rest.find(',')), address)) return "E01";
  if (insert) {
    if (breakpoints.size() >= MAX_BREAKPOINTS && !breakpoints.count(address)) return "E28";
    breakpoints.insert(address);
  } else {
    breakpoints.erase(address);
  }
  return "OK";
}

bool GdbStub::applyDebug(bool singleStep) {
  GuestDebug debug;
  debug.singleStep = singleStep;
  if (!singleStep || !steppingOver) {
    for (uint64_t address : breakpoints) debug.breakpoints.push_back(address);
  }
  return vm.setDebug(0, debug).ok();
}

void GdbStub::resume(bool singleStep) {
  absl::StatusOr<ArchState> s = vm.snapshot(0);
  // Continuing from a breakpoint would hit it again at once: step off it first.
  steppingOver = !singleStep && s.ok() && breakpoints.count(s->rip + s->cs.base) > 0;
  applyDebug(singleStep || steppingOver);
  running = true;
  vm.resumeVcpus();
}

void GdbStub::debugStop() {
  if (steppingOver) {
    steppingOver = false;
    applyDebug(false);
    vm.resumeVcpus();
    return;
  }
  running = false;
  if (connection.get() != nullptr) {
    auto reply = send(stopReply(GDB_SIGTRAP)).eagerlyEvaluate([](kj::Exception&&) {});
    reply.detach([](kj::Exception&&) {});
  }
}

std::string GdbStub::handle(const std::string& packet) {
  if (packet.empty()) return "";
  switch (packet[0]) {
    case '?':
      return stopReply(GDB_SIGTRAP);
    case 'g':
      return registers();
    case 'm':
      return readMemory(packet.substr(1));
    case 'c':
      resume(false);
      return "\x01";  // no reply until the guest stops
    case 's':
      resume(true);
      return "\x01";
    case 'Z':
      return breakpoint(packet.substr(1), true);
    case 'z':
      return breakpoint(packet.substr(1), false);
    case 'H':
      return "OK";
    case 'k':
      vm.requestExit(0, "the debugger killed the VM");
      return "\x01";
    case 'D':
      breakpoints.clear();
      applyDebug(false);
      vm.resumeVcpus();
      return "OK";
    case 'q':
      if (packet.rfind("qSupported", 0) == 0) return "PacketSize=1000";
      if (packet == "qAttached") return "1";
      if (packet == "qC") return "QC1";
      if (packet == "qfThreadInfo") return "m1";
      if (packet == "qsThreadInfo") return "l";
      return "";
    case 'v':
      return "";  // no vCont: GDB falls back to c and s
    default:
      return "";  // unsupported: the empty reply
  }
}

}  // namespace bulkhead
