// GCC 12 warns, wrongly, that kj's resolved Promise<std::string> (attach()'s continuation) may
// hold an uninitialized string; which inlining decision exposes it changes with unrelated code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernel/supervisor/device-process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include "channel/fd-capability.h"
#include "device.capnp.h"
#include "kernel/base/errno-status.h"
#include "kernel/base/kj-status.h"
#include "kernel/base/status-macros.h"

namespace bulkhead {

namespace {

constexpr int CHANNEL_FD = 3;
constexpr uint32_t MAX_FDS_PER_MESSAGE = 16;
constexpr size_t MAX_RANGES = 16;
constexpr unsigned ISA_IRQ_LINES = 16;
constexpr auto ATTACH_TIMEOUT = 5 * kj::SECONDS;
constexpr uid_t UNPRIVILEGED = 65534;  // nobody / nogroup

bool isExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

std::string ownDirectory() {
  char buffer[4096];
  ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return ".";
  std::string path(buffer, n);
  return path.substr(0, path.rfind('/'));
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrFormat("exited with status %d", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrFormat("killed by signal %d (%s)", WTERMSIG(status),
                           strsignal(WTERMSIG(status)));
  }
  return "ended";
}

absl::StatusOr<kj::AutoCloseFd> makeEventfd() {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return errnoStatus("eventfd");
  return kj::AutoCloseFd(fd);
}

absl::StatusOr<kj::AutoCloseFd> makeSealedMemfd(const std::string& name, size_t bytes) {
  int raw = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (raw < 0) return errnoStatus("memfd_create for " + name);
  kj::AutoCloseFd fd(raw);
  if (ftruncate(fd.get(), bytes) != 0) return errnoStatus("sizing " + name);
  // Sealed, so a server cannot shrink it under the core's mapping (which would fault).
  if (fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return errnoStatus("sealing " + name);
  }
  return fd;
}

// What a server asked for that the core will not give it.
absl::Status refused(const std::string& why) { return absl::FailedPreconditionError(why); }

absl::Status addRanges(IoBus& bus, RemoteDevice& device, capnp::List<protocol::Range>::Reader list,
                       const std::string& kind) {
  if (list.size() > MAX_RANGES) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "device server %s asked for %u ranges (at most %u)", kind, list.size(), MAX_RANGES));
  }
  for (auto range : list) {
    Space space;
    switch (range.getSpace()) {
      case protocol::Space::PIO:
        space = Space::PIO;
        break;
      case protocol::Space::MMIO:
        space = Space::MMIO;
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrFormat("device server %s asked for an unknown address space", kind));
    }
    RETURN_IF_ERROR(bus.add(space, range.getBase(), range.getSize(),
                            Route{&device, range.getSynchronous(), kind}));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> findServer(const std::string& kind) {
  std::string binary = "bulkhead-" + kind;
  std::vector<std::string> candidates;
  if (const char* dir = getenv("BULKHEAD_SERVER_DIR")) {
    candidates.push_back(absl::StrCat(dir, "/", kind, "/", binary));
    candidates.push_back(absl::StrCat(dir, "/", binary));
  }
  std::string own = ownDirectory();
  candidates.push_back(absl::StrCat(own, "/../servers/", kind, "/", binary));
  candidates.push_back(absl::StrCat(own, "/", binary));
  for (const std::string& path : candidates) {
    if (isExecutable(path)) return path;
  }
  return absl::NotFoundError(
      absl::StrFormat("cannot find the device server %s (looked beside %s); build it, or set "
                      "BULKHEAD_SERVER_DIR to the folder that holds it",
                      binary, own));
}

