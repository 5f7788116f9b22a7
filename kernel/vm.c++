// One VM: creation, devices and interrupt routing, and the event loop. The vCPU threads and
// what the core does about their exits: vm-vcpus.c++; the fault plan: vm-faults.c++.
#include "kernel/vm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <absl/strings/str_format.h>
#include <kj/async-unix.h>

#include "kernel/base/errno-status.h"
#include "kernel/base/status-macros.h"
#include "kernel/console/terminal.h"
#include "kernel/control/commands.h"
#include "kernel/control/control-server.h"
#include "kernel/debug/gdb-stub.h"
#include "kernel/exit-status.h"
#include "kernel/vcpu/emu/emu-machine.h"
#include "kernel/vcpu/kvm/kvm-vm.h"

namespace bulkhead {

namespace {

constexpr auto HALT_CHECK_PERIOD = 500 * kj::MILLISECONDS;
constexpr auto WATCHDOG_PERIOD = 20 * kj::MILLISECONDS;
constexpr auto DRAIN_TIMEOUT = std::chrono::milliseconds(2000);

void ignoreKick(int) {}

// Removes `path` if it is a socket; a file put there meanwhile is not the VM's to delete.
void removeSocket(const std::string& path) {
  struct stat info;
  if (lstat(path.c_str(), &info) == 0 && S_ISSOCK(info.st_mode)) unlink(path.c_str());
}

absl::StatusOr<std::unique_ptr<Accelerator>> createAccelerator(const VmConfig& config,
                                                               GuestMemory& memory, IoBus& bus) {
  std::string why;
  std::string accel = config.accel;
  if (accel.empty()) {
    accel = KvmVm::available(&why) ? "kvm" : "emu";
    if (accel == "emu") logf("--accel: %s; using the software CPU (--accel emu)", why);
  }
  if (config.deterministic && accel != "emu") {
    return absl::InvalidArgumentError(
        "--deterministic needs the software CPU; add --accel emu (KVM cannot count "
        "instructions exactly)");
  }
  if (accel == "kvm") {
    ASSIGN_OR_RETURN(std::unique_ptr<KvmVm> kvm, KvmVm::create(bus, config.pit));
    return std::unique_ptr<Accelerator>(std::move(kvm));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<EmuMachine> emu,
                   EmuMachine::create(memory, bus, config.deterministic, config.pit));
  return std::unique_ptr<Accelerator>(std::move(emu));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vm>> Vm::create(const VmConfig& config, kj::AsyncIoContext& io) {
  if (config.cpus == 0 || config.cpus > 64) {
    return absl::InvalidArgumentError("--cpus must be between 1 and 64");
  }
  std::unique_ptr<Vm> vm(new Vm(io, config));
  ASSIGN_OR_RETURN(vm->ram, GuestMemory::create(config.memoryBytes));
  ASSIGN_OR_RETURN(vm->accel, createAccelerator(config, *vm->ram, vm->ioBus));
  RETURN_IF_ERROR(vm->accel->mapMemory(*vm->ram));
  RETURN_IF_ERROR(vm->pciHost.attach(vm->ioBus));
  Vm* raw = vm.get();
  if (config.deterministic) {
    // Device effects at fixed instructions: doorbells stay ordinary writes (no eventfd the
    // server would see at its own time), and every write waits for its device. Interrupts
    // already travel the channel under the software CPU, before the write's answer.
    vm->ioBus.makeWritesSynchronous();
  } else {
    vm->pciHost.onDoorbellMoved(
        [raw](bool pio, uint64_t address, unsigned size, uint64_t value, int fd, bool assign) {
          absl::Status status = raw->accel->setIoeventfd(pio, address, size, value, fd, assign);
          // Without it the write still reaches the device, through an exit and the channel.
          if (!status.ok() && raw->irqFailures.admit()) logf("doorbell: %s", status.message());
        });
  }
  for (unsigned i = 0; i < config.cpus; ++i) {
    ASSIGN_OR_RETURN(std::unique_ptr<Vcpu> vcpu, vm->accel->createVcpu(i, config.cpu));
    vm->vcpus.push_back(std::move(vcpu));
  }
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return errnoStatus("eventfd");
  vm->stopEvent = kj::AutoCloseFd(fd);
  fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return errnoStatus("eventfd");
  vm->debugEvent = kj::AutoCloseFd(fd);
  if (config.traceExits) {
    ASSIGN_OR_RETURN(vm->trace, ExitTrace::open(config.tracePath));
    vm->ioBus.setTracer(vm.get());
  }
  if (!config.faultLog.empty()) {
    int log = open(config.faultLog.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--fault-log: cannot open %s: %s", config.faultLog, strerror(errno)));
    }
    vm->faultLogFd = kj::AutoCloseFd(log);
  }
  return vm;
}

void Vm::setConsole(std::unique_ptr<TerminalConsole> terminal) { console = std::move(terminal); }

Vm::~Vm() {
  requestExit(EXIT_POWER_OFF, "");
  for (std::thread& thread : threads) thread.join();
}

absl::Status Vm::addDevice(DeviceSpec spec) {
  spec.platform = this;
  ASSIGN_OR_RETURN(std::unique_ptr<DeviceProcess> process,
                   DeviceProcess::start(io, std::move(spec), *this, ioBus));
  processes.push_back(std::move(process));
  return absl::OkStatus();
}

absl::Status Vm::setBootState(const BootState& state) {
  for (auto& vcpu : vcpus) RETURN_IF_ERROR(vcpu->setBootState(state));
  return absl::OkStatus();
}

std::vector<DmaGrant> Vm::dmaGrants() {
  std::vector<DmaGrant> grants;
  for (const RamRegion& region : ram->regions()) {
    grants.push_back(DmaGrant{ram->fd(), region.fileOffset, region.guestPhysical, region.size});
  }
  return grants;
}

absl::Status Vm::addIrqfd(uint32_t gsi, int fd, int resampleFd) {
  return accel->addIrqfd(gsi, fd, resampleFd);
}

void Vm::setIrqLine(uint32_t line, bool level) {
  absl::Status status = accel->setIrqLine(line, level);
  if (!status.ok() && irqFailures.admit()) logf("interrupt line %u: %s", line, status.message());
}

absl::StatusOr<uint32_t> Vm::reserveMsiGsis(unsigned count) {
  std::lock_guard<std::mutex> lock(msiGsiLock);
  if (count > MSI_GSI_END - nextMsiGsi) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "no GSIs left for %u more MSI-X vectors (%u in all)", count, MSI_GSI_END - MSI_GSI_BASE));
  }
  uint32_t first = nextMsiGsi;
  nextMsiGsi += count;
  return first;
}

