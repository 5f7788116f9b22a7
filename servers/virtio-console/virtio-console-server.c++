// The virtio-console device server. Backend 0 (optional): host input. Output goes to the core
// through the output log (--device virtio-console writes it to the core's standard output).
#include <kj/debug.h>

#include "servers/sdk/device.h"
#include "servers/virtio-console/virtio-console.h"

int main() {
  using namespace bulkhead;
  return sdk::runDeviceServer(
      "virtio-console", [](const sdk::DeviceConfig& config, sdk::DeviceHost& host) {
        sdk::requireKnownOptions(config, {});
        int input = config.backends.empty() ? -1 : config.backends[0];
        return kj::heap<sdk::virtio::VirtioPciDevice>(host, std::make_unique<VirtioConsole>(input));
      });
}
