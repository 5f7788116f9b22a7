// The debug console: a port (default 0x402, as QEMU's isa-debugcon and where SeaBIOS writes its
// log) whose writes go to the host through the output log, one byte each. Reads return 0xe9,
// the value by which software (SeaBIOS) recognises the port. Options: iobase=PORT.
#include <kj/debug.h>

#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

constexpr uint64_t DEFAULT_PORT = 0x402;
constexpr uint8_t READBACK = 0xe9;

class Debugcon final : public sdk::Device {
 public:
  Debugcon(const sdk::DeviceConfig& config, sdk::DeviceHost& host)
      : host(host), port(sdk::numberOption(config, "iobase", DEFAULT_PORT)) {
    sdk::requireKnownOptions(config, {"iobase"});
    KJ_REQUIRE(port < 0x10000, "iobase is beyond port 0xffff");
  }
  std::vector<sdk::IoRange> ranges() override { return {{sdk::Space::PIO, port, 1}}; }
  uint64_t read(sdk::Space, uint64_t, unsigned) override { return READBACK; }
  void write(sdk::Space, uint64_t, unsigned, uint64_t value) override {
    uint8_t byte = value;
    host.writeOutput(kj::arrayPtr(&byte, 1));
  }

 private:
  sdk::DeviceHost& host;
  uint64_t port;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "debugcon", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost& host) {
        return kj::heap<bulkhead::Debugcon>(config, host);
      });
}
