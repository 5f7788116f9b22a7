// The SDK's server runtime (internal to servers/sdk/): the DeviceHost a device talks to, the
// serve loop over the request ring, crash recovery through the state region, and the fault
// hooks between the device and the channel. device-server.c++ is its RPC adapter.
//
//   runtime.c++           start, the DeviceHost calls, the serve loop, interrupts and output
//   runtime-recovery.c++  checkpoints: commit after every request, resume after a restart
//   runtime-faults.c++    the fault plan: which faults fire on an event and what they do
//
// One thread runs everything (the KJ event loop), so a device never sees two calls at once.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <thread>
#include <vector>

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
                             protocol::FaultPlan::Reader plan);

  Device& model() { return *device; }

  void setIrq(uint8_t line, bool level) override;

  void setPciInterrupt(bool level) override;

  void routeMsi(unsigned vector, uint64_t address, uint32_t data) override;

  void signalMsi(unsigned vector) override;

  DmaMemory& dma() override { return dmaMemory; }

  void stateChanged() override;

  // The core wired the device's doorbells and interrupt (after every attach).
  void wire(std::vector<kj::AutoCloseFd> bells, kj::AutoCloseFd interrupt, kj::AutoCloseFd resample,
            std::vector<kj::AutoCloseFd> vectors);

  // A line change after the fault plan had its say: ISA line or PCI_LINE.
  void driveLine(uint8_t line, bool level);

  void setFaults(protocol::FaultPlan::Reader plan);

  void requestVmExit(uint8_t status) override;

  void writeOutput(kj::ArrayPtr<const uint8_t> bytes) override;

  void after(std::chrono::microseconds delay, kj::Function<void()> callback) override;

  void watchReadable(int fd, kj::Function<bool()> onReadable) override;

 private:
  // A restarted server: put the committed state back and repeat what the core may have missed.
  void resume(const Checkpoint& saved);

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

  kj::Promise<void> serve();

  // Handles every waiting request; returns whether there was any.
  bool drainRequests();

  void handle(const PoppedMessage& message);

  void commit(uint64_t seq);

  // What the faults that fired on an access do to it.
  struct Tampering {
    bool drop = false;
    std::optional<uint64_t> answer;
    uint64_t flip = 0;
    uint64_t corrupt = 0;
  };

  Tampering tamper(uint64_t seq, FaultEventKind kind, uint64_t address, uint64_t value);

  // Runs the engine and tells the core what fired.
  std::vector<FiredFault> decideFaults(FaultEventKind kind, uint64_t address, uint64_t value);

  // Actions that do not depend on the event: spurious interrupts, crash, hang.
  void applyCommon(const FiredFault& fault);

  // Records that the current request's faults are decided, keeping the device state of the last
  // commit: a successor (after a crash, or a watchdog kill during a hang or long delay)
  // replays the request without deciding its faults again.
  void commitFaultsDecided();

  void saveFaults(Checkpoint& next);

  void pause(uint32_t microseconds);

  void pushAnswer();

  // Interrupt changes a request makes reach the core only once the request is committed: a
  // crash before the commit must not leave the core with a level the replay then repeats
  // (an extra edge).
  void deliverIrq(uint8_t line, bool level);

  void publishEffects();

  void pushMsi(unsigned vector);

  void pushIrq(uint8_t line, bool level);

  // Tells the core new output is committed, when it asked to be told (or `force`).
  void notifyOutput(bool force);

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
  uint32_t faultGeneration = 0;  // of the plan `faults` holds, reported with each firing
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

}  // namespace bulkhead::sdk
