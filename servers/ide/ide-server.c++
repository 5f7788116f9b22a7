// The IDE device server: the primary channel's master disk, at the legacy ports, behind a PCI IDE
// controller function. Backend 0: the disk image, opened by the core. Options: readonly=on|off.
// Interrupts on IRQ 14. No bus-master DMA (PIO only).
#include <sys/stat.h>
#include <unistd.h>

#include <kj/debug.h>

#include "servers/ide/ata.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

constexpr uint8_t IRQ = 14;

class IdeDevice final : public sdk::Device {
 public:
  IdeDevice(const sdk::DeviceConfig& config, sdk::DeviceHost& host)
      : fd(config.backends.at(0)),
        disk(sectorsOf(fd), optionOn(config, "readonly"), storage(),
             [&host](bool level) { host.setIrq(IRQ, level); }) {
    sdk::requireKnownOptions(config, {"readonly"});
  }

  std::vector<sdk::IoRange> ranges() override {
    return {{sdk::Space::PIO, AtaDisk::COMMAND_BASE, 8},
            {sdk::Space::PIO, AtaDisk::CONTROL_PORT, 1}};
  }
  std::vector<uint8_t> irqLines() override { return {IRQ}; }
  // Also a PCI function, as a PC's IDE controller is (PIIX3's IDC IDs, legacy-mode programming
  // interface, no BARs): BIOSes such as SeaBIOS look for ATA controllers on the PCI bus.
  std::optional<sdk::PciFunction> pciFunction() override {
    sdk::PciFunction identity;
    identity.vendorId = 0x8086;
    identity.deviceId = 0x7010;
    identity.classCode = 0x010180;  // IDE, legacy mode on both channels, bus-master capable
    return identity;
  }
  uint64_t read(sdk::Space, uint64_t port, unsigned size) override { return disk.read(port, size); }
  void write(sdk::Space, uint64_t port, unsigned size, uint64_t value) override {
    disk.write(port, size, value);
  }
  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(disk.state()); }

 private:
  static uint64_t sectorsOf(int fd) {
    struct stat info;
    KJ_SYSCALL(fstat(fd, &info));
    KJ_REQUIRE(info.st_size >= static_cast<off_t>(AtaDisk::SECTOR),
               "the disk image is smaller than one sector");
    return info.st_size / AtaDisk::SECTOR;
  }
  static bool optionOn(const sdk::DeviceConfig& config, const char* key) {
    auto it = config.options.find(key);
    return it != config.options.end() && it->second != "off";
  }
  AtaDisk::Storage storage() {
    return {[this](uint64_t lba, uint8_t* sector) {
              return pread(fd, sector, AtaDisk::SECTOR, lba * AtaDisk::SECTOR) ==
                     static_cast<ssize_t>(AtaDisk::SECTOR);
            },
            [this](uint64_t lba, const uint8_t* sector) {
              return pwrite(fd, sector, AtaDisk::SECTOR, lba * AtaDisk::SECTOR) ==
                     static_cast<ssize_t>(AtaDisk::SECTOR);
            },
            [this]() { return fdatasync(fd) == 0; }};
  }

  int fd;
  AtaDisk disk;
};

}  // namespace
}  // namespace bulkhead

int main() {
  using namespace bulkhead;
  sdk::SandboxNeeds needs;
  needs.fileIo = true;
  return sdk::runDeviceServer(
      "ide",
      [](const sdk::DeviceConfig& config, sdk::DeviceHost& host) {
        KJ_REQUIRE(config.backends.size() == 1, "ide needs its disk image as backend 0");
        return kj::heap<IdeDevice>(config, host);
      },
      needs);
}
