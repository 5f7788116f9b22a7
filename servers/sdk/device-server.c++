// The SDK's server runtime: attaches to the core over RPC, then serves the request ring.
//
// One thread runs everything (the KJ event loop), so a device never sees two calls at once.
// After a batch of requests the loop keeps polling the ring for a short while before it sleeps
// on the eventfd: a guest's next access usually follows within microseconds, and a sleeping
// server would cost a wake-up per access.
//
// Recovery (docs/recovery.md): every request is executed, checkpointed into the state region
// with its sequence number and answer, committed, and only then released from the ring and
// answered. A restarted server resumes right after the last commit.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <type_traits>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/debug.h>

#include "channel/channel.h"
#include "channel/state-region.h"
#include "device.capnp.h"
#include "device.h"
#include "dma-memory.h"
#include "faults/fault-engine.h"
#include "sandbox.h"

namespace bulkhead::sdk {

namespace {

constexpr int CHANNEL_FD = 3;
constexpr uint32_t MAX_FDS_PER_MESSAGE = 16;
constexpr uint32_t ISA_LINES = 16;
constexpr uint8_t PCI_LINE = protocol::PCI_INTERRUPT_LINE;
constexpr uint32_t PCI_LEVEL_BIT = 1u << 31;  // in Checkpoint::irqLevels
constexpr auto SPIN_BEFORE_SLEEP = std::chrono::microseconds(200);
constexpr auto SLICE_BEFORE_YIELD = std::chrono::milliseconds(2);

using Clock = std::chrono::steady_clock;

// A shared mapping of the state region memfd.
class StateMapping {
 public:
  explicit StateMapping(int fd) {
    struct stat info;
    KJ_REQUIRE(fstat(fd, &info) == 0 && static_cast<size_t>(info.st_size) >= stateRegionBytes(),
               "the state region is too small");
    void* mapped = mmap(nullptr, stateRegionBytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    KJ_REQUIRE(mapped != MAP_FAILED, "cannot map the state region");
    base = mapped;
  }
  ~StateMapping() { munmap(base, stateRegionBytes()); }
  KJ_DISALLOW_COPY(StateMapping);
  void* get() const { return base; }
  StateRegionHeader& header() const { return static_cast<StateRegionLayout*>(base)->header; }

 private:
  void* base;
};

class Runtime final : public DeviceHost {
 public:
  struct PendingWindow {
    kj::AutoCloseFd fd;
    uint64_t offset;
    uint64_t guestPhysical;
    uint64_t size;
  };
  std::vector<PendingWindow> dmaWindows;  // received with attach, mapped by start()
  // The device's host files (DeviceConfig::backends). Owned here, not by the RPC object that
  // received them: a device may watch one (watchReadable), and the watcher must go before the
  // descriptor closes. Held by the RPC object, they once closed first when the connection
  // ended, and the watcher's removal from epoll then failed (EBADF) and aborted the server.
  std::vector<kj::AutoCloseFd> backendFds;

  Runtime(kj::StringPtr name, kj::AsyncIoContext& io, DeviceFactory factory, bool sandboxed,
          SandboxNeeds needs)
      : name(name),
        io(io),
        factory(kj::mv(factory)),
        sandboxed(sandboxed),
        needs(needs),
        tasks(errorHandler) {}

  // Takes the channel's file descriptors (already duplicated, so owned here).
  std::vector<IoRange> start(kj::AutoCloseFd ringFd, uint32_t slots, kj::AutoCloseFd toDeviceFd,
                             kj::AutoCloseFd toCoreFd, kj::AutoCloseFd stateFd, DeviceConfig config,
                             protocol::FaultPlan::Reader plan) {
    faults.load(plan, "");
    for (auto& window : dmaWindows) {
      dmaMemory.addWindow(window.fd.get(), window.offset, window.guestPhysical, window.size);
    }
    dmaWindows.clear();  // the mappings keep the memory
    dmaMemory.setFaultHook([this](uint64_t address, uint64_t length, bool) {
      DmaFault fault;
      for (const FiredFault& fired : decideFaults(FaultEventKind::DMA, address, length)) {
        switch (fired.action.which()) {
          case protocol::FaultAction::DMA_REFUSE:
            fault.refuse = true;
            break;
          case protocol::FaultAction::DMA_SHORT:
            fault.keep = std::min<uint64_t>(fault.keep, fired.action.getDmaShort());
            break;
          case protocol::FaultAction::DMA_FLIP:
            fault.flip ^= fired.action.getDmaFlip();
            break;
          default:
            applyCommon(fired);
            break;
        }
      }
      return fault;
    });
    KJ_REQUIRE(mapping.map(ringFd.get(), slots), "ring memfd is too small or unmappable");
    ring = kj::mv(ringFd);
    stateMapping.emplace(stateFd.get());
    state.emplace(stateMapping->get());
    toDevice = kj::mv(toDeviceFd);
    toCore = kj::mv(toCoreFd);
    KJ_SYSCALL(fcntl(toDevice.get(), F_SETFL, O_NONBLOCK));

