// The SDK's server runtime: attaches to the core over RPC, then serves the request ring.
//
// One thread runs everything (the KJ event loop), so a device never sees two calls at once.
// After a batch of requests the loop keeps polling the ring for a short while before it sleeps
// on the eventfd: a guest's next access usually follows within microseconds, and a sleeping
// server would cost a wake-up per access.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/debug.h>

#include "channel.h"
#include "device.capnp.h"
#include "device.h"

namespace bulkhead::sdk {

namespace {

constexpr int CHANNEL_FD = 3;
constexpr uint32_t MAX_FDS_PER_MESSAGE = 8;
constexpr auto SPIN_BEFORE_SLEEP = std::chrono::microseconds(200);
constexpr auto SLICE_BEFORE_YIELD = std::chrono::milliseconds(2);

using Clock = std::chrono::steady_clock;

void signalEventfd(int fd) {
  uint64_t one = 1;
  ssize_t ignored = write(fd, &one, sizeof(one));
  (void)ignored;
}

void drainEventfd(int fd) {
  uint64_t value;
  while (read(fd, &value, sizeof(value)) == sizeof(value)) {
  }
}

class Runtime final : public DeviceHost {
 public:
  Runtime(kj::StringPtr name, kj::AsyncIoContext& io, DeviceFactory factory)
      : name(name), io(io), factory(kj::mv(factory)), tasks(errorHandler) {}

  // Takes the channel's file descriptors (already duplicated, so owned here).
  std::vector<IoRange> start(kj::AutoCloseFd ringFd, uint32_t slots, kj::AutoCloseFd toDeviceFd,
                             kj::AutoCloseFd toCoreFd, DeviceConfig config) {
    KJ_REQUIRE(mapping.map(ringFd.get(), slots), "ring memfd is too small or unmappable");
    toDevice = kj::mv(toDeviceFd);
    toCore = kj::mv(toCoreFd);
    KJ_SYSCALL(fcntl(toDevice.get(), F_SETFL, O_NONBLOCK));
    requests.emplace(mapping.requests(), slots);
    replies.emplace(mapping.replies(), slots);
    device = factory(config, *this);
    for (uint8_t line : device->irqLines()) irqLevels[line] = false;
    observer = kj::heap<kj::UnixEventPort::FdObserver>(io.unixEventPort, toDevice.get(),
                                                       kj::UnixEventPort::FdObserver::OBSERVE_READ);
    tasks.add(serve());
    return device->ranges();
  }

  Device& model() { return *device; }

  void setIrq(uint8_t line, bool level) override {
    auto it = irqLevels.find(line);
    KJ_REQUIRE(it != irqLevels.end(), "device drives an interrupt line it did not declare", line);
    if (it->second == level) return;
    it->second = level;
    pushReply([&](protocol::Reply::Builder reply) {
      auto irq = reply.initIrq();
      irq.setLine(line);
      irq.setLevel(level);
    });
  }

  void requestVmExit(uint8_t status) override {
    pushReply([&](protocol::Reply::Builder reply) { reply.initExitVm().setStatus(status); });
  }

  void watchReadable(int fd, kj::Function<bool()> onReadable) override {
    KJ_SYSCALL(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK));
    auto watcher = kj::heap<kj::UnixEventPort::FdObserver>(
        io.unixEventPort, fd, kj::UnixEventPort::FdObserver::OBSERVE_READ);
    auto& ref = *watcher;
    tasks.add(watchLoop(ref, kj::mv(onReadable)).attach(kj::mv(watcher)));
  }