absl::Status takePolicyOptions(std::vector<std::pair<std::string, std::string>>& options,
                               RestartPolicy& policy) {
  std::vector<std::pair<std::string, std::string>> rest;
  for (auto& [key, value] : options) {
    if (key == "on-failure") {
      if (value == "hidden") {
        policy.onFailure = RestartPolicy::OnFailure::HIDDEN;
      } else if (value == "error") {
        policy.onFailure = RestartPolicy::OnFailure::ERROR;
      } else {
        return absl::InvalidArgumentError(absl::StrFormat(
            "on-failure=%s: use hidden (restart and replay) or error (fence)", value));
      }
    } else if (key == "restarts") {
      unsigned count = 0, seconds = 0;
      char unit = 0, extra = 0;
      if (sscanf(value.c_str(), "%u/%u%c%c", &count, &seconds, &unit, &extra) != 3 || unit != 's' ||
          seconds == 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("restarts=%s: write COUNT/SECONDSs, e.g. restarts=20/10s", value));
      }
      policy.maxRestarts = count;
      policy.window = std::chrono::seconds(seconds);
    } else if (key == "watchdog") {
      unsigned ms = 0;
      char m = 0, s2 = 0, extra = 0;
      if (sscanf(value.c_str(), "%u%c%c%c", &ms, &m, &s2, &extra) != 3 || m != 'm' || s2 != 's' ||
          ms == 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("watchdog=%s: write MILLISECONDSms, e.g. watchdog=250ms", value));
      }
      policy.watchdog = std::chrono::milliseconds(ms);
    } else {
      rest.emplace_back(key, value);
    }
  }
  options = std::move(rest);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceProcess>> DeviceProcess::start(kj::AsyncIoContext& io,
                                                                    DeviceSpec spec,
                                                                    DeviceSink& sink, IoBus& bus) {
  std::unique_ptr<DeviceProcess> process(new DeviceProcess(io, std::move(spec), bus));
  DeviceSpec& s = process->spec;
  ASSIGN_OR_RETURN(process->serverPath, findServer(s.kind));
  int binary = open(process->serverPath.c_str(), O_PATH | O_CLOEXEC);
  if (binary < 0) return errnoStatus("opening " + process->serverPath);
  process->serverBinary = kj::AutoCloseFd(binary);

  uint32_t slots = DEFAULT_RING_SLOTS;
  ASSIGN_OR_RETURN(process->ringFd,
                   makeSealedMemfd("bulkhead-ring-" + s.kind, channelBytes(slots)));
  ASSIGN_OR_RETURN(process->stateFd,
                   makeSealedMemfd("bulkhead-state-" + s.kind, stateRegionBytes()));
  ChannelMapping mapping;
  if (!mapping.map(process->ringFd.get(), slots)) return errnoStatus("mapping a ring");
  ringInit(mapping.requests(), slots, 0);
  ringInit(mapping.replies(), slots, 0);
  void* state = mmap(nullptr, stateRegionBytes(), PROT_READ | PROT_WRITE, MAP_SHARED,
                     process->stateFd.get(), 0);
  if (state == MAP_FAILED) return errnoStatus("mapping a state region");
  process->stateMapping = state;
  ASSIGN_OR_RETURN(process->toDeviceFd, makeEventfd());
  ASSIGN_OR_RETURN(process->toCoreFd, makeEventfd());
  process->remote = std::make_unique<RemoteDevice>(
      s.kind, std::move(mapping),
      kj::AutoCloseFd(fcntl(process->toDeviceFd.get(), F_DUPFD_CLOEXEC, 3)),
      kj::AutoCloseFd(fcntl(process->toCoreFd.get(), F_DUPFD_CLOEXEC, 3)),
      static_cast<StateRegionLayout*>(state), std::move(s.output), sink);

  DeviceProcess* raw = process.get();
  process->remote->onSupervisorFault(
      [raw](protocol::FaultAction::Which action) { raw->injectFault(action); });
  // A fenced server is ended at once: alive, it could still ring its irqfd or write guest RAM
  // through its DMA window.
  process->remote->onFence([raw]() {
    if (raw->signalServer(SIGKILL)) {
      logf("device %s: its fenced server was sent SIGKILL", raw->spec.kind);
    }
  });
  RETURN_IF_ERROR(process->spawn());
  absl::Status attached;
  for (unsigned attempt = 0;; ++attempt) {
    KJ_IF_MAYBE (exception, kj::runCatchingExceptions(
                                [&]() { attached = process->attach().wait(io.waitScope); })) {
      attached = statusFromException(*exception);
    }
    // A server killed (or crashed) while it started is started again, within its restart
    // budget, as one that dies later would be; a server that refused stays refused.
    if (attached.ok() || s.policy.onFailure == RestartPolicy::OnFailure::ERROR ||
        attempt >= s.policy.maxRestarts || !process->diedFromSignal()) {
      break;
    }
    logf("device %s: its server died while starting (%s); starting it again", s.kind,
         attached.message());
    RETURN_IF_ERROR(process->spawn());
  }
  if (!attached.ok()) {
    process->stop();
    return absl::FailedPreconditionError(
        absl::StrCat("device server ", s.kind, " refused to start: ", attached.message()));
  }
  return process;
}

