#include "servers/fw-cfg/fw-cfg.h"

#include <cstring>

namespace bulkhead {

namespace {

enum Item : uint16_t {
  SIGNATURE = 0x00,
  ID = 0x01,
  RAM_SIZE = 0x03,
  NB_CPUS = 0x05,
  MAX_CPUS = 0x0f,
  FILE_DIR = 0x19,
};
constexpr size_t NAME_BYTES = 56;

std::vector<uint8_t> little(uint64_t value, size_t size) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = value >> (8 * i);
  return bytes;
}

void appendBig(std::vector<uint8_t>& bytes, uint64_t value, size_t size) {
  for (size_t i = 0; i < size; ++i) bytes.push_back(value >> (8 * (size - 1 - i)));
}

}  // namespace

FwCfg::FwCfg(uint64_t ramBytes, uint16_t cpus, std::vector<File> files) {
  items[SIGNATURE] = {'Q', 'E', 'M', 'U'};
  items[ID] = little(1, 4);
  items[RAM_SIZE] = little(ramBytes, 8);
  items[NB_CPUS] = little(cpus, 2);
  items[MAX_CPUS] = little(cpus, 2);
  std::vector<uint8_t> directory;
  appendBig(directory, files.size(), 4);
  for (size_t i = 0; i < files.size(); ++i) {
    uint16_t selector = FILE_FIRST + i;
    appendBig(directory, files[i].bytes.size(), 4);
    appendBig(directory, selector, 2);
    appendBig(directory, 0, 2);
    char name[NAME_BYTES] = {};
    strncpy(name, files[i].name.c_str(), NAME_BYTES - 1);
    directory.insert(directory.end(), name, name + NAME_BYTES);
    items[selector] = std::move(files[i].bytes);
  }
  items[FILE_DIR] = std::move(directory);
}

uint8_t FwCfg::read(uint16_t port) {
  if (port != DATA_PORT) return 0;
  // Bit 14 says "for writing"; bit 15 selects the architecture's own items (x86: ACPI, SMBIOS and
  // legacy tables at 0x8000-0x8004), none of which this device has.
  auto it = items.find(s.selector & ~0x4000);
  if (it == items.end() || s.offset >= it->second.size()) return 0;
  return it->second[s.offset++];
}

void FwCfg::write(uint16_t port, unsigned size, uint16_t value) {
  if (port == SELECTOR_PORT && size == 2) {
    s.selector = value;
    s.offset = 0;
  }
}

}  // namespace bulkhead
