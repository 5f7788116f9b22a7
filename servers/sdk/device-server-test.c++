// The SDK's server side in process: attach over a Cap'n Proto capability pipe with file
// descriptors passed (ring memfd, eventfds, a backend pipe), then requests through the ring.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <memory>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "servers/sdk/channel.h"
#include "servers/sdk/device.h"
#include "servers/sdk/fd-capability.h"

namespace bulkhead {
namespace {

// Echoes writes to its backend and answers reads with address + 1; raises line 5 on a write.
class EchoDevice final : public sdk::Device {
 public:
  EchoDevice(const sdk::DeviceConfig& config, sdk::DeviceHost& host)
      : host(host), output(config.backends.at(0)), base(sdk::numberOption(config, "base", 0)) {}
  std::vector<sdk::IoRange> ranges() override { return {{sdk::Space::PIO, base, 4, true}}; }
  std::vector<uint8_t> irqLines() override { return {5}; }
  uint64_t read(sdk::Space, uint64_t address, unsigned) override { return address + 1; }
  void write(sdk::Space, uint64_t, unsigned, uint64_t value) override {
    char byte = static_cast<char>(value);
    EXPECT_EQ(::write(output, &byte, 1), 1);
    host.setIrq(5, true);
  }

 private:
  sdk::DeviceHost& host;
  int output;
  uint64_t base;
};

class DeviceServerTest : public ::testing::Test {
 protected:
  DeviceServerTest()
      : context(std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo())), io(*context) {}

  // Runs the event loop until `done` or a second passes.
  template <typename Predicate>
  bool pumpUntil(Predicate done) {
    for (int i = 0; i < 1000 && !done(); ++i) {
      io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
    }
    return done();
  }

  std::unique_ptr<kj::AsyncIoContext> context;
  kj::AsyncIoContext& io;
};

TEST_F(DeviceServerTest, AttachPassesDescriptorsAndServesTheRing) {
  auto pipe = io.provider->newCapabilityPipe();
  auto serving = sdk::serveDevice(io, kj::mv(pipe.ends[0]), "echo",
                                  [](const sdk::DeviceConfig& config, sdk::DeviceHost& host) {
                                    return kj::heap<EchoDevice>(config, host);
                                  })
                     .eagerlyEvaluate(nullptr);

  uint32_t slots = 16;
  int ringFd = memfd_create("test-ring", MFD_CLOEXEC);
  ASSERT_GE(ringFd, 0);
  kj::AutoCloseFd ring(ringFd);
  ASSERT_EQ(ftruncate(ringFd, channelBytes(slots)), 0);
  ChannelMapping mapping;
  ASSERT_TRUE(mapping.map(ringFd, slots));
  ringInit(mapping.requests(), slots, 0);
  ringInit(mapping.replies(), slots, 0);
  kj::AutoCloseFd toDevice(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  kj::AutoCloseFd toCore(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int backend[2];
  ASSERT_EQ(pipe2(backend, O_CLOEXEC | O_NONBLOCK), 0);
  kj::AutoCloseFd backendRead(backend[0]), backendWrite(backend[1]);

  capnp::TwoPartyClient client(*pipe.ends[1], 8);
  auto device = client.bootstrap().castAs<protocol::Device>();
  auto request = device.attachRequest();
  auto channel = request.initChannel();
  channel.setRing(kj::heap<FdCapability>(ringFd));
  channel.setRingSlots(slots);
  channel.setToDevice(kj::heap<FdCapability>(toDevice.get()));
  channel.setToCore(kj::heap<FdCapability>(toCore.get()));
  auto options = request.initOptions(1);
  options[0].setKey("base");
  options[0].setValue("0x60");
  request.initBackends(1).set(0, kj::heap<FdCapability>(backendWrite.get()));
  auto response = request.send().wait(io.waitScope);

  EXPECT_EQ(kj::StringPtr(response.getName()), "echo");
  ASSERT_EQ(response.getRanges().size(), 1u);
  EXPECT_EQ(response.getRanges()[0].getBase(), 0x60u);
  EXPECT_TRUE(response.getRanges()[0].getSynchronous());
  ASSERT_EQ(response.getIrqLines().size(), 1u);
  EXPECT_EQ(response.getIrqLines()[0], 5);

  // A read and a synchronous write through the ring; the server is asleep, so wake it.
  RingProducer requests(mapping.requests(), slots);
  RingConsumer replies(mapping.replies(), slots);
  ASSERT_EQ(pushMessage<protocol::Request>(requests,
                                           [](protocol::Request::Builder r) {
                                             r.setSeq(0);
                                             auto access = r.initRead();
                                             access.setAddress(0x61);
                                             access.setSize(1);
                                           }),
            RingStatus::OK);
  ASSERT_EQ(pushMessage<protocol::Request>(requests,
                                           [](protocol::Request::Builder r) {
                                             r.setSeq(1);
                                             auto access = r.initWriteSync();
                                             access.setAddress(0x60);
                                             access.setSize(1);
                                             access.setValue('!');
                                           }),
            RingStatus::OK);
  uint64_t one = 1;
  ASSERT_EQ(write(toDevice.get(), &one, sizeof(one)), 8);

  std::vector<std::string> seen;
  PoppedMessage message;
  ASSERT_TRUE(pumpUntil([&]() {
    while (popMessage(replies, message) == RingStatus::OK) {
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
          seen.push_back("irq " + std::to_string(reply.getIrq().getLine()));
          break;
        default:
          seen.push_back("other");
      }
    }
    return seen.size() >= 3;
  }));
  EXPECT_EQ(seen, (std::vector<std::string>{"read 0=98", "irq 5", "done 1"}));
  char byte = 0;
  EXPECT_EQ(read(backendRead.get(), &byte, 1), 1);
  EXPECT_EQ(byte, '!');
}

}  // namespace
}  // namespace bulkhead