absl::Status DeviceProcess::spawn() {
  dropIncarnation();
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return errnoStatus("socketpair");
  kj::AutoCloseFd ours(pair[0]);
  kj::AutoCloseFd theirs(pair[1]);
  int devNull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devNull < 0) return errnoStatus("opening /dev/null");
  kj::AutoCloseFd nullFd(devNull);
  std::string argv0 = "bulkhead-" + spec.kind;
  char* argv[] = {argv0.data(), nullptr};
  char* envp[] = {nullptr};

  // Where the host allows it (the core is root), the server starts in new PID, mount, network,
  // IPC and UTS namespaces; otherwise it is forked plainly.
  constexpr unsigned long NAMESPACES =
      CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
  bool privileged = getuid() == 0;
  pid_t parent = getpid();
  pid_t child =
      privileged ? static_cast<pid_t>(syscall(SYS_clone, NAMESPACES | SIGCHLD, 0, 0, 0, 0)) : -1;
  bool isolated = child >= 0;
  if (!isolated) child = fork();
  if (child < 0) return errnoStatus("fork for a device server");
  if (child == 0) {
    // Only async-signal-safe calls from here to exec. The server gets an unprivileged identity
    // where possible; it is exec'd by descriptor, so it needs no access to its folders.
    if (privileged &&
        (setgroups(0, nullptr) != 0 || setresgid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED) != 0 ||
         setresuid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED) != 0)) {
      _exit(126);
    }
    // After the identity change, which clears it. In a new PID namespace the parent is outside
    // and getppid() says 0; a server whose core is gone sees its channel close anyway.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!isolated && getppid() != parent) _exit(127);
    dup2(nullFd.get(), STDIN_FILENO);
    dup2(nullFd.get(), STDOUT_FILENO);
    dup2(theirs.get(), CHANNEL_FD);
    // The binary's descriptor, close-on-exec: the server does not keep it.
    constexpr int BINARY_FD = CHANNEL_FD + 1;
    dup2(serverBinary.get(), BINARY_FD);
    fcntl(BINARY_FD, F_SETFD, FD_CLOEXEC);
    close_range(BINARY_FD + 1, ~0u, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    syscall(SYS_execveat, BINARY_FD, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
  }
  theirs = nullptr;
  int raw = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
  if (raw < 0) return errnoStatus("pidfd_open for a device server");
  {
    std::lock_guard<std::mutex> lock(incarnationLock);
    childPid = child;
    pidfd = kj::AutoCloseFd(raw);
    socketFd = ours.get();
  }
  pidObserver = kj::heap<kj::UnixEventPort::FdObserver>(
      io.unixEventPort, pidfd.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
  stream = io.lowLevelProvider->wrapUnixSocketFd(kj::mv(ours));
  network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, MAX_FDS_PER_MESSAGE,
                                                capnp::rpc::twoparty::Side::CLIENT);
  rpc = kj::heap(capnp::makeRpcClient(*network));
  return absl::OkStatus();
}

