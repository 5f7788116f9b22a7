// The runtime's serving half: start (map the channel, enter the sandbox, build the device,
// resume), the DeviceHost calls a device makes, and the serve loop. After a batch of requests
// the loop keeps polling the ring for a short while before it sleeps on the eventfd: a guest's
// next access usually follows within microseconds, and a sleeping server would cost a wake-up
// per access.
#include "runtime.h"

#include <algorithm>
#include <cstring>

namespace bulkhead::sdk {

std::vector<IoRange> Runtime::start(kj::AutoCloseFd ringFd, uint32_t slots,
                                    kj::AutoCloseFd toDeviceFd, kj::AutoCloseFd toCoreFd,
                                    kj::AutoCloseFd stateFd, DeviceConfig config,
                                    protocol::FaultPlan::Reader plan) {
  faults.load(plan, "");
  faultGeneration = plan.getGeneration();
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
  uint64_t startSeq = saved != nullptr ? saved->lastSeq + 1
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

void Runtime::setIrq(uint8_t line, bool level) {
  KJ_REQUIRE(line < ISA_LINES && (declaredLines & (1u << line)),
             "device drives an interrupt line it did not declare", line);
  bool current = irqBits & (1u << line);
  if (current == level) return;
  irqBits ^= 1u << line;
  driveLine(line, level);
}

void Runtime::setPciInterrupt(bool level) {
  KJ_REQUIRE(pciInterrupt, "device drives a PCI interrupt it did not declare");
  if (pciLevel == level) return;
  pciLevel = level;
  driveLine(PCI_LINE, level);
}

void Runtime::routeMsi(unsigned vector, uint64_t address, uint32_t data) {
  KJ_REQUIRE(vector < msixVectors, "device routes an MSI-X vector it did not declare", vector);
  pushReply([&](protocol::Reply::Builder reply) {
    auto route = reply.initMsiRoute();
    route.setVector(vector);
    route.setAddress(address);
    route.setData(data);
  });
}

void Runtime::signalMsi(unsigned vector) {
  KJ_REQUIRE(vector < msixVectors, "device signals an MSI-X vector it did not declare", vector);
  // Like a line change, a message a request sends waits for the request's commit.
  if (inRequest) {
    pendingMsis.push_back(vector);
  } else {
    pushMsi(vector);
  }
}

void Runtime::stateChanged() {
  // Inside a request the request's own commit covers it.
  if (inRequest) return;
  commit(state->committed()->lastSeq);
  notifyOutput(/*force=*/false);  // output written outside a request is committed now
}

void Runtime::wire(std::vector<kj::AutoCloseFd> bells, kj::AutoCloseFd interrupt,
                   kj::AutoCloseFd resample, std::vector<kj::AutoCloseFd> vectors) {
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

void Runtime::driveLine(uint8_t line, bool level) {
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

void Runtime::requestVmExit(uint8_t status) {
  if (inRequest) {
    exitRequested = status;
    return;
  }
  pushReply([&](protocol::Reply::Builder reply) { reply.initExitVm().setStatus(status); });
}

void Runtime::writeOutput(kj::ArrayPtr<const uint8_t> bytes) {
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

void Runtime::after(std::chrono::microseconds delay, kj::Function<void()> callback) {
  tasks.add(io.provider->getTimer()
                .afterDelay(delay.count() * kj::MICROSECONDS)
                .then([this, callback = kj::mv(callback)]() mutable {
                  callback();
                  device->flush();
                }));
}

void Runtime::watchReadable(int fd, kj::Function<bool()> onReadable) {
  KJ_SYSCALL(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK));
  auto watcher = kj::heap<kj::UnixEventPort::FdObserver>(
      io.unixEventPort, fd, kj::UnixEventPort::FdObserver::OBSERVE_READ);
  auto& ref = *watcher;
  // From the event loop, not from here: the caller may be the device's constructor.
  tasks.add(kj::evalLater([this, &ref, onReadable = kj::mv(onReadable)]() mutable {
              return watchLoop(ref, kj::mv(onReadable));
            }).attach(kj::mv(watcher)));
}

kj::Promise<void> Runtime::serve() {
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

bool Runtime::drainRequests() {
  bool any = false;
  for (;;) {
    RingStatus status = popMessage(*requests, slot);
    if (status == RingStatus::EMPTY) return any;
    KJ_REQUIRE(status == RingStatus::OK, "the core's request ring is corrupt");
    any = true;
    handle(slot);
  }
}

void Runtime::handle(const PoppedMessage& message) {
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

void Runtime::pushAnswer() {
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

void Runtime::deliverIrq(uint8_t line, bool level) {
  if (inRequest) {
    pendingIrqs.emplace_back(line, level);
  } else {
    pushIrq(line, level);
  }
}

void Runtime::publishEffects() {
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

void Runtime::pushMsi(unsigned vector) {
  if (vector < vectorFds.size()) {
    signalEventfd(vectorFds[vector].get());
    return;
  }
  pushReply([&](protocol::Reply::Builder reply) { reply.initMsi().setVector(vector); });
}

void Runtime::pushIrq(uint8_t line, bool level) {
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

void Runtime::notifyOutput(bool force) {
  StateRegionHeader& header = stateMapping->header();
  if (!force && header.committedOutput.load(std::memory_order_relaxed) ==
                    header.outputTail.load(std::memory_order_relaxed)) {
    return;
  }
  if (force || header.outputWanted.exchange(0, std::memory_order_acq_rel) != 0) {
    pushReply([](protocol::Reply::Builder reply) { reply.setOutput(); });
  }
}

}  // namespace bulkhead::sdk