    const Checkpoint* saved = state->committed();
    uint64_t startSeq = saved != nullptr
                            ? saved->lastSeq + 1
                            : static_cast<RingHeader*>(mapping.requests())->tail.load();
    requests.emplace(mapping.requests(), slots, RingConsumer::Deferred{}, startSeq);
    KJ_REQUIRE(requests->valid(), "the state region's last commit does not fit the ring");
    replies.emplace(mapping.replies(), slots);

    if (sandboxed) {
      if (const char* failure = enterSandbox(needs))
        KJ_FAIL_REQUIRE("cannot enter the sandbox", failure);
    }

    device = factory(config, *this);
    auto pci = device->pciFunction();
    pciInterrupt = pci.has_value() && pci->interruptPin;
    msixVectors = pci.has_value() ? pci->msix.vectors : 0;
    for (uint8_t line : device->irqLines()) {
      KJ_REQUIRE(line < ISA_LINES, "device declares an interrupt line beyond 15", line);
      declaredLines |= 1u << line;
    }
    if (saved != nullptr) {
      resume(*saved);
    } else {
      // A first checkpoint, so that there is always a committed copy to fall back on.
      commit(startSeq - 1);
    }
    observer = kj::heap<kj::UnixEventPort::FdObserver>(io.unixEventPort, toDevice.get(),
                                                       kj::UnixEventPort::FdObserver::OBSERVE_READ);
    // Serve after the attach answer is on its way: a replayed request that kills the server
    // should count as a crash of a running server, not as a failed attach.
    tasks.add(kj::evalLater([this]() { return serve(); }));
    return device->ranges();
  }

  Device& model() { return *device; }

  void setIrq(uint8_t line, bool level) override {
    KJ_REQUIRE(line < ISA_LINES && (declaredLines & (1u << line)),
               "device drives an interrupt line it did not declare", line);
    bool current = irqBits & (1u << line);
    if (current == level) return;
    irqBits ^= 1u << line;
    driveLine(line, level);
  }

  void setPciInterrupt(bool level) override {
    KJ_REQUIRE(pciInterrupt, "device drives a PCI interrupt it did not declare");
    if (pciLevel == level) return;
    pciLevel = level;
    driveLine(PCI_LINE, level);
  }

  void routeMsi(unsigned vector, uint64_t address, uint32_t data) override {
    KJ_REQUIRE(vector < msixVectors, "device routes an MSI-X vector it did not declare", vector);
    pushReply([&](protocol::Reply::Builder reply) {
      auto route = reply.initMsiRoute();
      route.setVector(vector);
      route.setAddress(address);
      route.setData(data);
    });
  }

  void signalMsi(unsigned vector) override {
    KJ_REQUIRE(vector < msixVectors, "device signals an MSI-X vector it did not declare", vector);
    // Like a line change, a message a request sends waits for the request's commit.
    if (inRequest) {
      pendingMsis.push_back(vector);
    } else {
      pushMsi(vector);
    }
  }

  DmaMemory& dma() override { return dmaMemory; }

  void stateChanged() override {
    // Inside a request the request's own commit covers it.
    if (inRequest) return;
    commit(state->committed()->lastSeq);
    notifyOutput(/*force=*/false);  // output written outside a request is committed now
  }

  // The core wired the device's doorbells and interrupt (after every attach).
  void wire(std::vector<kj::AutoCloseFd> bells, kj::AutoCloseFd interrupt, kj::AutoCloseFd resample,
            std::vector<kj::AutoCloseFd> vectors) {
    vectorFds = kj::mv(vectors);
    irqfd = kj::mv(interrupt);
    resampleFd = kj::mv(resample);
    if (resampleFd.get() >= 0) {
      // The guest ended the interrupt and KVM lowered the line: raise it again while the
      // device still holds it high (level-triggered INTx).
      int fd = resampleFd.get();
      watchReadable(fd, [this, fd]() {
        drainEventfd(fd);
        if (pciLevel && irqfd.get() >= 0) signalEventfd(irqfd.get());
        return true;
      });
    }
    std::vector<int> fds;
    for (auto& bell : bells) fds.push_back(bell.get());
    doorbellFds = kj::mv(bells);
    device->doorbellsReady(kj::mv(fds));
    // The predecessor may have left the line high with the interrupt unseen.
    if (pciLevel) deliverIrq(PCI_LINE, true);
  }