 private:
  kj::Promise<void> watchLoop(kj::UnixEventPort::FdObserver& watcher,
                              kj::Function<bool()> onReadable) {
    // Edge-triggered: the callback must read until EAGAIN before we wait again.
    bool keepWatching = onReadable();
    flushAndWake();
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
          flushAndWake();
          signalEventfd(toDevice.get());
          return observer->whenBecomesReadable().then([this]() { return serve(); });
        }
        continue;
      }
      if (Clock::now() - lastWork > SPIN_BEFORE_SLEEP) break;
      __builtin_ia32_pause();
    }
    flushAndWake();
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
    uint64_t seq = request.getSeq();
    switch (request.which()) {
      case protocol::Request::READ: {
        auto access = request.getRead();
        uint64_t value = validSize(access.getSize())
                             ? device->read(space(access), access.getAddress(), access.getSize())
                             : ~0ull;
        pushReply([&](protocol::Reply::Builder reply) {
          auto done = reply.initReadDone();
          done.setSeq(seq);
          done.setValue(value);
        });
        return;
      }
      case protocol::Request::WRITE:
      case protocol::Request::WRITE_SYNC: {
        bool sync = request.which() == protocol::Request::WRITE_SYNC;
        auto access = sync ? request.getWriteSync() : request.getWrite();
        if (validSize(access.getSize())) {
          device->write(space(access), access.getAddress(), access.getSize(), access.getValue());
        }
        if (sync) complete(seq);
        return;
      }
      case protocol::Request::FLUSH:
        complete(seq);
        return;
      default:
        KJ_FAIL_REQUIRE("unknown request kind from the core", static_cast<int>(request.which()));
    }
  }

  void complete(uint64_t seq) {
    device->flush();
    pushReply([&](protocol::Reply::Builder reply) { reply.initDone().setSeq(seq); });
  }

  static bool validSize(unsigned size) { return size == 1 || size == 2 || size == 4 || size == 8; }
  static Space space(protocol::Access::Reader access) {
    return access.getSpace() == protocol::Space::MMIO ? Space::MMIO : Space::PIO;
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

  void flushAndWake() { device->flush(); }

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
  ChannelMapping mapping;
  kj::AutoCloseFd toDevice;
  kj::AutoCloseFd toCore;
  std::optional<RingConsumer> requests;
  std::optional<RingProducer> replies;
  kj::Own<Device> device;
  std::map<uint8_t, bool> irqLevels;
  kj::Own<kj::UnixEventPort::FdObserver> observer;
  PoppedMessage slot;
  ErrorHandler errorHandler;
  kj::TaskSet tasks;
};

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
    for (auto backend : params.getBackends()) fds.add(backend.getFd());
    DeviceConfig config;
    for (auto option : params.getOptions()) config.options[option.getKey()] = option.getValue();
    uint32_t slots = channel.getRingSlots();
    return kj::joinPromises(fds.releaseAsArray())
        .then([this, context, slots,
               config = kj::mv(config)](kj::Array<kj::Maybe<int>> received) mutable {
          kj::Vector<kj::AutoCloseFd> owned;
          for (auto& maybeFd : received) {
            KJ_IF_MAYBE (fd, maybeFd) {
              owned.add(kj::AutoCloseFd(fcntl(*fd, F_DUPFD_CLOEXEC, 3)));
            } else {
              KJ_FAIL_REQUIRE("a file descriptor did not arrive");
            }
          }
          for (size_t i = 3; i < owned.size(); ++i) config.backends.push_back(owned[i].get());
          for (size_t i = 3; i < owned.size(); ++i) backends.add(kj::mv(owned[i]));
          std::vector<IoRange> ranges = runtime.start(kj::mv(owned[0]), slots, kj::mv(owned[1]),
                                                      kj::mv(owned[2]), kj::mv(config));
          auto results = context.getResults();
          results.setName(name);
          auto list = results.initRanges(ranges.size());
          for (size_t i = 0; i < ranges.size(); ++i) {
            list[i].setSpace(ranges[i].space == Space::MMIO ? protocol::Space::MMIO
                                                            : protocol::Space::PIO);
            list[i].setBase(ranges[i].base);
            list[i].setSize(ranges[i].size);
            list[i].setSynchronous(ranges[i].synchronous);
          }
          std::vector<uint8_t> lines = runtime.model().irqLines();
          auto irqs = results.initIrqLines(lines.size());
          for (size_t i = 0; i < lines.size(); ++i) irqs.set(i, lines[i]);
        });
  }

 private:
  Runtime& runtime;
  kj::StringPtr name;
  bool attached = false;
  kj::Vector<kj::AutoCloseFd> backends;
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
  KJ_REQUIRE(errno == 0 && end != it->second.c_str() && *end == '\0', "option is not a number", key,
             it->second);
  return value;
}

kj::Promise<void> serveDevice(kj::AsyncIoContext& io, kj::Own<kj::AsyncCapabilityStream> stream,
                              kj::StringPtr name, DeviceFactory factory) {
  auto runtime = kj::heap<Runtime>(name, io, kj::mv(factory));
  auto network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, MAX_FDS_PER_MESSAGE,
                                                     capnp::rpc::twoparty::Side::SERVER);
  auto rpc = kj::heap(capnp::makeRpcServer(*network, kj::heap<DeviceImpl>(*runtime, name)));
  auto disconnected = network->onDisconnect();
  // Attachments are destroyed last to first: the RPC system, the network, the runtime, the stream.
  return disconnected.attach(kj::mv(stream), kj::mv(runtime), kj::mv(network), kj::mv(rpc));
}

int runDeviceServer(kj::StringPtr name, DeviceFactory factory) {
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
  serveDevice(io, kj::mv(stream), name, kj::mv(factory)).wait(io.waitScope);
  return 0;
}

}  // namespace bulkhead::sdk
