// The virtio-blk device server. Backend 0: the disk image, opened by the core (read-only when
// the disk is). Options: readonly=on|off, serial=TEXT (what GET_ID answers, at most 20 bytes).
#include <sys/stat.h>

#include <kj/debug.h>

#include "servers/sdk/device.h"
#include "servers/virtio-blk/virtio-blk.h"

int main() {
  using namespace bulkhead;
  sdk::SandboxNeeds needs;
  needs.ioUring = true;
  return sdk::runDeviceServer(
      "virtio-blk",
      [](const sdk::DeviceConfig& config, sdk::DeviceHost& host) {
        sdk::requireKnownOptions(config, {"readonly", "serial"});
        KJ_REQUIRE(config.backends.size() == 1, "virtio-blk needs its disk image as backend 0");
        auto readonly = config.options.find("readonly");
        bool readOnly = readonly != config.options.end() && readonly->second != "off";
        auto serial = config.options.find("serial");
        struct stat info;
        KJ_SYSCALL(fstat(config.backends[0], &info));
        KJ_REQUIRE(info.st_size >= static_cast<off_t>(VirtioBlk::SECTOR),
                   "the disk image is smaller than one 512-byte sector");
        return kj::heap<sdk::virtio::VirtioPciDevice>(
            host, std::make_unique<VirtioBlk>(
                      makeUringBackend(config.backends[0]), info.st_size, readOnly,
                      serial != config.options.end() ? serial->second : "bulkhead"));
      },
      needs);
}