  // A line change after the fault plan had its say: ISA line or PCI_LINE.
  void driveLine(uint8_t line, bool level) {
    bool deliver = true;
    bool duplicate = false;
    bool replaying =
        inRequest && faultsDecided && static_cast<int64_t>(currentSeq - faultsThrough) <= 0;
    std::vector<FiredFault> fired;
    if (!replaying) fired = decideFaults(FaultEventKind::IRQ, line, level);
    for (const FiredFault& fault : fired) {
      switch (fault.action.which()) {
        case protocol::FaultAction::LOSE_IRQ:
          deliver = false;
          break;
        case protocol::FaultAction::DUPLICATE_IRQ:
          duplicate = level;
          break;
        case protocol::FaultAction::DELAY_IRQ:
          pause(fault.action.getDelayIrq());
          break;
        default:
          applyCommon(fault);
          break;
      }
    }
    if (!deliver) return;
    deliverIrq(line, level);
    if (duplicate) {
      deliverIrq(line, false);
      deliverIrq(line, true);
    }
  }

  void setFaults(protocol::FaultPlan::Reader plan) {
    faults.load(plan, "");
    faultsDecided = false;
  }

  void requestVmExit(uint8_t status) override {
    if (inRequest) {
      exitRequested = status;
      return;
    }
    pushReply([&](protocol::Reply::Builder reply) { reply.initExitVm().setStatus(status); });
  }

  void writeOutput(kj::ArrayPtr<const uint8_t> bytes) override {
    while (bytes.size() > 0) {
      size_t room = state->outputRoom(outputHead);
      if (room == 0) {
        // The core has not taken the log yet: make sure it knows, then wait for it.
        notifyOutput(/*force=*/true);
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        continue;
      }
      size_t count = bytes.size() < room ? bytes.size() : room;
      state->writeOutput(outputHead, bytes.begin(), count);
      outputHead += count;
      bytes = bytes.slice(count, bytes.size());
    }
  }

  void after(std::chrono::microseconds delay, kj::Function<void()> callback) override {
    tasks.add(io.provider->getTimer()
                  .afterDelay(delay.count() * kj::MICROSECONDS)
                  .then([this, callback = kj::mv(callback)]() mutable {
                    callback();
                    device->flush();
                  }));
  }

  void watchReadable(int fd, kj::Function<bool()> onReadable) override {
    KJ_SYSCALL(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK));
    auto watcher = kj::heap<kj::UnixEventPort::FdObserver>(
        io.unixEventPort, fd, kj::UnixEventPort::FdObserver::OBSERVE_READ);
    auto& ref = *watcher;
    // From the event loop, not from here: the caller may be the device's constructor.
    tasks.add(kj::evalLater([this, &ref, onReadable = kj::mv(onReadable)]() mutable {
                return watchLoop(ref, kj::mv(onReadable));
              }).attach(kj::mv(watcher)));
  }

 private:
  // A restarted server: put the committed state back and repeat what the core may have missed.
  void resume(const Checkpoint& saved) {
    kj::ArrayPtr<uint8_t> declared = device->declaredState();
    KJ_REQUIRE(saved.stateBytes == declared.size() && declared.size() <= STATE_MAX_BYTES,
               "the committed state does not match this device's declared state");
    memcpy(declared.begin(), saved.state, declared.size());
    device->stateRestored();
    outputHead = saved.outputHead;
    irqBits = saved.irqLevels & declaredLines;
    replySeq = saved.replySeq;
    replyValue = saved.replyValue;
    replyKind = static_cast<ReplyKind>(saved.replyKind);
    KJ_REQUIRE(saved.faultBytes == sizeof(FaultEngineState),
               "the committed fault state does not match this fault engine's");
    memcpy(&faults.state(), saved.faults, sizeof(FaultEngineState));
    faultsThrough = saved.faultsThrough;
    faultsDecided = true;
    stateMapping->header().committedOutput.store(outputHead, std::memory_order_release);
    // The answer to the last committed request may not have reached the core; the core ignores
    // answers it already has.
    if (replyKind != ReplyKind::NONE) pushAnswer();
    for (uint8_t line = 0; line < ISA_LINES; ++line) {
      if (declaredLines & (1u << line)) pushIrq(line, irqBits & (1u << line));
    }
    pciLevel = saved.irqLevels & PCI_LEVEL_BIT;
    notifyOutput(/*force=*/true);
  }

