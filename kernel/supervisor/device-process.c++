// Starting a device: the server's place (findServer), its policy options, the attach that
// checks what it asks for and places it on the bus and the PCI host, and the wiring of its
// doorbells and interrupts. The jail it runs in: jail.c++; watching it: supervision.c++.
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

constexpr size_t MAX_RANGES = 16;
constexpr unsigned ISA_IRQ_LINES = 16;
constexpr auto ATTACH_TIMEOUT = 5 * kj::SECONDS;

bool isExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

std::string ownDirectory() {
  char buffer[4096];
  ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return ".";
  std::string path(buffer, n);
  return path.substr(0, path.rfind('/'));
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
  process->prepareSpare();
  return process;
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
      if (verbose())
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
      if (verbose())
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

}  // namespace bulkhead
