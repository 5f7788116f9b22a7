// The virtio-rng device server. Options: seed=N (replayable bytes instead of the host's).
#include <kj/debug.h>

#include "servers/sdk/device.h"
#include "servers/virtio-rng/virtio-rng.h"

int main() {
  using namespace bulkhead;
  return sdk::runDeviceServer(
      "virtio-rng", [](const sdk::DeviceConfig& config, sdk::DeviceHost& host) {
        sdk::requireKnownOptions(config, {"seed"});
        std::optional<uint64_t> seed;
        if (config.options.count("seed")) seed = sdk::numberOption(config, "seed", 0);
        return kj::heap<sdk::virtio::VirtioPciDevice>(host, std::make_unique<VirtioRng>(seed));
      });
}