  kj::Promise<void> watchLoop(kj::UnixEventPort::FdObserver& watcher,
                              kj::Function<bool()> onReadable) {
    // Edge-triggered: the callback must read until EAGAIN before we wait again.
    bool keepWatching = onReadable();
    device->flush();
    if (!keepWatching) return kj::READY_NOW;
    return watcher.whenBecomesReadable().then(
        [this, &watcher, onReadable = kj::mv(onReadable)]() mutable {
          return watchLoop(watcher, kj::mv(onReadable));
        });
  }

  kj::Promise<void> serve() {
    Clock::time_point sliceStart = Clock::now();
    Clock::time_point lastWork = sliceStart;
    for (;;) {
      if (drainRequests()) {
        lastWork = Clock::now();
        if (lastWork - sliceStart > SLICE_BEFORE_YIELD) {
          // Let the event loop look at RPC and backends: wake ourselves through the eventfd so
          // the loop's next poll sees every ready descriptor.
          device->flush();
          signalEventfd(toDevice.get());
          return observer->whenBecomesReadable().then([this]() { return serve(); });
        }
        continue;
      }
      if (Clock::now() - lastWork > SPIN_BEFORE_SLEEP) break;
      __builtin_ia32_pause();
    }
    device->flush();
    drainEventfd(toDevice.get());
    if (!requests->prepareSleep()) return kj::evalLater([this]() { return serve(); });
    return observer->whenBecomesReadable().then([this]() { return serve(); });
  }

  // Handles every waiting request; returns whether there was any.
  bool drainRequests() {
    bool any = false;
    for (;;) {
      RingStatus status = popMessage(*requests, slot);
      if (status == RingStatus::EMPTY) return any;
      KJ_REQUIRE(status == RingStatus::OK, "the core's request ring is corrupt");
      any = true;
      handle(slot);
    }
  }

  void handle(const PoppedMessage& message) {
    capnp::FlatArrayMessageReader reader(message.payload(), channelReaderOptions());
    auto request = reader.getRoot<protocol::Request>();
    uint64_t seq = message.seq;
    currentSeq = seq;
    inRequest = true;
    KJ_DEFER(inRequest = false);
    ReplyKind answer = ReplyKind::NONE;
    uint64_t value = 0;
    switch (request.which()) {
      case protocol::Request::READ: {
        auto access = request.getRead();
        answer = ReplyKind::READ;
        if (!validAccess(access)) {
          value = ~0ull;
          break;
        }
        Tampering t = tamper(seq, FaultEventKind::READ, access.getAddress(), 0);
        value = t.drop ? ~0ull : device->read(space(access), access.getAddress(), access.getSize());
        if (t.answer) value = *t.answer;
        value ^= t.flip;
        break;
      }
      case protocol::Request::WRITE:
      case protocol::Request::WRITE_SYNC: {
        bool sync = request.which() == protocol::Request::WRITE_SYNC;
        auto access = sync ? request.getWriteSync() : request.getWrite();
        if (validAccess(access)) {
          Tampering t = tamper(seq, FaultEventKind::WRITE, access.getAddress(), access.getValue());
          if (!t.drop) {
            device->write(space(access), access.getAddress(), access.getSize(),
                          access.getValue() ^ t.corrupt);
          }
        }
        if (sync) {
          device->flush();
          answer = ReplyKind::DONE;
        }
        break;
      }
      case protocol::Request::FLUSH:
        device->flush();
        answer = ReplyKind::DONE;
        break;
      default:
        KJ_FAIL_REQUIRE("unknown request kind from the core", static_cast<int>(request.which()));
    }
    if (answer != ReplyKind::NONE) {
      replySeq = seq;
      replyValue = value;
      replyKind = answer;
    }
    commit(seq);
    requests->release(seq + 1);
    inRequest = false;
    publishEffects();
    if (answer != ReplyKind::NONE) pushAnswer();
    notifyOutput(/*force=*/false);
  }

