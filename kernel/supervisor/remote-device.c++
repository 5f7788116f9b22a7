#include "kernel/supervisor/remote-device.h"

#include <poll.h>
#include <sched.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>

#include <thread>

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <kj/exception.h>
#include "faults/fault-plan.h"

namespace bulkhead {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto SPIN_FOR_REPLY = std::chrono::microseconds(300);
constexpr auto PURE_SPIN = std::chrono::microseconds(20);
constexpr auto ROUND_TRIP_TIMEOUT = std::chrono::milliseconds(5000);
constexpr auto FULL_RING_TIMEOUT = std::chrono::milliseconds(5000);

}  // namespace

RemoteDevice::RemoteDevice(std::string name, ChannelMapping mappingIn, kj::AutoCloseFd toDevice,
                           kj::AutoCloseFd toCore, StateRegionLayout* state, kj::AutoCloseFd output,
                           DeviceSink& sink)
    : deviceName(kj::mv(name)),
      mapping(kj::mv(mappingIn)),
      toDevice(kj::mv(toDevice)),
      toCore(kj::mv(toCore)),
      sink(sink),
      requests(mapping.requests(), mapping.slotCount()),
      replies(mapping.replies(), mapping.slotCount()),
      state(state),
      output(kj::mv(output)) {
  outputBesideLog = this->output != nullptr && sharesLogFile(this->output.get());
  state->header.outputWanted.store(1, std::memory_order_release);
}

void RemoteDevice::allow(std::set<uint8_t> lines, bool exitAllowed, std::optional<uint32_t> pciGsi,
                         std::vector<uint32_t> vectorGsis) {
  msiGsis = std::move(vectorGsis);
  msiMessages.assign(msiGsis.size(), {0, 0});
  irqLines = kj::mv(lines);
  mayExit = exitAllowed;
  pciInterruptGsi = pciGsi;
}

void RemoteDevice::setFaultRules(protocol::FaultPlan::Reader rules) {
  {
    std::lock_guard<std::mutex> lock(faultLock);
    FaultRules plan{rules.getGeneration(), {}, {}};
    for (auto rule : rules.getRules()) {
      if (isSupervisorAction(rule.getAction())) continue;  // in the order the server numbers them
      plan.rules.emplace_back(rule.getName(), describeFaultAction(rule.getAction()));
    }
    plan.lastEvent.assign(plan.rules.size(), 0);
    // A restarted server is given the newest plan again: nothing older is needed then, but
    // keeping it costs nothing either.
    if (!faultPlans.empty() && faultPlans.back().generation == plan.generation) {
      faultPlans.back() = std::move(plan);
    } else {
      faultPlans.push_back(std::move(plan));
    }
    if (faultPlans.size() > FAULT_PLANS_KEPT) faultPlans.pop_front();
  }
  std::lock_guard<std::mutex> lock(producerLock);
  supervisorFaults.load(rules, "", FaultEngine::Side::SUPERVISOR);
}

