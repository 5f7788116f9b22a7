// The SDK's server side in process: attach over a Cap'n Proto capability pipe with file
// descriptors passed (ring memfd, eventfds, state region, a backend pipe), requests through the
// ring, and a second incarnation resuming from the first one's last commit.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <memory>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "channel/channel.h"
#include "channel/fd-capability.h"
#include "channel/state-region.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

// Reads return address + the number of writes so far; a write echoes its byte to the backend
// and to the output log, and raises line 5. The write count is its declared state.
class EchoDevice final : public sdk::Device {
 public:
  EchoDevice(const sdk::DeviceConfig& config, sdk::DeviceHost& host)
      : host(host), backend(config.backends.at(0)), base(sdk::numberOption(config, "base", 0)) {}
  std::vector<sdk::IoRange> ranges() override { return {{sdk::Space::PIO, base, 4, true}}; }
  std::vector<uint8_t> irqLines() override { return {5}; }
  uint64_t read(sdk::Space, uint64_t address, unsigned) override { return address + state.writes; }
  void write(sdk::Space, uint64_t, unsigned, uint64_t value) override {
    uint8_t byte = static_cast<uint8_t>(value);
    EXPECT_EQ(::write(backend, &byte, 1), 1);
    host.writeOutput(kj::arrayPtr(&byte, 1));
    host.setIrq(5, true);
    ++state.writes;
  }
  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(state); }

 private:
  struct State {
    uint32_t writes = 0;
  };
  sdk::DeviceHost& host;
  int backend;
  uint64_t base;
  State state;
};

// The core's side of one channel, and the server incarnations attached to it.
class Harness {
 public:
  static constexpr uint32_t SLOTS = 16;
  using Attached = capnp::Response<protocol::Device::AttachResults>;

  Harness() : context(std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo())), io(*context) {}
  ~Harness() noexcept(false) { munmap(stateRegion, stateRegionBytes()); }

  void setUp() {
    ring = kj::AutoCloseFd(memfd_create("test-ring", MFD_CLOEXEC));
    ASSERT_EQ(ftruncate(ring.get(), channelBytes(SLOTS)), 0);
    ASSERT_TRUE(mapping.map(ring.get(), SLOTS));
    ringInit(mapping.requests(), SLOTS, 0);
    ringInit(mapping.replies(), SLOTS, 0);
    state = kj::AutoCloseFd(memfd_create("test-state", MFD_CLOEXEC));
    ASSERT_EQ(ftruncate(state.get(), stateRegionBytes()), 0);
    stateRegion = static_cast<StateRegionLayout*>(
        mmap(nullptr, stateRegionBytes(), PROT_READ | PROT_WRITE, MAP_SHARED, state.get(), 0));
    ASSERT_NE(stateRegion, MAP_FAILED);
    toDevice = kj::AutoCloseFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    toCore = kj::AutoCloseFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int backend[2];
    ASSERT_EQ(pipe2(backend, O_CLOEXEC | O_NONBLOCK), 0);
    backendRead = kj::AutoCloseFd(backend[0]);
    backendWrite = kj::AutoCloseFd(backend[1]);
    requests.emplace(mapping.requests(), SLOTS);
    replies.emplace(mapping.replies(), SLOTS);
  }
  // Starts an incarnation of the echo server and attaches it.
  std::pair<kj::Promise<void>, Attached> startServer() {
    auto pipe = io.provider->newCapabilityPipe();
    auto serving = sdk::serveDevice(
                       io, kj::mv(pipe.ends[0]), "echo",
                       [](const sdk::DeviceConfig& config, sdk::DeviceHost& host) {
                         return kj::heap<EchoDevice>(config, host);
                       },
                       /*sandboxed=*/false)
                       .eagerlyEvaluate(nullptr);
    clientStream = kj::mv(pipe.ends[1]);
    client = std::make_unique<capnp::TwoPartyClient>(*clientStream, 8);
    auto device = client->bootstrap().castAs<protocol::Device>();
    auto request = device.attachRequest();
    auto channel = request.initChannel();
    channel.setRing(kj::heap<FdCapability>(ring.get()));
    channel.setRingSlots(SLOTS);
    channel.setToDevice(kj::heap<FdCapability>(toDevice.get()));
    channel.setToCore(kj::heap<FdCapability>(toCore.get()));
    channel.setState(kj::heap<FdCapability>(state.get()));
    auto options = request.initOptions(1);
    options[0].setKey("base");
    options[0].setValue("0x60");
    request.initBackends(1).set(0, kj::heap<FdCapability>(backendWrite.get()));
    auto response = request.send().wait(io.waitScope);
    return {kj::mv(serving), kj::mv(response)};
  }

  void post(uint64_t seq, bool read, uint8_t value) {
    ASSERT_EQ(pushMessage<protocol::Request>(*requests,
                                             [&](protocol::Request::Builder r) {
                                               r.setSeq(seq);
                                               auto access =
                                                   read ? r.initRead() : r.initWriteSync();
                                               access.setAddress(0x61);
                                               access.setSize(1);
                                               access.setValue(value);
                                             }),
              RingStatus::OK);
    uint64_t one = 1;
    ASSERT_EQ(write(toDevice.get(), &one, sizeof(one)), 8);
  }

  // Runs the event loop until `count` replies arrived (or a second passed); returns them.
  std::vector<std::string> collect(size_t count) {
    std::vector<std::string> seen;
    PoppedMessage message;
    for (int i = 0; i < 1000 && seen.size() < count; ++i) {
      io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
      while (popMessage(*replies, message) == RingStatus::OK) {
        capnp::FlatArrayMessageReader reader(message.payload(), channelReaderOptions());
        auto reply = reader.getRoot<protocol::Reply>();
        switch (reply.which()) {
          case protocol::Reply::READ_DONE:
            seen.push_back("read " + std::to_string(reply.getReadDone().getSeq()) + "=" +
                           std::to_string(reply.getReadDone().getValue()));
            break;
          case protocol::Reply::DONE:
            seen.push_back("done " + std::to_string(reply.getDone().getSeq()));
            break;
          case protocol::Reply::IRQ:
            seen.push_back("irq " + std::to_string(reply.getIrq().getLine()) + "=" +
                           std::to_string(reply.getIrq().getLevel()));
            break;
          case protocol::Reply::OUTPUT:
            break;  // a notification, not counted
          default:
            seen.push_back("other");
        }
      }
    }
    return seen;
  }

  std::string committedOutput() {
    uint64_t end = stateRegion->header.committedOutput.load();
    return std::string(reinterpret_cast<char*>(stateRegion->outputLog), end);
  }

  std::unique_ptr<kj::AsyncIoContext> context;
  kj::AsyncIoContext& io;
  kj::AutoCloseFd ring, state, toDevice, toCore, backendRead, backendWrite;
  ChannelMapping mapping;
  StateRegionLayout* stateRegion = nullptr;
  std::optional<RingProducer> requests;
  std::optional<RingConsumer> replies;
  kj::Own<kj::AsyncCapabilityStream> clientStream;
  std::unique_ptr<capnp::TwoPartyClient> client;
};