  void commit(uint64_t seq) {
    Checkpoint& next = state->next();
    next.lastSeq = seq;
    next.outputHead = outputHead;
    next.replySeq = replySeq;
    next.replyValue = replyValue;
    next.replyKind = static_cast<uint8_t>(replyKind);
    next.irqLevels = irqBits | (pciLevel ? PCI_LEVEL_BIT : 0);
    saveFaults(next);
    next.faultsThrough = faultsThrough;
    kj::ArrayPtr<uint8_t> declared = device->declaredState();
    KJ_REQUIRE(declared.size() <= STATE_MAX_BYTES, "declared state is larger than 2 KiB");
    next.stateBytes = declared.size();
    memcpy(next.state, declared.begin(), declared.size());
    state->commit();
  }

  // What the faults that fired on an access do to it.
  struct Tampering {
    bool drop = false;
    std::optional<uint64_t> answer;
    uint64_t flip = 0;
    uint64_t corrupt = 0;
  };

  Tampering tamper(uint64_t seq, FaultEventKind kind, uint64_t address, uint64_t value) {
    Tampering t;
    currentSeq = seq;
    // A request replayed after a crash or hang the plan itself caused has had its faults.
    if (faultsDecided && static_cast<int64_t>(seq - faultsThrough) <= 0) return t;
    for (const FiredFault& fault : decideFaults(kind, address, value)) {
      switch (fault.action.which()) {
        case protocol::FaultAction::DROP:
          t.drop = true;
          break;
        case protocol::FaultAction::DELAY:
          pause(fault.action.getDelay());
          break;
        case protocol::FaultAction::ANSWER:
          t.answer = fault.action.getAnswer();
          break;
        case protocol::FaultAction::FLIP:
          t.flip ^= fault.action.getFlip();
          break;
        case protocol::FaultAction::CORRUPT:
          t.corrupt ^= fault.action.getCorrupt();
          break;
        default:
          applyCommon(fault);
          break;
      }
    }
    return t;
  }

  // Runs the engine and tells the core what fired.
  std::vector<FiredFault> decideFaults(FaultEventKind kind, uint64_t address, uint64_t value) {
    std::vector<FiredFault> fired = faults.onEvent(kind, address, value);
    for (const FiredFault& fault : fired) {
      pushReply([&](protocol::Reply::Builder reply) {
        auto report = reply.initFaultFired();
        report.setRule(fault.rule);
        report.setEvent(fault.event);
      });
    }
    return fired;
  }

  // Actions that do not depend on the event: spurious interrupts, crash, hang.
  void applyCommon(const FiredFault& fault) {
    switch (fault.action.which()) {
      case protocol::FaultAction::SPURIOUS_IRQ:
        for (uint8_t line = 0; line < ISA_LINES; ++line) {
          if (!(declaredLines & (1u << line))) continue;
          bool level = irqBits & (1u << line);
          pushIrq(line, !level);
          pushIrq(line, level);
          return;
        }
        if (pciInterrupt) pushIrq(PCI_LINE, true);  // the device's ISR says "nothing happened"
        break;
      case protocol::FaultAction::CRASH:
        commitFaultsDecided();
        abort();
      case protocol::FaultAction::HANG:
        commitFaultsDecided();
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(3600));
      default:
        break;  // DMA faults act where the device transfers (the DmaMemory hook)
    }
  }

  // Records that the current request's faults are decided, keeping the device state of the last
  // commit: a successor (after a crash, or a watchdog kill during a hang or long delay)
  // replays the request without deciding its faults again.
  void commitFaultsDecided() {
    const Checkpoint* committed = state->committed();
    Checkpoint& next = state->next();
    memcpy(&next, committed, sizeof(Checkpoint));
    saveFaults(next);
    next.faultsThrough = currentSeq;
    state->commit();
  }

  void saveFaults(Checkpoint& next) {
    static_assert(sizeof(FaultEngineState) <= FAULT_STATE_MAX_BYTES);
    static_assert(std::is_trivially_copyable_v<FaultEngineState>);
    next.faultBytes = sizeof(FaultEngineState);
    memcpy(next.faults, &faults.state(), sizeof(FaultEngineState));
  }

  void pause(uint32_t microseconds) {
    if (inRequest) commitFaultsDecided();
    // At most 10 s: longer only trips the core's watchdog.
    std::this_thread::sleep_for(
        std::chrono::microseconds(std::min<uint32_t>(microseconds, 10000000)));
  }

  void pushAnswer() {
    pushReply([&](protocol::Reply::Builder reply) {
      if (replyKind == ReplyKind::READ) {
        auto done = reply.initReadDone();
        done.setSeq(replySeq);
        done.setValue(replyValue);
      } else {
        reply.initDone().setSeq(replySeq);
      }
    });
  }