std::optional<uint64_t> RemoteDevice::post(const Fill& fill, bool expectReply) {
  std::lock_guard<std::mutex> lock(producerLock);
  Clock::time_point start = Clock::now();
  for (unsigned attempt = 0;; ++attempt) {
    if (fenced()) return std::nullopt;
    uint64_t seq = requests.nextSeq();
    if (expectReply) {
      // Before the request is visible: the reply may be taken by another thread at once.
      std::lock_guard<std::mutex> completion(completionLock);
      awaitedSeq.store(seq, std::memory_order_relaxed);
      answered.store(false, std::memory_order_relaxed);
      awaiting.store(true, std::memory_order_release);
    }
    RingStatus status = pushMessage<protocol::Request>(requests, [&](protocol::Request::Builder r) {
      r.setSeq(seq);
      fill(r);
    });
    if (status == RingStatus::OK) {
      if (requests.consumerNeedsWake()) signalEventfd(toDevice.get());
      if (!supervisorFaults.empty()) supervisorFaultsFor(fill);
      return seq;
    }
    if (status == RingStatus::CORRUPT) {
      fence("the request ring's consumer index is impossible (the server wrote it)");
      return std::nullopt;
    }
    // Full: the server is behind. Make sure it is awake, then wait for room, bounded.
    if (requests.consumerNeedsWake()) signalEventfd(toDevice.get());
    if (Clock::now() - start > FULL_RING_TIMEOUT) {
      fence("the server took no request for 5 s while its ring was full");
      return std::nullopt;
    }
    if (attempt > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

void RemoteDevice::supervisorFaultsFor(const Fill& fill) {
  // Rebuild the access to see its kind, address and value (cheap, and only with such rules).
  capnp::MallocMessageBuilder message;
  auto request = message.initRoot<protocol::Request>();
  fill(request);
  FaultEventKind kind;
  protocol::Access::Reader access;
  switch (request.which()) {
    case protocol::Request::READ:
      kind = FaultEventKind::READ;
      access = request.getRead().asReader();
      break;
    case protocol::Request::WRITE:
      kind = FaultEventKind::WRITE;
      access = request.getWrite().asReader();
      break;
    case protocol::Request::WRITE_SYNC:
      kind = FaultEventKind::WRITE;
      access = request.getWriteSync().asReader();
      break;
    default:
      return;  // a flush is not the guest's
  }
  for (const FiredFault& fault :
       supervisorFaults.onEvent(kind, access.getAddress(), access.getValue())) {
    stats.faultsFired.fetch_add(1, std::memory_order_relaxed);
    sink.faultFired(deviceName, supervisorFaults.ruleName(fault.rule),
                    describeFaultAction(fault.action), fault.event);
    if (supervisorAction) supervisorAction(fault.action.which());
  }
}

uint64_t RemoteDevice::read(Space space, uint64_t address, unsigned size) {
  if (fenced()) {
    if (fencedAccess.admit()) logf("read from fenced device %s: all-ones", deviceName);
    return allOnes(size);
  }
  stats.reads.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> roundTrip(roundTripLock);
  std::optional<uint64_t> seq = post(
      [&](protocol::Request::Builder request) {
        auto access = request.initRead();
        access.setSpace(wireSpace(space));
        access.setAddress(address);
        access.setSize(size);
      },
      /*expectReply=*/true);
  if (!seq) return allOnes(size);
  return await(ROUND_TRIP_TIMEOUT).value_or(allOnes(size));
}

void RemoteDevice::write(Space space, uint64_t address, unsigned size, uint64_t value,
                         bool synchronous) {
  if (fenced()) {
    if (fencedAccess.admit()) logf("write to fenced device %s dropped", deviceName);
    return;
  }
  stats.writes.fetch_add(1, std::memory_order_relaxed);
  auto fill = [&](protocol::Request::Builder request) {
    auto access = synchronous ? request.initWriteSync() : request.initWrite();
    access.setSpace(wireSpace(space));
    access.setAddress(address);
    access.setSize(size);
    access.setValue(value);
  };
  if (!synchronous) {
    post(fill, /*expectReply=*/false);
    return;
  }
  std::lock_guard<std::mutex> roundTrip(roundTripLock);
  if (post(fill, /*expectReply=*/true)) await(ROUND_TRIP_TIMEOUT);
}

bool RemoteDevice::drain(std::chrono::milliseconds timeout) {
  if (fenced()) return false;
  std::lock_guard<std::mutex> roundTrip(roundTripLock);
  std::optional<uint64_t> seq =
      post([](protocol::Request::Builder request) { request.setFlush(); }, /*expectReply=*/true);
  return seq && await(timeout).has_value();
}

std::optional<uint64_t> RemoteDevice::await(std::chrono::milliseconds timeout) {
  auto done = [&]() { return answered.load(std::memory_order_acquire) || fenced(); };
  // The reply usually comes within microseconds: poll the ring first.
  Clock::time_point start = Clock::now();
  for (Clock::duration waited{}; !done() && waited < SPIN_FOR_REPLY;
       waited = Clock::now() - start) {
    serviceReplies();
    // A pure spin first (the usual reply comes within it); then give the core away between
    // looks, in case the server is waiting for it (a 2-core host with the server on this core
    // waited the whole spin, then 1 ms more below: 1.4 ms reads in 2 runs of 12 here).
    if (waited < PURE_SPIN) {
      __builtin_ia32_pause();
    } else {
      sched_yield();
    }
  }
  // Then sleep on toCore. The event loop may take the reply instead of us, so wake up every
  // millisecond to look.
  bool tookWakeups = false;
  while (!done()) {
    if (Clock::now() - start > timeout) {
      fence("the server did not answer a request within its time limit (hung?)");
      break;
    }
    if (armWakeup()) {
      pollfd wake{toCore.get(), POLLIN, 0};
      if (poll(&wake, 1, 1) > 0) {
        drainEventfd(toCore.get());
        tookWakeups = true;
      }
    }
    serviceReplies();
  }
  if (tookWakeups) {
    // We may have eaten a wake-up meant for the event loop, which then sleeps with the
    // server no longer asked to wake anyone: ask again, and take what came meanwhile.
    while (!armWakeup()) serviceReplies();
  }
  std::lock_guard<std::mutex> lock(completionLock);
  awaiting.store(false, std::memory_order_release);
  if (!answered.load(std::memory_order_acquire)) return std::nullopt;
  return answer;
}

void RemoteDevice::serviceReplies() {
  std::unique_lock<std::mutex> lock(consumerLock, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is taking them
  for (;;) {
    RingStatus status = popMessage(replies, slot);
    if (status == RingStatus::EMPTY) return;
    if (status != RingStatus::OK) {
      fence("the reply ring is corrupt (impossible index, sequence number or length)");
      return;
    }
    handleReply(slot);
    if (fenced()) return;
  }
}

bool RemoteDevice::armWakeup() {
  std::lock_guard<std::mutex> lock(consumerLock);
  // Both the event loop and a waiting vCPU arm the wake-up; neither may cancel the other's.
  return replies.requestWake();
}

bool RemoteDevice::complete(uint64_t seq, uint64_t value) {
  std::lock_guard<std::mutex> lock(completionLock);
  if (!awaiting.load(std::memory_order_acquire) ||
      seq != awaitedSeq.load(std::memory_order_relaxed) ||
      answered.load(std::memory_order_relaxed)) {
    // A restarted server repeats the answer to its last committed request, which the core may
    // already have. An answer to a request never posted, though, is a lie.
    uint64_t posted = requests.nextSeq();  // read without producerLock: a stale value is safe
    if (static_cast<int64_t>(seq - posted) < 0) {
      stats.staleAnswers.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    return false;
  }
  answer = value;
  answered.store(true, std::memory_order_release);
  return true;
}

void RemoteDevice::handleReply(const PoppedMessage& message) {
  auto handle = [&]() {
    capnp::FlatArrayMessageReader reader(message.payload(), channelReaderOptions());
    auto reply = reader.getRoot<protocol::Reply>();
    switch (reply.which()) {
      case protocol::Reply::READ_DONE:
        if (!complete(reply.getReadDone().getSeq(), reply.getReadDone().getValue())) {
          fence("answered a read that was never asked (sequence number from the future)");
        }
        return;
      case protocol::Reply::DONE:
        if (!complete(reply.getDone().getSeq(), 0)) {
          fence(
              "completed a request that is not awaited (wrong, repeated or late sequence "
              "number)");
        }
        return;
      case protocol::Reply::IRQ: {
        uint8_t line = reply.getIrq().getLine();
        if (line == protocol::PCI_INTERRUPT_LINE && pciInterruptGsi.has_value()) {
          stats.irqChanges.fetch_add(1, std::memory_order_relaxed);
          sink.setIrqLine(*pciInterruptGsi, reply.getIrq().getLevel());
          return;
        }
        if (irqLines.count(line) == 0) {
          fence(absl::StrFormat("drove interrupt line %u, which it did not declare", line));
          return;
        }
        stats.irqChanges.fetch_add(1, std::memory_order_relaxed);
        sink.setIrqLine(line, reply.getIrq().getLevel());
        return;
      }
      case protocol::Reply::EXIT_VM: {
        uint8_t status = reply.getExitVm().getStatus();
        if (!mayExit) {
          fence("asked to end the VM without the right to");
          return;
        }
        sink.requestExit(status,
                         absl::StrFormat("%s ended the VM with status %u", deviceName, status));
        return;
      }
      case protocol::Reply::OUTPUT:
        drainOutput();
        return;
      case protocol::Reply::MSI_ROUTE: {
        auto route = reply.getMsiRoute();
        unsigned vector = route.getVector();
        if (vector >= msiGsis.size()) {
          fence(absl::StrFormat("routed MSI-X vector %u; it has %u", vector, msiGsis.size()));
          return;
        }
        // What the guest wrote in the table; an address that names no local APIC sends nothing
        // (a message elsewhere would be a DMA write, which no device here makes that way).
        uint64_t address = route.getAddress();
        if ((address >> 20) != 0xfee) address = 0;
        if (msiMessages[vector] == std::make_pair(address, route.getData())) return;
        msiMessages[vector] = {address, route.getData()};
        sink.setMsiRoute(msiGsis[vector], address, route.getData());
        return;
      }
      case protocol::Reply::MSI: {
        unsigned vector = reply.getMsi().getVector();
        if (vector >= msiGsis.size()) {
          fence(absl::StrFormat("sent MSI-X vector %u; it has %u", vector, msiGsis.size()));
          return;
        }
        stats.irqChanges.fetch_add(1, std::memory_order_relaxed);
        auto [address, data] = msiMessages[vector];
        if (address != 0) sink.signalMsi(address, data);
        return;
      }
      case protocol::Reply::FAULT_FIRED: {
        auto fired = reply.getFaultFired();
        uint16_t rule = fired.getRule();
        uint64_t event = fired.getEvent();
        uint32_t generation = fired.getGeneration();
        std::unique_lock<std::mutex> lock(faultLock);
        auto plan = std::find_if(faultPlans.begin(), faultPlans.end(),
                                 [&](const FaultRules& p) { return p.generation == generation; });
        if (plan == faultPlans.end()) {
          // Older than every plan kept (the server's firing crossed many changes): stale, not
          // wrong. A plan newer than any given cannot be the server's.
          bool newer = faultPlans.empty() ||
                       static_cast<int32_t>(generation - faultPlans.back().generation) > 0;
          lock.unlock();
          if (newer) {
            fence(
                absl::StrFormat("reported a fault of plan %u, which it was not given", generation));
          }
          return;
        }
        if (rule >= plan->rules.size()) {
          lock.unlock();
          fence(absl::StrFormat("reported fault rule %u, which it was not given", rule));
          return;
        }
        // A server replaying a request after a crash reports its faults again: once is enough.
        if (event <= plan->lastEvent[rule]) return;
        plan->lastEvent[rule] = event;
        auto [name, action] = plan->rules[rule];
        lock.unlock();
        stats.faultsFired.fetch_add(1, std::memory_order_relaxed);
        sink.faultFired(deviceName, name, action, event);
        return;
      }
      default:
        fence("sent a reply of unknown kind");
        return;
    }
  };
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions(handle)) {
    fence(absl::StrCat("sent a malformed reply: ", exception->getDescription().cStr()));
  }
}

void RemoteDevice::drainOutput() {
  std::lock_guard<std::mutex> lock(outputLock);
  for (;;) {
    uint64_t committed = state->header.committedOutput.load(std::memory_order_acquire);
    uint64_t available = committed - outputTaken;
    if (available > OUTPUT_LOG_BYTES) {
      fence("its committed output count is impossible");
      return;
    }
    if (available == 0) {
      // Ask to be told of the next output, then look once more (the server may have committed
      // between our look and the request).
      state->header.outputWanted.store(1, std::memory_order_seq_cst);
      if (state->header.committedOutput.load(std::memory_order_seq_cst) == outputTaken) return;
      continue;
    }
    uint8_t chunk[4096];
    while (available > 0) {
      size_t count = available < sizeof(chunk) ? available : sizeof(chunk);
      for (size_t i = 0; i < count; ++i) {
        chunk[i] = state->outputLog[(outputTaken + i) & (OUTPUT_LOG_BYTES - 1)];
      }
      // If the host side is gone, the bytes have nowhere to go.
      if (outputBesideLog) {
        writeBesideLog(output.get(), chunk, count);
      } else if (output != nullptr) {
        writeAll(output.get(), chunk, count);
      }
      outputTaken += count;
      available -= count;
      state->header.outputTail.store(outputTaken, std::memory_order_release);
    }
  }
}

bool RemoteDevice::stalled(std::chrono::steady_clock::time_point now,
                           std::chrono::milliseconds limit) {
  uint64_t tail =
      mapping.requests() == nullptr ? 0 : static_cast<RingHeader*>(mapping.requests())->tail.load();
  uint64_t pending;
  {
    std::lock_guard<std::mutex> lock(producerLock);
    pending = requests.pending();
  }
  // Work waits while a request is in the ring, or while a vCPU awaits the answer to one the
  // server took: a server stopped between taking a request and answering it leaves the ring
  // empty, and without this the vCPU would wait out its round-trip limit and fence the device.
  bool answerAwaited =
      awaiting.load(std::memory_order_acquire) && !answered.load(std::memory_order_acquire);
  if ((pending == 0 && !answerAwaited) || tail != watchedTail) {
    watchedTail = tail;
    lastProgress = now;
    return false;
  }
  return now - lastProgress > limit;
}

void RemoteDevice::fence(const std::string& reason) {
  if (isFenced.exchange(true, std::memory_order_acq_rel)) return;
  logf("device %s fenced: %s; its reads now return all-ones and writes are dropped", deviceName,
       reason);
  if (fenceAction) fenceAction();
}

}  // namespace bulkhead