void Vm::setMsiRoute(uint32_t gsi, uint64_t address, uint32_t data) {
  absl::Status status = accel->setMsiRoute(gsi, address, data);
  if (!status.ok() && irqFailures.admit()) logf("MSI route for GSI %u: %s", gsi, status.message());
}

void Vm::signalMsi(uint64_t address, uint32_t data) {
  absl::Status status = accel->signalMsi(address, data);
  if (!status.ok() && irqFailures.admit()) logf("MSI: %s", status.message());
}

void Vm::requestExit(int exitStatus, const std::string& why) {
  std::call_once(exitOnce, [&]() {
    status = exitStatus;
    reason = why;
    stopping.store(true, std::memory_order_release);
  });
  {
    std::lock_guard<std::mutex> lock(pauseLock);
    pauseChanged.notify_all();  // parked vCPUs leave
  }
  for (auto& vcpu : vcpus) vcpu->kick();
  uint64_t one = 1;
  ssize_t ignored = write(stopEvent.get(), &one, sizeof(one));
  (void)ignored;
}

kj::Promise<void> Vm::serviceDevice(DeviceProcess& process,
                                    kj::UnixEventPort::FdObserver& observer) {
  drainEventfd(process.device().toCoreFd());
  process.device().serviceReplies();
  while (!process.device().armWakeup()) process.device().serviceReplies();
  return observer.whenBecomesReadable().then(
      [this, &process, &observer]() { return serviceDevice(process, observer); });
}

kj::Promise<void> Vm::watchDevices() {
  return io.provider->getTimer().afterDelay(WATCHDOG_PERIOD).then([this]() {
    auto now = std::chrono::steady_clock::now();
    for (auto& process : processes) {
      process->checkWatchdog(now);
      process->device().drainOutput();  // a safety net for a lost output notification
    }
    flushLog(/*all=*/false);
    return watchDevices();
  });
}

kj::Promise<void> Vm::watchDebugStops(kj::UnixEventPort::FdObserver& observer, GdbStub& stub) {
  return observer.whenBecomesReadable().then([this, &observer, &stub]() {
    uint64_t count;
    while (::read(debugEvent.get(), &count, sizeof(count)) == sizeof(count)) stub.debugStop();
    return watchDebugStops(observer, stub);
  });
}

kj::Promise<void> Vm::watchHalts() {
  return io.provider->getTimer().afterDelay(HALT_CHECK_PERIOD).then([this]() {
    for (auto& vcpu : vcpus) vcpu->kick();
    return watchHalts();
  });
}

