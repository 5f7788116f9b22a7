// The serial device server: a 16550A UART on the SDK.
//
// Options: iobase (default 0x3f8, COM1), irq (default 4).
// Transmitted bytes go to the SDK's output log, which the core forwards to the host: they reach
// it exactly once even when this server is killed mid-stream. Backend [0], if given, is where
// received bytes come from (a terminal, pipe or socket); bytes read from it but not yet taken
// by the guest are lost if the server dies (at most one 4 KiB buffer).
#include <unistd.h>

#include <string>

#include <kj/debug.h>

#include "servers/sdk/device.h"
#include "servers/serial/uart16550.h"

namespace bulkhead {
namespace {

constexpr size_t INPUT_BUFFER_BYTES = 4096;

class SerialDevice final : public sdk::Device, private Uart16550::Host {
 public:
  SerialDevice(const sdk::DeviceConfig& config, sdk::DeviceHost& host)
      : host(host),
        base(sdk::numberOption(config, "iobase", 0x3f8)),
        irq(sdk::numberOption(config, "irq", 4)),
        uart(*this) {
    sdk::requireKnownOptions(config, {"iobase", "irq"});
    if (base > 0xfff8) KJ_FAIL_REQUIRE(kj::str("iobase ", base, " leaves no room for 8 ports"));
    if (irq >= 16) KJ_FAIL_REQUIRE(kj::str("irq ", irq, " is not an ISA line 0-15"));
    if (!config.backends.empty()) {
      input = config.backends[0];
      host.watchReadable(input, [this]() { return readInput(); });
    }
  }

  std::vector<sdk::IoRange> ranges() override { return {{sdk::Space::PIO, base, 8}}; }
  std::vector<uint8_t> irqLines() override { return {static_cast<uint8_t>(irq)}; }

  uint64_t read(sdk::Space, uint64_t address, unsigned) override {
    uint8_t value = uart.read(address - base);
    if (!pendingInput.empty()) feedPending();
    return value;
  }

  void write(sdk::Space, uint64_t address, unsigned, uint64_t value) override {
    uart.write(address - base, value);
  }

  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(uart.mutableState()); }
  void stateRestored() override { uart.repairState(); }

 private:
  void transmit(uint8_t byte) override { host.writeOutput(kj::arrayPtr(&byte, 1)); }

  void setIrq(bool level) override { host.setIrq(irq, level); }

  bool readInput() {
    while (pendingInput.size() < INPUT_BUFFER_BYTES) {
      char buffer[512];
      ssize_t n = ::read(input, buffer, sizeof(buffer));
      if (n == 0) {  // end of input: what came before it still goes to the guest
        feedPending();
        return false;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        break;  // EAGAIN: wait for the next edge
      }
      pendingInput.append(buffer, n);
    }
    feedPending();
    return true;
  }

  void feedPending() {
    size_t taken = uart.receive(
        kj::arrayPtr(reinterpret_cast<const uint8_t*>(pendingInput.data()), pendingInput.size()));
    pendingInput.erase(0, taken);
    // TODO(perf): input beyond INPUT_BUFFER_BYTES waits for the next readable edge.
  }

  sdk::DeviceHost& host;
  uint64_t base;
  uint64_t irq;
  Uart16550 uart;
  int input = -1;
  std::string pendingInput;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "serial", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost& host) {
        return kj::heap<bulkhead::SerialDevice>(config, host);
      });
}
