// The core's end of one device's channel: an IoHandler that turns guest accesses into ring
// requests and takes the server's replies.
//
// Writes are posted (the vCPU goes on at once) unless the range is synchronous; reads wait for
// their reply, spinning briefly and then sleeping. Everything the server writes is checked: a
// reply must answer the request being waited for, an interrupt line must be one the device
// declared, an exit request needs the right to end the VM. A violation fences the device:
// from then on reads return all-ones and writes are dropped, and the VM goes on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include <vector>

#include <kj/io.h>

#include "channel/channel.h"
#include "channel/state-region.h"
#include "device.capnp.h"
#include "faults.capnp.h"
#include "faults/fault-engine.h"
#include "kernel/base/log.h"
#include "kernel/bus/io-bus.h"

namespace bulkhead {

// What a device may do to the rest of the VM.
class DeviceSink {
 public:
  virtual ~DeviceSink() noexcept(false) = default;
  virtual void setIrqLine(uint32_t line, bool level) = 0;
  // MSI-X: GSI `gsi` (one of the device's vectors) now sends (`address`, `data`); 0: nothing.
  virtual void setMsiRoute(uint32_t gsi, uint64_t address, uint32_t data) = 0;
  // Sends one MSI message (a vector signalled through the channel).
  virtual void signalMsi(uint64_t address, uint32_t data) = 0;
  virtual void requestExit(int status, const std::string& why) = 0;
  // A fault rule fired on the device's `event`th event (each firing is reported once).
  virtual void faultFired(const std::string& device, const std::string& rule,
                          const std::string& action, uint64_t event) = 0;
};

struct RemoteDeviceCounters {
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> irqChanges{0};
  std::atomic<uint64_t> staleAnswers{0};  // repeated after a restart, ignored
  std::atomic<uint64_t> faultsFired{0};
};

class RemoteDevice final : public IoHandler {
 public:
  // `mapping` is the ring memfd's mapping; `toDevice`/`toCore` the eventfds; `state` the state
  // region's mapping; `output` where the device's output log goes (-1: nowhere).
  RemoteDevice(std::string name, ChannelMapping mapping, kj::AutoCloseFd toDevice,
               kj::AutoCloseFd toCore, StateRegionLayout* state, kj::AutoCloseFd output,
               DeviceSink& sink);

  // Called once the server said what it wants, before the guest runs.
  // `pciGsi`: where the PCI function's INTx goes (the `pciInterruptLine` of its replies).
  // `msiGsis`: the GSI of each MSI-X vector of the PCI function (empty: no MSI-X).
  void allow(std::set<uint8_t> irqLines, bool mayExit, std::optional<uint32_t> pciGsi,
             std::vector<uint32_t> msiGsis);
  // The device's fault rules: the server's are named here so its reports can be checked; the
  // supervisor's (kill, stop, sever) run here, on each access the guest makes, and
  // `supervisorAction` carries them out.
  void setFaultRules(protocol::FaultPlan::Reader rules);
  void onSupervisorFault(std::function<void(protocol::FaultAction::Which)> action) {
    supervisorAction = std::move(action);
  }
  // Called once, from the thread that fences (set before the guest runs).
  void onFence(std::function<void()> action) { fenceAction = std::move(action); }

  uint64_t read(Space space, uint64_t address, unsigned size) override;
  void write(Space space, uint64_t address, unsigned size, uint64_t value,
             bool synchronous) override;

  // Takes every waiting reply. The core's event loop calls it when toCore fires.
  void serviceReplies();
  // After serviceReplies(): tells the server to signal toCore for the next reply. Returns false
  // when a reply arrived meanwhile (service again).
  bool armWakeup();
  int toCoreFd() const { return toCore.get(); }

  // Waits until the server has handled every request sent so far and flushed its host output.
  // Used when the VM ends, so no guest output is lost. False on timeout or fence.
  bool drain(std::chrono::milliseconds timeout);

  // Forwards output the server committed to the host; any thread may call it.
  void drainOutput();

  // The watchdog's question: has a request waited, with no progress, for longer than
  // `limit`? Called periodically from one thread.
  bool stalled(std::chrono::steady_clock::time_point now, std::chrono::milliseconds limit);
  // Starts the watchdog's clock afresh (after a kill or a restart).
  void noteProgress(std::chrono::steady_clock::time_point now) { lastProgress = now; }

  void fence(const std::string& reason);
  bool fenced() const { return isFenced.load(std::memory_order_acquire); }
  const std::string& name() const { return deviceName; }
  const RemoteDeviceCounters& counters() const { return stats; }

 private:
  using Fill = std::function<void(protocol::Request::Builder)>;
  // Pushes a request; returns its sequence number, or nothing when fenced or the ring is dead.
  // `expectReply` registers the request as the awaited one before the server can see it.
  std::optional<uint64_t> post(const Fill& fill, bool expectReply);
  // Waits for the awaited request's completion; its value, or nothing on fence or timeout.
  std::optional<uint64_t> await(std::chrono::milliseconds timeout);
  void handleReply(const PoppedMessage& message);
  // Runs the supervisor's fault rules on a request just posted (producerLock held).
  void supervisorFaultsFor(const Fill& fill);
  // Records the answer to the awaited request; false when `seq` is not the one awaited.
  bool complete(uint64_t seq, uint64_t value);

  std::string deviceName;
  ChannelMapping mapping;
  kj::AutoCloseFd toDevice;
  kj::AutoCloseFd toCore;
  DeviceSink& sink;
  std::set<uint8_t> irqLines;
  bool mayExit = false;
  std::optional<uint32_t> pciInterruptGsi;
  std::vector<uint32_t> msiGsis;
  // Each vector's message as the guest last programmed it (taken by the reply consumer only).
  std::vector<std::pair<uint64_t, uint32_t>> msiMessages;

  std::mutex producerLock;  // vCPUs share the request ring
  RingProducer requests;
  std::mutex roundTripLock;  // one round trip at a time
  std::mutex consumerLock;   // one reader of the reply ring at a time
  RingConsumer replies;
  PoppedMessage slot;

  std::mutex completionLock;
  std::atomic<uint64_t> awaitedSeq{0};
  std::atomic<bool> awaiting{false};
  std::atomic<bool> answered{false};
  uint64_t answer = 0;

  std::mutex faultLock;
  // The device's rules in each recent plan, newest last: a server reports the rules of the plan
  // it holds, which is older than the newest until the change reaches it.
  struct FaultRules {
    uint32_t generation;
    std::vector<std::pair<std::string, std::string>> rules;  // name, action
    std::vector<uint64_t> lastEvent;                         // per rule, for dedup
  };
  static constexpr size_t FAULT_PLANS_KEPT = 16;
  std::deque<FaultRules> faultPlans{FaultRules{0, {}, {}}};  // generation 0: no plan yet
  FaultEngine supervisorFaults;                              // under producerLock
  std::function<void(protocol::FaultAction::Which)> supervisorAction;
  std::function<void()> fenceAction;
  StateRegionLayout* state;
  kj::AutoCloseFd output;
  bool outputBesideLog = false;  // `output` is the log's file (kernel/base/log.h)
  std::mutex outputLock;
  uint64_t outputTaken = 0;
  uint64_t watchedTail = 0;
  std::chrono::steady_clock::time_point lastProgress{};

  std::atomic<bool> isFenced{false};
  RateLimitedLog fencedAccess;
  RemoteDeviceCounters stats;
};

}  // namespace bulkhead