  // Interrupt changes a request makes reach the core only once the request is committed: a
  // crash before the commit must not leave the core with a level the replay then repeats
  // (an extra edge).
  void deliverIrq(uint8_t line, bool level) {
    if (inRequest) {
      pendingIrqs.emplace_back(line, level);
    } else {
      pushIrq(line, level);
    }
  }

  void publishEffects() {
    for (auto [line, level] : pendingIrqs) pushIrq(line, level);
    pendingIrqs.clear();
    for (unsigned vector : pendingMsis) pushMsi(vector);
    pendingMsis.clear();
    if (exitRequested) {
      uint8_t status = *exitRequested;
      exitRequested.reset();
      pushReply([&](protocol::Reply::Builder reply) { reply.initExitVm().setStatus(status); });
    }
  }

  void pushMsi(unsigned vector) {
    if (vector < vectorFds.size()) {
      signalEventfd(vectorFds[vector].get());
      return;
    }
    pushReply([&](protocol::Reply::Builder reply) { reply.initMsi().setVector(vector); });
  }

  void pushIrq(uint8_t line, bool level) {
    if (line == PCI_LINE && irqfd.get() >= 0) {
      // KVM lowers the line itself when the guest ends the interrupt (resample).
      if (level) signalEventfd(irqfd.get());
      return;
    }
    pushReply([&](protocol::Reply::Builder reply) {
      auto irq = reply.initIrq();
      irq.setLine(line);
      irq.setLevel(level);
    });
  }

  // Tells the core new output is committed, when it asked to be told (or `force`).
  void notifyOutput(bool force) {
    StateRegionHeader& header = stateMapping->header();
    if (!force && header.committedOutput.load(std::memory_order_relaxed) ==
                      header.outputTail.load(std::memory_order_relaxed)) {
      return;
    }
    if (force || header.outputWanted.exchange(0, std::memory_order_acq_rel) != 0) {
      pushReply([](protocol::Reply::Builder reply) { reply.setOutput(); });
    }
  }

  static bool validAccess(protocol::Access::Reader access) {
    unsigned size = access.getSize();
    return (size == 1 || size == 2 || size == 4 || size == 8) &&
           validSpace(static_cast<uint16_t>(access.getSpace()));
  }
  static Space space(protocol::Access::Reader access) {
    return static_cast<Space>(static_cast<uint16_t>(access.getSpace()));
  }

  template <typename Fill>
  void pushReply(Fill&& fill) {
    for (unsigned attempt = 0;; ++attempt) {
      RingStatus status = pushMessage<protocol::Reply>(*replies, fill);
      if (status == RingStatus::OK) break;
      KJ_REQUIRE(status == RingStatus::FULL, "the core's reply ring is corrupt");
      // The core drains replies continuously; a full ring means it is busy. Wait politely.
      if (replies->consumerNeedsWake()) signalEventfd(toCore.get());
      if (attempt > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (replies->consumerNeedsWake()) signalEventfd(toCore.get());
  }

  class ErrorHandler final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& exception) override {
      fprintf(stderr, "bulkhead device server: %s\n", exception.getDescription().cStr());
      _exit(1);
    }
  };

  kj::StringPtr name;
  kj::AsyncIoContext& io;
  DeviceFactory factory;
  bool sandboxed;
  SandboxNeeds needs;
  kj::AutoCloseFd ring;
  ChannelMapping mapping;
  std::optional<StateMapping> stateMapping;
  std::optional<StateWriter> state;
  kj::AutoCloseFd toDevice;
  kj::AutoCloseFd toCore;
  std::optional<RingConsumer> requests;
  std::optional<RingProducer> replies;
  kj::Own<Device> device;
  DmaMemory dmaMemory;
  std::vector<kj::AutoCloseFd> doorbellFds;
  kj::AutoCloseFd irqfd;
  kj::AutoCloseFd resampleFd;
  bool pciInterrupt = false;
  bool pciLevel = false;
  uint32_t declaredLines = 0;
  uint32_t irqBits = 0;
  uint64_t outputHead = 0;
  uint64_t replySeq = 0;
  uint64_t replyValue = 0;
  ReplyKind replyKind = ReplyKind::NONE;
  FaultEngine faults;
  uint64_t faultsThrough = 0;
  bool faultsDecided = false;  // faultsThrough is meaningful
  uint64_t currentSeq = 0;
  bool inRequest = false;
  std::vector<std::pair<uint8_t, bool>> pendingIrqs;  // made by the request in progress
  std::vector<unsigned> pendingMsis;                  // sent by the request in progress
  uint16_t msixVectors = 0;
  std::vector<kj::AutoCloseFd> vectorFds;  // irqfds, one per MSI-X vector, where the host has them
  std::optional<uint8_t> exitRequested;
  kj::Own<kj::UnixEventPort::FdObserver> observer;
  PoppedMessage slot;
  ErrorHandler errorHandler;
  kj::TaskSet tasks;
};

// Our own copies of descriptors that arrived with an RPC (the RPC system closes its own): each
// one must have arrived.
std::vector<kj::AutoCloseFd> keep(kj::ArrayPtr<kj::Maybe<int>> received) {
  std::vector<kj::AutoCloseFd> owned;
  for (auto& maybeFd : received) {
    KJ_IF_MAYBE (fd, maybeFd) {
      owned.emplace_back(fcntl(*fd, F_DUPFD_CLOEXEC, 3));
    } else {
      KJ_FAIL_REQUIRE("a file descriptor did not arrive");
    }
  }
  return owned;
}

class DeviceImpl final : public protocol::Device::Server {
 public:
  explicit DeviceImpl(Runtime& runtime, kj::StringPtr name) : runtime(runtime), name(name) {}

