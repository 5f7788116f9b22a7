// The i8042 device server. Pulsing the reset line ends the VM (bulkhead does not reboot a
// guest; QEMU's -no-reboot does the same), so the core starts it with the right to end the VM.
#include <kj/debug.h>

#include "servers/i8042/i8042.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

class I8042Device final : public sdk::Device {
 public:
  explicit I8042Device(sdk::DeviceHost& host)
      : controller([&host](bool level) { host.setIrq(I8042::IRQ, level); },
                   [&host]() { host.requestVmExit(0); }) {}
  std::vector<sdk::IoRange> ranges() override {
    return {{sdk::Space::PIO, I8042::DATA_PORT, 1}, {sdk::Space::PIO, I8042::STATUS_PORT, 1}};
  }
  std::vector<uint8_t> irqLines() override { return {I8042::IRQ}; }
  uint64_t read(sdk::Space, uint64_t port, unsigned) override { return controller.read(port); }
  void write(sdk::Space, uint64_t port, unsigned, uint64_t value) override {
    controller.write(port, value);
  }
  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(controller.state()); }

 private:
  I8042 controller;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "i8042", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost& host) {
        bulkhead::sdk::requireKnownOptions(config, {});
        return kj::heap<bulkhead::I8042Device>(host);
      });
}