kj::Promise<absl::Status> DeviceProcess::attach() {
  capnp::word scratch[8];
  memset(scratch, 0, sizeof(scratch));
  capnp::MallocMessageBuilder vatMessage(scratch);
  auto vat = vatMessage.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto server = rpc->bootstrap(vat).castAs<protocol::Device>();

  auto request = server.attachRequest();
  auto channel = request.initChannel();
  channel.setRing(kj::heap<FdCapability>(ringFd.get()));
  channel.setRingSlots(DEFAULT_RING_SLOTS);
  channel.setToDevice(kj::heap<FdCapability>(toDeviceFd.get()));
  channel.setToCore(kj::heap<FdCapability>(toCoreFd.get()));
  channel.setState(kj::heap<FdCapability>(stateFd.get()));
  auto options = request.initOptions(spec.options.size());
  for (size_t i = 0; i < spec.options.size(); ++i) {
    options[i].setKey(spec.options[i].first);
    options[i].setValue(spec.options[i].second);
  }
  auto backends = request.initBackends(spec.backends.size());
  for (size_t i = 0; i < spec.backends.size(); ++i) {
    backends.set(i, kj::heap<FdCapability>(spec.backends[i].get()));
  }
  if (spec.faults != nullptr) {
    request.setFaults(spec.faults->getRoot<protocol::FaultPlan>().asReader());
  }
  if (spec.dma && spec.platform != nullptr) {
    std::vector<DmaGrant> grants = spec.platform->dmaGrants();
    auto windows = request.initDma(grants.size());
    for (size_t i = 0; i < grants.size(); ++i) {
      windows[i].setMemory(kj::heap<FdCapability>(grants[i].fd));
      windows[i].setOffset(grants[i].offset);
      windows[i].setGuestPhysical(grants[i].guestPhysical);
      windows[i].setSize(grants[i].size);
    }
  }
  return io.provider->getTimer()
      .timeoutAfter(ATTACH_TIMEOUT, request.send())
      .then(
          [this](capnp::Response<protocol::Device::AttachResults> response) -> absl::Status {
            std::vector<std::tuple<Space, uint64_t, uint64_t, bool>> asked;
            for (auto range : response.getRanges()) {
              asked.emplace_back(
                  range.getSpace() == protocol::Space::MMIO ? Space::MMIO : Space::PIO,
                  range.getBase(), range.getSize(), range.getSynchronous());
            }
            std::string shape;
            if (response.hasPci() || response.getDoorbells().size() > 0) {
              shape = kj::str(response.getPci()).cStr();
              for (auto bell : response.getDoorbells()) shape += kj::str(bell).cStr();
            }
            // The server must be the kind the core started (a wrong binary at the path is
            // refused, not given that kind's rights).
            if (kj::StringPtr(response.getName()) != spec.kind) {
              return refused(absl::StrFormat("it says it is a %s server, not %s",
                                             printable(response.getName().cStr()), spec.kind));
            }
            bool interrupts = response.getIrqLines().size() > 0 ||
                              (response.hasPci() && (response.getPci().getInterruptPin() ||
                                                     response.getPci().getMsix().getVectors() > 0));
            if (interrupts && !spec.interrupts) {
              return refused(
                  "it asked for interrupts, which its kind may not raise (device-kinds.table)");
            }
            if (placed) {
              if (asked != ranges) return refused("a restarted server asked for other ranges");
              if (shape != pciShape) return refused("a restarted server is another PCI function");
              return absl::OkStatus();
            }
            RETURN_IF_ERROR(addRanges(bus, *remote, response.getRanges(), spec.kind));
            ranges = std::move(asked);
            pciShape = std::move(shape);
            std::optional<uint32_t> pciGsi;
            if (response.hasPci()) {
              RETURN_IF_ERROR(addPciFunction(response.getPci(), response.getDoorbells()));
              if (response.getPci().getInterruptPin()) pciGsi = pciInterruptGsi;
            } else if (response.getDoorbells().size() > 0) {
              return refused("it asked for doorbells but is not a PCI function");
            }
            std::set<uint8_t> lines;
            for (uint8_t line : response.getIrqLines()) {
              if (line >= ISA_IRQ_LINES) {
                return refused(
                    absl::StrFormat("it wants interrupt line %u; only ISA lines 0-15 exist", line));
              }
              lines.insert(line);
            }
            remote->allow(std::move(lines), spec.mayExit, pciGsi, msiGsis);
            if (spec.faults != nullptr) {
              remote->setFaultRules(spec.faults->getRoot<protocol::FaultPlan>().asReader());
            }
            // A server that dies from here on while starting is started again as a restart.
            placed = true;
            return absl::OkStatus();
          },
          [](kj::Exception&& exception) { return statusFromException(exception); })
      .then([this](absl::Status attached) -> kj::Promise<absl::Status> {
        if (!attached.ok() || pciShape.empty()) return attached;
        return wire();
      });
}