  kj::Promise<void> attach(AttachContext context) override {
    KJ_REQUIRE(!attached, "attach called twice");
    attached = true;
    auto params = context.getParams();
    auto channel = params.getChannel();
    kj::Vector<kj::Promise<kj::Maybe<int>>> fds;
    fds.add(channel.getRing().getFd());
    fds.add(channel.getToDevice().getFd());
    fds.add(channel.getToCore().getFd());
    fds.add(channel.getState().getFd());
    for (auto backend : params.getBackends()) fds.add(backend.getFd());
    size_t backendCount = params.getBackends().size();
    for (auto window : params.getDma()) {
      fds.add(window.getMemory().getFd());
      runtime.dmaWindows.push_back(Runtime::PendingWindow{
          kj::AutoCloseFd(), window.getOffset(), window.getGuestPhysical(), window.getSize()});
    }
    DeviceConfig config;
    for (auto option : params.getOptions()) config.options[option.getKey()] = option.getValue();
    uint32_t slots = channel.getRingSlots();
    return kj::joinPromises(fds.releaseAsArray())
        .then([this, context, slots, backendCount,
               config = kj::mv(config)](kj::Array<kj::Maybe<int>> received) mutable {
          std::vector<kj::AutoCloseFd> owned = keep(received);
          constexpr size_t CHANNEL_FDS = 4;
          for (size_t i = CHANNEL_FDS; i < CHANNEL_FDS + backendCount; ++i) {
            config.backends.push_back(owned[i].get());
            runtime.backendFds.push_back(kj::mv(owned[i]));
          }
          for (size_t i = 0; i < runtime.dmaWindows.size(); ++i) {
            runtime.dmaWindows[i].fd = kj::mv(owned[CHANNEL_FDS + backendCount + i]);
          }
          std::vector<IoRange> ranges =
              runtime.start(kj::mv(owned[0]), slots, kj::mv(owned[1]), kj::mv(owned[2]),
                            kj::mv(owned[3]), kj::mv(config), context.getParams().getFaults());
          auto results = context.getResults();
          results.setName(name);
          auto list = results.initRanges(ranges.size());
          for (size_t i = 0; i < ranges.size(); ++i) {
            KJ_REQUIRE(ranges[i].space == Space::MMIO || ranges[i].space == Space::PIO,
                       "a device range must be in port or MMIO space");
            list[i].setSpace(ranges[i].space == Space::MMIO ? protocol::Space::MMIO
                                                            : protocol::Space::PIO);
            list[i].setBase(ranges[i].base);
            list[i].setSize(ranges[i].size);
            list[i].setSynchronous(ranges[i].synchronous);
          }
          std::vector<uint8_t> lines = runtime.model().irqLines();
          auto irqs = results.initIrqLines(lines.size());
          for (size_t i = 0; i < lines.size(); ++i) irqs.set(i, lines[i]);
          if (auto pci = runtime.model().pciFunction()) encodePciFunction(*pci, results.initPci());
          std::vector<Doorbell> bells = runtime.model().doorbells();
          auto doorbells = results.initDoorbells(bells.size());
          for (size_t i = 0; i < bells.size(); ++i) encodeDoorbell(bells[i], doorbells[i]);
        });
  }