TEST(DeviceServer, AttachPassesDescriptorsAndServesTheRing) {
  Harness h;
  h.setUp();
  auto [serving, response] = h.startServer();
  EXPECT_EQ(kj::StringPtr(response.getName()), "echo");
  ASSERT_EQ(response.getRanges().size(), 1u);
  EXPECT_EQ(response.getRanges()[0].getBase(), 0x60u);
  EXPECT_TRUE(response.getRanges()[0].getSynchronous());
  ASSERT_EQ(response.getIrqLines().size(), 1u);
  EXPECT_EQ(response.getIrqLines()[0], 5);

  h.post(0, /*read=*/true, 0);
  h.post(1, /*read=*/false, '!');
  EXPECT_EQ(h.collect(3), (std::vector<std::string>{"read 0=97", "irq 5=1", "done 1"}));
  char byte = 0;
  EXPECT_EQ(read(h.backendRead.get(), &byte, 1), 1);
  EXPECT_EQ(byte, '!');
  EXPECT_EQ(h.committedOutput(), "!");
}

TEST(DeviceServer, ARestartedServerResumesAfterTheLastCommit) {
  Harness h;
  h.setUp();
  {
    auto [serving, response] = h.startServer();
    h.post(0, /*read=*/false, 'a');
    h.post(1, /*read=*/false, 'b');
    EXPECT_EQ(h.collect(3), (std::vector<std::string>{"irq 5=1", "done 0", "done 1"}));
    h.client = nullptr;  // the first incarnation goes away
    h.clientStream = nullptr;
  }
  // A request posted while no server runs waits in the ring.
  h.post(2, /*read=*/true, 0);
  auto [serving, response] = h.startServer();
  // The new incarnation repeats its predecessor's last answer and interrupt level, then serves
  // the waiting read with the state it restored: two writes so far.
  EXPECT_EQ(h.collect(3), (std::vector<std::string>{"done 1", "irq 5=1", "read 2=99"}));
  EXPECT_EQ(h.committedOutput(), "ab");
}

}  // namespace
}  // namespace bulkhead
