// The SDK's RPC adapter and entry points: the Device capability the core attaches through
// (protocols/device.capnp), which hands the channel's descriptors to the Runtime (runtime.h),
// and runDeviceServer/serveDevice, which a server's main() and the tests call.
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <capnp/rpc-twoparty.h>

#include "runtime.h"

namespace bulkhead::sdk {

namespace {

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
    // Until now it may have been a spare, waiting as "bulkhead-spare"; now it is this kind.
    prctl(PR_SET_NAME, ("bulkhead-" + std::string(name.cStr())).c_str());
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
  // A server waiting for its first attach may be the core's spare (docs/recovery.md): `pkill
  // bulkhead-serial` must find the serving one only.
  prctl(PR_SET_NAME, "bulkhead-spare");
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
