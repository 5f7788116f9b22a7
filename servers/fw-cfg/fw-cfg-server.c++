// The fw_cfg device server. Options (the core fills them): ram=BYTES, cpus=N,
// e820=BASE:LENGTH:TYPE;... (the memory map, numbers in hex), bootorder=TEXT.
#include <cstdlib>
#include <sstream>

#include <kj/debug.h>

#include "servers/fw-cfg/fw-cfg.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

// "etc/e820": packed {u64 address, u64 length, u32 type} entries, little-endian.
std::vector<uint8_t> e820File(const std::string& text) {
  std::vector<uint8_t> bytes;
  std::stringstream entries(text);
  for (std::string entry; std::getline(entries, entry, ';');) {
    unsigned long long base, length;
    unsigned type;
    char extra;
    KJ_REQUIRE(sscanf(entry.c_str(), "%llx:%llx:%x%c", &base, &length, &type, &extra) == 3,
               kj::str("e820 entry '", entry.c_str(), "' is not BASE:LENGTH:TYPE"));
    for (int i = 0; i < 8; ++i) bytes.push_back(base >> (8 * i));
    for (int i = 0; i < 8; ++i) bytes.push_back(length >> (8 * i));
    for (int i = 0; i < 4; ++i) bytes.push_back(type >> (8 * i));
  }
  return bytes;
}

class FwCfgDevice final : public sdk::Device {
 public:
  explicit FwCfgDevice(const sdk::DeviceConfig& config)
      : fwCfg(sdk::numberOption(config, "ram", 64 << 20), sdk::numberOption(config, "cpus", 1),
              files(config)) {
    sdk::requireKnownOptions(config, {"ram", "cpus", "e820", "bootorder"});
  }
  std::vector<sdk::IoRange> ranges() override {
    return {{sdk::Space::PIO, FwCfg::SELECTOR_PORT, 2}};
  }
  uint64_t read(sdk::Space, uint64_t port, unsigned) override { return fwCfg.read(port); }
  void write(sdk::Space, uint64_t port, unsigned size, uint64_t value) override {
    fwCfg.write(port, size, value);
  }
  kj::ArrayPtr<uint8_t> declaredState() override { return sdk::stateBytes(fwCfg.state()); }

 private:
  static std::vector<FwCfg::File> files(const sdk::DeviceConfig& config) {
    std::vector<FwCfg::File> list;
    auto e820 = config.options.find("e820");
    if (e820 != config.options.end()) list.push_back({"etc/e820", e820File(e820->second)});
    auto order = config.options.find("bootorder");
    if (order != config.options.end()) {
      list.push_back(
          {"bootorder", std::vector<uint8_t>(order->second.begin(), order->second.end())});
    }
    return list;
  }
  FwCfg fwCfg;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "fw-cfg", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost&) {
        return kj::heap<bulkhead::FwCfgDevice>(config);
      });
}
