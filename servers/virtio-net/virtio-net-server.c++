// The virtio-net device server. Backend 0: the frame descriptor the core opened (a connected
// SOCK_SEQPACKET socket or a tap device), or with listen=on a listening SOCK_SEQPACKET socket.
// Options: mac=XX:XX:XX:XX:XX:XX (default 52:54:00:12:34:56), listen=on|off.
#include <cstdio>

#include <kj/debug.h>

#include "servers/sdk/device.h"
#include "servers/virtio-net/virtio-net.h"

int main() {
  using namespace bulkhead;
  sdk::SandboxNeeds needs;
  needs.accept = true;
  return sdk::runDeviceServer(
      "virtio-net",
      [](const sdk::DeviceConfig& config, sdk::DeviceHost& host) {
        sdk::requireKnownOptions(config, {"mac", "listen"});
        KJ_REQUIRE(config.backends.size() == 1, "virtio-net needs its backend as backend 0");
        std::array<uint8_t, 6> mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
        auto given = config.options.find("mac");
        if (given != config.options.end()) {
          unsigned b[6];
          char extra;
          bool parsed = sscanf(given->second.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1],
                               &b[2], &b[3], &b[4], &b[5], &extra) == 6;
          if (!parsed) {
            KJ_FAIL_REQUIRE(kj::str("mac=", given->second.c_str(),
                                    " is not six hex bytes like 52:54:00:12:34:56"));
          }
          for (int i = 0; i < 6; ++i) mac[i] = b[i];
        }
        auto listen = config.options.find("listen");
        bool listening = listen != config.options.end() && listen->second == "on";
        return kj::heap<sdk::virtio::VirtioPciDevice>(
            host, std::make_unique<VirtioNet>(config.backends[0], listening, mac));
      },
      needs);
}
