// The debug-exit device server. Options: iobase (default 0xf4). Its range is synchronous, so
// the guest's write does not return until the core has begun ending the VM.
#include <kj/debug.h>

#include "servers/debug-exit/debug-exit.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

class DebugExitDevice final : public sdk::Device {
 public:
  DebugExitDevice(const sdk::DeviceConfig& config, sdk::DeviceHost& host)
      : host(host), base(sdk::numberOption(config, "iobase", DebugExit::DEFAULT_PORT)) {
    sdk::requireKnownOptions(config, {"iobase"});
    if (base > 0x10000 - DebugExit::PORTS) {
      KJ_FAIL_REQUIRE(kj::str("iobase ", base, " leaves no room for 4 ports below 0x10000"));
    }
  }

  std::vector<sdk::IoRange> ranges() override {
    return {{sdk::Space::PIO, base, DebugExit::PORTS, /*synchronous=*/true}};
  }

  uint64_t read(sdk::Space, uint64_t, unsigned) override { return ~0ull; }

  void write(sdk::Space, uint64_t, unsigned, uint64_t value) override {
    host.requestVmExit(DebugExit::exitStatus(value));
  }

 private:
  sdk::DeviceHost& host;
  uint64_t base;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "debug-exit", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost& host) {
        return kj::heap<bulkhead::DebugExitDevice>(config, host);
      });
}
