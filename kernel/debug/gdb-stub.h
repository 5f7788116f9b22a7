// A GDB remote-protocol stub (bulkhead run --gdb PORT): registers, memory by linear address
// through the guest's page tables, breakpoints, single step, continue and interrupt, on
// 127.0.0.1 only. Served from the VM's event loop; vCPU 0 is the one debugged.
//
// Breakpoints are hardware ones (the vCPU's debug registers, through KVM_SET_GUEST_DEBUG),
// four at most, also for GDB's software-breakpoint packets: KVM here emulates kernel-mode code
// and does not hand an INT3 in it to the debugger.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include <kj/async-io.h>

namespace bulkhead {

class Vm;

class GdbStub {
 public:
  GdbStub(Vm& vm, kj::AsyncIoContext& io) : vm(vm), io(io) {}

  // Accepts debugger connections on `listener`, one at a time, for the VM's life.
  kj::Promise<void> serve(kj::ConnectionReceiver& listener);
  // The event loop calls this when vCPU 0 stopped on a breakpoint or a step.
  void debugStop();

 private:
  kj::Promise<void> session(kj::Own<kj::AsyncIoStream> stream);
  kj::Promise<void> readPackets();
  std::string handle(const std::string& packet);
  kj::Promise<void> send(const std::string& payload);
  std::string stopReply(int signal) const;
  std::string registers();
  std::string readMemory(const std::string& arguments);
  std::string breakpoint(const std::string& arguments, bool insert);
  bool applyDebug(bool singleStep);
  void resume(bool singleStep);

  Vm& vm;
  kj::AsyncIoContext& io;
  kj::Own<kj::AsyncIoStream> connection;
  std::string buffer;
  std::set<uint64_t> breakpoints;
  bool running = false;       // the guest runs; a stop must be reported
  bool steppingOver = false;  // an internal step off a breakpoint, then continue
  char readBuffer[4096];
};

}  // namespace bulkhead
