// The CMOS/RTC device server. Options (the core fills them): low=BYTES (RAM below the PCI hole),
// high=BYTES (RAM above 4 GiB), cpus=N, and time=SECONDS (since 1970, UTC): a clock that stays
// at that time instead of the host's (the core's --deterministic: the same run every time).
#include <kj/debug.h>

#include "servers/cmos/cmos.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

class CmosDevice final : public sdk::Device {
 public:
  CmosDevice(const sdk::DeviceConfig& config)
      : cmos(sdk::numberOption(config, "low", 64 << 20), sdk::numberOption(config, "high", 0),
             sdk::numberOption(config, "cpus", 1)) {
    sdk::requireKnownOptions(config, {"low", "high", "cpus", "time"});
    if (config.options.contains("time")) {
      time_t fixed = static_cast<time_t>(sdk::numberOption(config, "time", 0));
      cmos.setClock([fixed] { return fixed; });
    }
  }
  std::vector<sdk::IoRange> ranges() override { return {{sdk::Space::PIO, Cmos::INDEX_PORT, 2}}; }
  uint64_t read(sdk::Space, uint64_t port, unsigned) override { return cmos.read(port); }
  void write(sdk::Space, uint64_t port, unsigned, uint64_t value) override {
    cmos.write(port, value);
  }
  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(cmos.state()); }

 private:
  Cmos cmos;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "cmos", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost&) {
        return kj::heap<bulkhead::CmosDevice>(config);
      });
}