  kj::Promise<void> wire(WireContext context) override {
    KJ_REQUIRE(attached, "wire before attach");
    auto params = context.getParams();
    kj::Vector<kj::Promise<kj::Maybe<int>>> fds;
    for (auto bell : params.getDoorbells()) fds.add(bell.getFd());
    bool interrupt = params.hasInterrupt();
    bool resample = params.hasResample();
    if (interrupt) fds.add(params.getInterrupt().getFd());
    if (resample) fds.add(params.getResample().getFd());
    for (auto vector : params.getVectors()) fds.add(vector.getFd());
    size_t bells = params.getDoorbells().size();
    return kj::joinPromises(fds.releaseAsArray())
        .then([this, bells, interrupt, resample](kj::Array<kj::Maybe<int>> received) {
          std::vector<kj::AutoCloseFd> owned = keep(received);
          kj::AutoCloseFd interruptFd, resampleFd;
          size_t next = bells;
          if (interrupt) interruptFd = kj::mv(owned[next++]);
          if (resample) resampleFd = kj::mv(owned[next++]);
          std::vector<kj::AutoCloseFd> vectors;
          for (; next < owned.size(); ++next) vectors.push_back(kj::mv(owned[next]));
          owned.resize(bells);
          runtime.wire(kj::mv(owned), kj::mv(interruptFd), kj::mv(resampleFd), kj::mv(vectors));
        });
  }

  kj::Promise<void> setFaults(SetFaultsContext context) override {
    KJ_REQUIRE(attached, "setFaults before attach");
    runtime.setFaults(context.getParams().getFaults());
    return kj::READY_NOW;
  }

 private:
  Runtime& runtime;
  kj::StringPtr name;
  bool attached = false;
};

}  // namespace

void requireKnownOptions(const DeviceConfig& config, std::initializer_list<const char*> known) {
  for (const auto& [key, value] : config.options) {
    bool found = false;
    std::string names;
    for (const char* name : known) {
      found = found || key == name;
      names += names.empty() ? name : std::string(", ") + name;
    }
    if (!found) KJ_FAIL_REQUIRE(kj::str("unknown option '", key, "'; it takes: ", names.c_str()));
  }
}

uint64_t numberOption(const DeviceConfig& config, const std::string& key, uint64_t fallback) {
  auto it = config.options.find(key);
  if (it == config.options.end()) return fallback;
  char* end = nullptr;
  errno = 0;
  unsigned long long value = strtoull(it->second.c_str(), &end, 0);
  if (errno != 0 || end == it->second.c_str() || *end != '\0') {
    KJ_FAIL_REQUIRE(kj::str("option ", key.c_str(), "='", it->second.c_str(), "' is not a number"));
  }
  return value;
}

kj::Promise<void> serveDevice(kj::AsyncIoContext& io, kj::Own<kj::AsyncCapabilityStream> stream,
                              kj::StringPtr name, DeviceFactory factory, bool sandboxed,
                              SandboxNeeds needs) {
  auto runtime = kj::heap<Runtime>(name, io, kj::mv(factory), sandboxed, needs);
  auto network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, MAX_FDS_PER_MESSAGE,
                                                     capnp::rpc::twoparty::Side::SERVER);
  auto rpc = kj::heap(capnp::makeRpcServer(*network, kj::heap<DeviceImpl>(*runtime, name)));
  auto disconnected = network->onDisconnect();
  // Attachments are destroyed last to first: the RPC system, the network, the runtime, the stream.
  return disconnected.attach(kj::mv(stream), kj::mv(runtime), kj::mv(network), kj::mv(rpc));
}

int runDeviceServer(kj::StringPtr name, DeviceFactory factory, SandboxNeeds needs) {
  // Die with the core even if it is killed outright; the core also set this before exec, but a
  // server started by hand gets it here.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (fcntl(CHANNEL_FD, F_GETFD) < 0) {
    fprintf(stderr,
            "bulkhead-%s: no channel on file descriptor 3; device servers are started by the "
            "bulkhead core, not by hand\n",
            name.cStr());
    return 2;
  }
  kj::AsyncIoContext io = kj::setupAsyncIo();
  auto stream = io.lowLevelProvider->wrapUnixSocketFd(CHANNEL_FD,
                                                      kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  // The core closing the channel (or dying) ends the server.
  serveDevice(io, kj::mv(stream), name, kj::mv(factory), /*sandboxed=*/true, needs)
      .wait(io.waitScope);
  return 0;
}

}  // namespace bulkhead::sdk
