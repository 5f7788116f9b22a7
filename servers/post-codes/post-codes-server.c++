// bulkhead-post-codes: serves PostCodes (post-codes.h) on the device channel. Options:
// iobase=PORT (default 0x80). The core opens file=PATH and takes the output from the output
// log, so each line reaches the file exactly once, across restarts of this server too.
#include <kj/debug.h>

#include "servers/post-codes/post-codes.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

class PostCodesServer final : public sdk::Device {
 public:
  PostCodesServer(const sdk::DeviceConfig& config, sdk::DeviceHost& host)
      : host(host), port(sdk::numberOption(config, "iobase", PostCodes::DEFAULT_PORT)) {
    sdk::requireKnownOptions(config, {"iobase"});
    KJ_REQUIRE(port < 0x10000, "iobase is beyond port 0xffff");
  }

  std::vector<sdk::IoRange> ranges() override { return {{sdk::Space::PIO, port, 1}}; }
  uint64_t read(sdk::Space, uint64_t, unsigned) override { return codes.read(); }
  void write(sdk::Space, uint64_t, unsigned, uint64_t value) override {
    std::string line = codes.write(static_cast<uint8_t>(value));
    host.writeOutput(kj::arrayPtr(reinterpret_cast<const uint8_t*>(line.data()), line.size()));
  }
  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(codes.state); }

 private:
  sdk::DeviceHost& host;
  uint64_t port;
  PostCodes codes;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "post-codes", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost& host) {
        return kj::heap<bulkhead::PostCodesServer>(config, host);
      });
}