int Vm::run() {
  struct sigaction action {};
  action.sa_handler = ignoreKick;  // no SA_RESTART: KVM_RUN must return EINTR
  sigaction(KICK_SIGNAL, &action, nullptr);
  sigset_t kick;
  sigemptyset(&kick);
  sigaddset(&kick, KICK_SIGNAL);
  pthread_sigmask(SIG_BLOCK, &kick, nullptr);

  std::vector<kj::Own<kj::UnixEventPort::FdObserver>> observers;
  kj::Vector<kj::Promise<void>> tasks;
  for (auto& process : processes) {
    auto observer =
        kj::heap<kj::UnixEventPort::FdObserver>(io.unixEventPort, process->device().toCoreFd(),
                                                kj::UnixEventPort::FdObserver::OBSERVE_READ);
    tasks.add(serviceDevice(*process, *observer));
    observers.push_back(kj::mv(observer));
    tasks.add(process->supervise());
  }
  tasks.add(watchHalts());
  tasks.add(watchDevices());
  kj::Own<kj::ConnectionReceiver> gdbListener;
  kj::Own<GdbStub> gdb;
  kj::Own<kj::UnixEventPort::FdObserver> debugObserver;
  if (config.gdbPort != 0) {
    KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                   gdbListener = io.provider->getNetwork()
                                     .parseAddress(kj::str("127.0.0.1:", config.gdbPort))
                                     .wait(io.waitScope)
                                     ->listen();
                 })) {
      logf("--gdb %u: cannot listen on 127.0.0.1:%u: %s", config.gdbPort, config.gdbPort,
           exception->getDescription().cStr());
      return EXIT_BAD_INPUT;
    }
    gdb = kj::heap<GdbStub>(*this, io);
    tasks.add(gdb->serve(*gdbListener));
    debugObserver = kj::heap<kj::UnixEventPort::FdObserver>(
        io.unixEventPort, debugEvent.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
    tasks.add(watchDebugStops(*debugObserver, *gdb));
    pauseRequested = true;  // stopped until the debugger says continue
    logf("gdb: waiting for a debugger on 127.0.0.1:%u (target remote :%u)", config.gdbPort,
         config.gdbPort);
  }
  kj::Own<kj::ConnectionReceiver> controlListener;
  kj::Own<capnp::TwoPartyServer> controlServer;
  if (!config.controlPath.empty()) {
    removeSocket(config.controlPath);  // a stale one (buildMachine refused anything else)
    KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                   auto address = io.provider->getNetwork()
                                      .parseAddress(kj::str("unix:", config.controlPath))
                                      .wait(io.waitScope);
                   controlListener = address->listen();
                 })) {
      logf("--control %s: cannot listen there: %s", config.controlPath,
           exception->getDescription().cStr());
      return EXIT_BAD_INPUT;
    }
    controlServer = kj::heap<capnp::TwoPartyServer>(kj::heap<ControlServer>(*this));
    tasks.add(controlServer->listen(*controlListener));
  }
  if (console != nullptr) {
    // The monitor's commands go to the control API in this process, as bulkhead-ctl's do.
    auto local = std::make_shared<protocol::Control::Client>(kj::heap<ControlServer>(*this));
    TerminalConsole::Hooks hooks;
    hooks.quit = [this](const std::string& why) { requestExit(EXIT_INTERRUPTED, why); };
    hooks.command = [local](std::vector<std::string> words) {
      return runControlCommand(*local, words);
    };
    tasks.add(console->serve(io.unixEventPort, std::move(hooks)));
  }

  for (auto& vcpu : vcpus) {
    Vcpu* raw = vcpu.get();
    threads.emplace_back([this, raw]() {
      raw->setThread(pthread_self());
      vcpuLoop(*raw);
    });
  }

  kj::UnixEventPort::FdObserver stopObserver(io.unixEventPort, stopEvent.get(),
                                             kj::UnixEventPort::FdObserver::OBSERVE_READ);
  auto interrupted = [this](siginfo_t info) {
    requestExit(EXIT_INTERRUPTED, absl::StrFormat("stopped by signal %d", info.si_signo));
  };
  kj::Promise<void> stop = stopObserver.whenBecomesReadable().exclusiveJoin(
      kj::joinPromises(tasks.releaseAsArray()).then([]() {}, [](kj::Exception&&) {}));
  if (config.handleSignals) {
    for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) {
      stop = stop.exclusiveJoin(io.unixEventPort.onSignal(signal).then(interrupted));
    }
  }
  if (!stopping.load(std::memory_order_acquire)) stop.wait(io.waitScope);
  for (auto& vcpu : vcpus) vcpu->kick();
  for (std::thread& thread : threads) thread.join();
  threads.clear();
  shutDownDevices();
  flushLog(/*all=*/true);
  if (!config.controlPath.empty()) removeSocket(config.controlPath);
  if (console != nullptr) console->restore();
  if (verbose() && ioBus.unclaimedAccesses() > 0) {
    logf("%u guest accesses reached no device (%u addresses listed above; port 0x80 is not listed)",
         ioBus.unclaimedAccesses(), ioBus.unclaimedAddresses());
  }
  if (!reason.empty()) logLine(reason);
  return status;
}

void Vm::shutDownDevices() {
  // Let every server finish what the guest sent before it ended (output included).
  for (auto& process : processes) {
    // A server that died as the VM ended is not restarted; what it committed is still taken.
    if (!process->device().fenced() && process->alive() &&
        !process->device().drain(DRAIN_TIMEOUT)) {
      logf("device %s did not finish its requests before the VM ended", process->kind());
    }
    process->device().drainOutput();
  }
  for (auto& process : processes) process->stop();
}

}  // namespace bulkhead
