// QEMU's firmware configuration interface, port form (docs/specs/fw_cfg in QEMU's tree): a 16-bit
// selector written to 0x510 chooses an item, whose bytes are then read one at a time from 0x511.
//
// Contract: items signature ("QEMU"), ID (1: the traditional interface, no DMA), RAM size,
// number of CPUs (and the maximum), and the file directory with the files the core gives (here
// "etc/e820", the memory map, and "bootorder" when set). Selecting an item restarts it at byte
// 0; reads past its end, or of an unknown item, return 0. Writes to items are ignored (the
// legacy write path is deprecated). Enough for SeaBIOS to take the memory map from the VMM.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bulkhead {

class FwCfg {
 public:
  static constexpr uint16_t SELECTOR_PORT = 0x510;
  static constexpr uint16_t DATA_PORT = 0x511;
  static constexpr uint16_t FILE_FIRST = 0x20;

  struct File {
    std::string name;  // at most 55 characters
    std::vector<uint8_t> bytes;
  };

  FwCfg(uint64_t ramBytes, uint16_t cpus, std::vector<File> files);

  uint8_t read(uint16_t port);
  void write(uint16_t port, unsigned size, uint16_t value);

  struct State {
    uint16_t selector;
    uint32_t offset;
  };
  State& state() { return s; }

 private:
  std::map<uint16_t, std::vector<uint8_t>> items;
  State s{};
};

}  // namespace bulkhead
