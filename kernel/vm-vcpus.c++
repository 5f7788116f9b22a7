// The vCPU threads: each runs its vCPU until the VM ends, parks while the VM is paused, and
// hands the core what the backend could not decide itself (Vm::handleExit). Accesses the bus
// traces are attributed here to the vCPU that made them.
#include "kernel/vm.h"

#include "kernel/base/thread-sandbox.h"

#include <signal.h>
#include <unistd.h>

#include <absl/strings/str_format.h>

#include "kernel/base/log.h"
#include "kernel/exit-status.h"

namespace bulkhead {

namespace {

// The vCPU this thread runs, for the bus's trace.
thread_local Vcpu* currentVcpu = nullptr;

}  // namespace

void Vm::traced(bool write, Space space, uint64_t address, unsigned size, uint64_t value) {
  Vcpu* vcpu = currentVcpu;
  if (vcpu == nullptr) return;  // not a guest access
  std::string access = space == Space::PIO
                           ? describeIo(write, static_cast<uint16_t>(address), size, value, 1)
                           : describeMmio(write, address, size, value);
  trace->record(vcpu->index(), access, vcpu->describeAccessLocation(*ram));
}

void Vm::vcpuLoop(Vcpu& vcpu) {
  sigset_t kick;
  sigemptyset(&kick);
  sigaddset(&kick, KICK_SIGNAL);
  pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);
  unsigned index = vcpu.index();
  // Named, so the thread can be found (and its filter checked) in /proc.
  pthread_setname_np(pthread_self(), absl::StrFormat("bulkhead-vcpu%u", index).c_str());
  if (absl::Status confined = confineVcpuThread(); !confined.ok()) {
    requestExit(EXIT_HOST_FAILURE, absl::StrFormat("vCPU %u: cannot enter its seccomp filter: %s",
                                                   index, confined.message()));
    return;
  }
  parkIfPaused();  // a debugger may want the VM stopped before its first instruction
  currentVcpu = &vcpu;
  while (!stopping.load(std::memory_order_acquire)) {
    absl::StatusOr<VcpuExit> exit = vcpu.run();
    if (!exit.ok()) {
      requestExit(EXIT_HOST_FAILURE,
                  absl::StrFormat("vCPU %u: %s", index, exit.status().message()));
      break;
    }
    if (std::holds_alternative<vcpu_exit::Kicked>(*exit)) {
      vcpu.clearKick();
      if (stopping.load(std::memory_order_acquire)) break;
      parkIfPaused();
      // SDM Vol. 3, 6.7: with IF clear only NMI, SMI, INIT or reset end HLT; none comes here.
      if (vcpu.haltedWithInterruptsOff()) {
        requestExit(EXIT_GUEST_CRASHED,
                    absl::StrFormat("vCPU %u halted with interrupts disabled, so nothing can wake "
                                    "it; at %s",
                                    index, vcpu.describeLocation(*ram)));
      }
      continue;
    }
    if (trace != nullptr) trace->record(index, describeExit(*exit), vcpu.describeLocation(*ram));
    handleExit(vcpu, *exit);
  }
  currentVcpu = nullptr;
}

void Vm::handleExit(Vcpu& vcpu, const VcpuExit& exit) {
  unsigned index = vcpu.index();
  if (std::holds_alternative<vcpu_exit::Debug>(exit)) {
    // A breakpoint or a step: stop every vCPU and tell the debugger (gdb-stub).
    {
      std::lock_guard<std::mutex> lock(pauseLock);
      pauseRequested = true;
      debugStopPending = true;
    }
    for (auto& other : vcpus) {
      if (other.get() != &vcpu) other->kick();
    }
    parkIfPaused();
  } else if (std::holds_alternative<vcpu_exit::Halted>(exit)) {
    requestExit(EXIT_GUEST_CRASHED,
                absl::StrFormat("vCPU %u halted at %s", index, vcpu.describeLocation(*ram)));
  } else if (std::holds_alternative<vcpu_exit::Shutdown>(exit)) {
    requestExit(EXIT_GUEST_CRASHED,
                absl::StrFormat("vCPU %u: triple fault (the CPU shut down) at %s", index,
                                vcpu.describeLocation(*ram)));
  } else if (std::holds_alternative<vcpu_exit::PowerOff>(exit)) {
    requestExit(EXIT_POWER_OFF, "the guest powered off");
  } else if (std::holds_alternative<vcpu_exit::Reset>(exit)) {
    requestExit(EXIT_POWER_OFF,
                "the guest asked for a reset; resets end the VM (as QEMU -no-reboot)");
  } else if (const auto* failure = std::get_if<vcpu_exit::Failure>(&exit)) {
    requestExit(
        failure->host ? EXIT_HOST_FAILURE : EXIT_GUEST_CRASHED,
        absl::StrFormat("vCPU %u: %s at %s", index, failure->what, vcpu.describeLocation(*ram)));
  }
}

void Vm::parkIfPaused() {
  std::unique_lock<std::mutex> lock(pauseLock);
  if (!pauseRequested) return;
  ++parked;
  pauseChanged.notify_all();
  if (debugStopPending) {
    debugStopPending = false;
    uint64_t one = 1;
    ssize_t ignored = write(debugEvent.get(), &one, sizeof(one));
    (void)ignored;
  }
  pauseChanged.wait(lock, [&]() { return !pauseRequested || stopping.load(); });
  --parked;
}

bool Vm::pauseVcpus(std::chrono::milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(pauseLock);
    pauseRequested = true;
  }
  for (auto& vcpu : vcpus) vcpu->kick();
  std::unique_lock<std::mutex> lock(pauseLock);
  bool all = pauseChanged.wait_for(lock, timeout, [&]() { return parked == vcpus.size(); });
  if (!all) {
    pauseRequested = false;
    pauseChanged.notify_all();
  }
  return all;
}

void Vm::resumeVcpus() {
  std::lock_guard<std::mutex> lock(pauseLock);
  pauseRequested = false;
  pauseChanged.notify_all();
}

absl::Status Vm::setDebug(unsigned index, const GuestDebug& debug) {
  if (index >= vcpus.size()) return absl::InvalidArgumentError("no such vCPU");
  return vcpus[index]->setDebug(debug);
}

absl::StatusOr<ArchState> Vm::snapshot(unsigned index) {
  if (index >= vcpus.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("there is no vCPU %u (the VM has %u)", index, vcpus.size()));
  }
  return vcpus[index]->getState();
}

}  // namespace bulkhead