absl::Status DeviceProcess::addPciFunction(protocol::PciFunction::Reader pci,
                                           capnp::List<protocol::Doorbell>::Reader doorbells) {
  if (spec.platform == nullptr) return refused("it is a PCI function, and this VM has no PCI bus");
  constexpr size_t MAX_DOORBELLS = 8;
  if (doorbells.size() > MAX_DOORBELLS || pci.getBars().size() > 6) {
    return refused(absl::StrFormat("it asked for %u doorbells and %u BARs (at most 8 and 6)",
                                   doorbells.size(), pci.getBars().size()));
  }
  PciFunctionSpec function{spec.kind, remote.get(), decodePciFunction(pci), {}};
  for (auto bell : doorbells) {
    auto fd = makeEventfd();
    if (!fd.ok()) return fd.status();
    function.doorbells.push_back(PciDoorbellSpec{decodeDoorbell(bell), fd->get()});
    doorbellFds.push_back(std::move(*fd));
  }
  auto slot = spec.platform->pci().add(std::move(function));
  if (!slot.ok()) return slot.status();
  if (pci.getMsix().getVectors() > 0) RETURN_IF_ERROR(addMsiVectors(pci.getMsix().getVectors()));
  pciInterruptGsi = PciHost::gsiForSlot(*slot);
  if (pci.getInterruptPin()) {
    auto trigger = makeEventfd();
    auto resample = makeEventfd();
    if (!trigger.ok()) return trigger.status();
    if (!resample.ok()) return resample.status();
    absl::Status routed = spec.platform->addIrqfd(pciInterruptGsi, trigger->get(), resample->get());
    if (routed.ok()) {
      interruptFd = std::move(*trigger);
      resampleFd = std::move(*resample);
    } else {
      logf("device %s: %s; its interrupt goes through the channel", spec.kind,
           std::string(routed.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status DeviceProcess::addMsiVectors(unsigned count) {
  auto first = spec.platform->reserveMsiGsis(count);
  if (!first.ok()) return first.status();
  for (unsigned vector = 0; vector < count; ++vector) msiGsis.push_back(*first + vector);
  // One irqfd per vector where the host has them; otherwise every vector travels the channel.
  for (uint32_t gsi : msiGsis) {
    auto fd = makeEventfd();
    if (!fd.ok()) return fd.status();
    absl::Status routed = spec.platform->addIrqfd(gsi, fd->get(), -1);
    if (!routed.ok()) {
      logf("device %s: %s; its MSI-X messages go through the channel", spec.kind,
           std::string(routed.message()));
      vectorFds.clear();
      break;
    }
    vectorFds.push_back(std::move(*fd));
  }
  return absl::OkStatus();
}

kj::Promise<absl::Status> DeviceProcess::wire() {
  capnp::word scratch[8];
  memset(scratch, 0, sizeof(scratch));
  capnp::MallocMessageBuilder vatMessage(scratch);
  auto vat = vatMessage.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto request = rpc->bootstrap(vat).castAs<protocol::Device>().wireRequest();
  auto bells = request.initDoorbells(doorbellFds.size());
  for (size_t i = 0; i < doorbellFds.size(); ++i) {
    bells.set(i, kj::heap<FdCapability>(doorbellFds[i].get()));
  }
  if (interruptFd.get() >= 0) {
    request.setInterrupt(kj::heap<FdCapability>(interruptFd.get()));
    request.setResample(kj::heap<FdCapability>(resampleFd.get()));
  }
  auto vectors = request.initVectors(vectorFds.size());
  for (size_t i = 0; i < vectorFds.size(); ++i) {
    vectors.set(i, kj::heap<FdCapability>(vectorFds[i].get()));
  }
  return io.provider->getTimer()
      .timeoutAfter(ATTACH_TIMEOUT, request.send())
      .then([](auto&&) { return absl::OkStatus(); },
            [](kj::Exception&& exception) { return statusFromException(exception); });
}

bool DeviceProcess::alive() {
  std::lock_guard<std::mutex> lock(incarnationLock);
  if (pidfd == nullptr) return false;
  pollfd exited{pidfd.get(), POLLIN, 0};
  return poll(&exited, 1, 0) == 0;
}

kj::Promise<void> DeviceProcess::whenServerExits() {
  // The observer is edge-triggered and an edge that came while nobody waited is lost (the
  // server may die during attach), so look at the pidfd's level first.
  pollfd exited{pidfd.get(), POLLIN, 0};
  if (poll(&exited, 1, 0) > 0) return kj::evalLater([]() {});
  return pidObserver->whenBecomesReadable();
}

kj::Promise<void> DeviceProcess::supervise() {
  if (stopped || remote->fenced() || pidObserver.get() == nullptr) return kj::READY_NOW;
  return whenServerExits().then([this]() -> kj::Promise<void> {
    std::string how = reap();
    if (stopped) return kj::READY_NOW;
    if (remote->fenced()) {
      logf("device %s: its fenced server %s", spec.kind, how);
      dropIncarnation();
      return kj::READY_NOW;
    }
    if (spec.policy.onFailure == RestartPolicy::OnFailure::ERROR) {
      remote->fence(absl::StrFormat("its server %s (on-failure=error)", how));
      dropIncarnation();
      return kj::READY_NOW;
    }
    auto now = std::chrono::steady_clock::now();
    recentRestarts.push_back(now);
    while (!recentRestarts.empty() && now - recentRestarts.front() > spec.policy.window) {
      recentRestarts.pop_front();
    }
    if (recentRestarts.size() > spec.policy.maxRestarts) {
      remote->fence(absl::StrFormat(
          "its server died %u times within %d s (the last one %s)", recentRestarts.size(),
          std::chrono::duration_cast<std::chrono::seconds>(spec.policy.window).count(), how));
      dropIncarnation();
      return kj::READY_NOW;
    }
    ++restartCount;
    if (restartLog.admit()) {
      logf("device %s: its server %s; restarting it (restart %u)", spec.kind, how, restartCount);
    }
    absl::Status spawned = spawn();
    if (!spawned.ok()) {
      remote->fence(absl::StrCat("a new server could not be started: ", spawned.message()));
      return kj::READY_NOW;
    }
    return attach().then([this](absl::Status attached) -> kj::Promise<void> {
      if (!attached.ok()) {
        // Treat it as a crash: kill it, and the next round counts it against the limit.
        if (restartLog.admit()) {
          logf("device %s: a restarted server failed: %s", spec.kind, attached.message());
        }
        killServer();
      } else {
        remote->noteProgress(std::chrono::steady_clock::now());
      }
      return supervise();
    });
  });
}

kj::Promise<void> DeviceProcess::setFaults(std::shared_ptr<capnp::MallocMessageBuilder> rules) {
  spec.faults = rules;
  remote->setFaultRules(rules != nullptr ? rules->getRoot<protocol::FaultPlan>().asReader()
                                         : protocol::FaultPlan::Reader());
  if (rpc.get() == nullptr || remote->fenced()) return kj::READY_NOW;
  capnp::word scratch[8];
  memset(scratch, 0, sizeof(scratch));
  capnp::MallocMessageBuilder vatMessage(scratch);
  auto vat = vatMessage.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto request = rpc->bootstrap(vat).castAs<protocol::Device>().setFaultsRequest();
  if (rules != nullptr) request.setFaults(rules->getRoot<protocol::FaultPlan>().asReader());
  return request.send().ignoreResult();
}

void DeviceProcess::checkWatchdog(std::chrono::steady_clock::time_point now) {
  if (stopped || childPid <= 0 || remote->fenced()) return;
  if (!remote->stalled(now, spec.policy.watchdog)) return;
  if (restartLog.admit()) {
    logf("device %s: its server left a request waiting for over %d ms; killing it", spec.kind,
         static_cast<int>(spec.policy.watchdog.count()));
  }
  remote->noteProgress(now);  // one kill per hang
  killServer();
}

void DeviceProcess::killServer() { signalServer(SIGKILL); }

bool DeviceProcess::signalServer(int signal) {
  // By pidfd, so a recycled pid can never be hit; the lock keeps a restart from swapping it.
  std::lock_guard<std::mutex> lock(incarnationLock);
  return pidfd != nullptr && syscall(SYS_pidfd_send_signal, pidfd.get(), signal, nullptr, 0) == 0;
}

void DeviceProcess::injectFault(protocol::FaultAction::Which action) {
  switch (action) {
    case protocol::FaultAction::KILL:
      signalServer(SIGKILL);
      break;
    case protocol::FaultAction::STOP:
      signalServer(SIGSTOP);
      break;
    case protocol::FaultAction::SEVER: {
      // Cut the connection under the server: it sees end-of-file and exits.
      std::lock_guard<std::mutex> lock(incarnationLock);
      if (socketFd >= 0) shutdown(socketFd, SHUT_RDWR);
      break;
    }
    default:
      break;
  }
}

std::string DeviceProcess::reap() {
  if (childPid <= 0) return "was already gone";
  int status = 0;
  pid_t done = waitpid(childPid, &status, 0);
  childPid = -1;
  return done < 0 ? "vanished" : describeWaitStatus(status);
}

bool DeviceProcess::diedFromSignal() {
  pollfd exited{pidfd.get(), POLLIN, 0};
  if (childPid <= 0 || poll(&exited, 1, 200) <= 0) return false;
  int status = 0;
  if (waitpid(childPid, &status, 0) != childPid) return false;
  childPid = -1;
  return WIFSIGNALED(status);
}

void DeviceProcess::dropIncarnation() {
  rpc = nullptr;
  network = nullptr;
  stream = nullptr;
  pidObserver = nullptr;
  std::lock_guard<std::mutex> lock(incarnationLock);
  pidfd = nullptr;
  socketFd = -1;
}

std::string DeviceProcess::stop() {
  stopped = true;
  if (childPid <= 0) {
    dropIncarnation();
    return "already stopped";
  }
  dropIncarnation();  // the server sees end-of-file and exits
  int status = 0;
  for (int waited = 0; waited < 100; ++waited) {
    pid_t done = waitpid(childPid, &status, WNOHANG);
    if (done == childPid) {
      childPid = -1;
      return describeWaitStatus(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(childPid, SIGKILL);
  waitpid(childPid, &status, 0);
  childPid = -1;
  return "did not exit within 1 s of its channel closing; killed";
}

DeviceProcess::~DeviceProcess() {
  stop();
  if (stateMapping != nullptr) munmap(stateMapping, stateRegionBytes());
}

}  // namespace bulkhead
