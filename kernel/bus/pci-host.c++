#include "kernel/bus/pci-host.h"

#include <absl/strings/str_format.h>

#include "kernel/base/status-macros.h"

namespace bulkhead {

namespace {

constexpr uint64_t CONFIG_ADDRESS_PORT = 0xcf8;
constexpr uint64_t CONFIG_DATA_PORT = 0xcfc;
constexpr unsigned HEADER_BYTES = 0x40;
constexpr uint16_t COMMAND_IO = 1;
constexpr uint16_t COMMAND_MEMORY = 2;
constexpr uint16_t COMMAND_WRITABLE = 0x0407;  // I/O, memory, bus master, INTx disable
constexpr uint16_t STATUS_CAPABILITIES = 0x10;
constexpr uint64_t MAX_BAR_BYTES = 1ull << 30;

bool powerOfTwo(uint64_t value) { return value != 0 && (value & (value - 1)) == 0; }

uint32_t merge(uint32_t old, unsigned byteOffset, unsigned size, uint32_t value) {
  uint32_t mask = (size >= 4 ? ~0u : (1u << (8 * size)) - 1) << (8 * byteOffset);
  return (old & ~mask) | ((value << (8 * byteOffset)) & mask);
}

}  // namespace

PciHost::PciHost() : slots(PCI_SLOTS) {
  // 00:00.0, the host bridge, with an i440FX's IDs: SeaBIOS recognises it and runs (it took
  // QEMU's generic PCIe bridge 1b36:0008 for another platform and triple-faulted), and Linux
  // knows it. Its chipset registers (PAM and the rest) are not emulated: config reads beyond
  // the header return 0 and writes are ignored; RAM below 1 MiB is always writable anyway.
  Function bridge;
  bridge.spec.owner = "pci-host";
  bridge.spec.handler = nullptr;
  bridge.spec.function.vendorId = 0x8086;
  bridge.spec.function.deviceId = 0x1237;
  bridge.spec.function.classCode = 0x060000;
  slots[0] = std::move(bridge);
}

absl::Status PciHost::attach(IoBus& bus) {
  RETURN_IF_ERROR(bus.add(Space::PIO, CONFIG_ADDRESS_PORT, 8, Route{this, false, "pci-host"}));
  RETURN_IF_ERROR(bus.add(Space::MMIO, PCI_MMIO_BASE, PCI_MMIO_END - PCI_MMIO_BASE,
                          Route{this, false, "pci-host"}));
  return bus.add(Space::PIO, PCI_IO_BASE, PCI_IO_END - PCI_IO_BASE, Route{this, false, "pci-host"});
}

absl::StatusOr<unsigned> PciHost::add(PciFunctionSpec spec) {
  std::lock_guard<std::mutex> guard(lock);
  unsigned slot = 1;
  while (slot < PCI_SLOTS && slots[slot].has_value()) ++slot;
  if (slot == PCI_SLOTS) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: all %u PCI slots of bus 0 are taken", spec.owner, PCI_SLOTS - 1));
  }
  const PciFunction& pci = spec.function;
  if (pci.capabilities != 0 && (pci.capabilities < HEADER_BYTES || pci.capabilities % 4 != 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: its capability list starts at %#x, not in 0x40-0xfc", spec.owner, pci.capabilities));
  }
  Function function;
  uint64_t mmio = nextMmio;
  uint64_t io = nextIo;
  for (const PciBar& bar : pci.bars) {
    uint64_t minimum = bar.io ? 4 : 16;
    uint64_t maximum = bar.io ? 256 : MAX_BAR_BYTES;
    if (bar.index >= 6 || function.barSize[bar.index] != 0 || !powerOfTwo(bar.size) ||
        bar.size < minimum || bar.size > maximum) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: BAR %u of %#x bytes is not a power of two from %u to %#x bytes, or a repeat",
          spec.owner, bar.index, bar.size, minimum, maximum));
    }
    uint64_t& next = bar.io ? io : mmio;
    uint64_t end = bar.io ? PCI_IO_END : PCI_MMIO_END;
    uint64_t base = (next + bar.size - 1) & ~(bar.size - 1);
    if (base + bar.size > end) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: no room for BAR %u (%#x bytes) in the PCI %s window", spec.owner,
                          bar.index, bar.size, bar.io ? "I/O" : "memory"));
    }
    next = base + bar.size;
    function.barSize[bar.index] = bar.size;
    function.barIo[bar.index] = bar.io;
    function.barValue[bar.index] = static_cast<uint32_t>(base) | (bar.io ? 1 : 0);
  }
  for (const PciDoorbellSpec& wired : spec.doorbells) {
    const Doorbell& bell = wired.bell;
    if (bell.bar >= 6 || function.barSize[bell.bar] == 0 ||
        (bell.size != 0 && bell.size != 1 && bell.size != 2 && bell.size != 4) ||
        bell.offset > function.barSize[bell.bar] - (bell.size == 0 ? 1 : bell.size)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: a doorbell at BAR %u offset %#x lies outside its BAR", spec.owner,
                          bell.bar, bell.offset));
    }
  }
  const PciMsix& msix = pci.msix;
  if (msix.vectors > 0 &&
      (msix.vectors > MAX_MSIX_VECTORS || msix.bar >= 6 || function.barSize[msix.bar] == 0 ||
       function.barIo[msix.bar] || msix.tableOffset % 8 != 0 ||
       msix.tableOffset + 16ull * msix.vectors > function.barSize[msix.bar])) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: an MSI-X table of %u vectors at BAR %u offset %#x does not fit a memory BAR (at "
        "most %u vectors)",
        spec.owner, msix.vectors, msix.bar, msix.tableOffset, MAX_MSIX_VECTORS));
  }
  nextMmio = mmio;
  nextIo = io;
  function.command = COMMAND_IO | COMMAND_MEMORY;
  function.interruptLine = pci.interruptPin ? gsiForSlot(slot) : 0xff;
  function.spec = std::move(spec);
  slots[slot] = std::move(function);
  moveDoorbells(*slots[slot], true);
  return slot;
}

std::optional<uint64_t> PciHost::decoded(const Function& function, unsigned bar) const {
  if (function.barSize[bar] == 0) return std::nullopt;
  bool io = function.barIo[bar];
  if (!(function.command & (io ? COMMAND_IO : COMMAND_MEMORY))) return std::nullopt;
  uint64_t base = function.barValue[bar] & ~static_cast<uint32_t>(io ? 0x3 : 0xf);
  uint64_t low = io ? PCI_IO_BASE : PCI_MMIO_BASE;
  uint64_t high = io ? PCI_IO_END : PCI_MMIO_END;
  if (base < low || base > high || function.barSize[bar] > high - base) return std::nullopt;
  return base;
}

void PciHost::moveDoorbells(Function& function, bool assign) {
  if (!doorbellMoved) return;
  for (const PciDoorbellSpec& wired : function.spec.doorbells) {
    const Doorbell& bell = wired.bell;
    if (auto base = decoded(function, bell.bar)) {
      doorbellMoved(function.barIo[bell.bar], *base + bell.offset, bell.size, bell.value, wired.fd,
                    assign);
    }
  }
}

std::vector<std::pair<unsigned, uint32_t>> PciHost::interruptRoutes() {
  std::lock_guard<std::mutex> guard(lock);
  std::vector<std::pair<unsigned, uint32_t>> routes;
  for (unsigned slot = 1; slot < PCI_SLOTS; ++slot) {
    if (slots[slot] && slots[slot]->spec.function.interruptPin)
      routes.emplace_back(slot, gsiForSlot(slot));
  }
  return routes;
}

uint64_t PciHost::barAddress(unsigned slot, unsigned bar) {
  std::lock_guard<std::mutex> guard(lock);
  if (slot >= PCI_SLOTS || !slots[slot] || bar >= 6) return 0;
  return decoded(*slots[slot], bar).value_or(0);
}

PciHost::Function* PciHost::selected(unsigned* offset) {
  if (!(addressRegister & 0x80000000u)) return nullptr;
  unsigned bus = (addressRegister >> 16) & 0xff;
  unsigned device = (addressRegister >> 11) & 0x1f;
  unsigned function = (addressRegister >> 8) & 0x7;
  *offset = addressRegister & 0xfc;
  if (bus != 0 || function != 0 || !slots[device]) return nullptr;
  return &*slots[device];
}

uint32_t PciHost::readConfigDword(const Function& function, unsigned offset) {
  const PciFunction& spec = function.spec.function;
  switch (offset) {
    case 0x00:
      return spec.vendorId | static_cast<uint32_t>(spec.deviceId) << 16;
    case 0x04:
      return function.command |
             static_cast<uint32_t>(spec.capabilities != 0 ? STATUS_CAPABILITIES : 0) << 16;
    case 0x08:
      return spec.revision | (spec.classCode & 0xffffff) << 8;
    case 0x2c:
      return spec.subsystemVendorId | static_cast<uint32_t>(spec.subsystemId) << 16;
    case 0x34:
      return spec.capabilities;
    case 0x3c:
      return function.interruptLine | (spec.interruptPin ? 1u << 8 : 0);
    default:
      if (offset >= 0x10 && offset <= 0x24) return function.barValue[(offset - 0x10) / 4];
      return 0;  // header type 0, no BIST, no ROM, no cardbus
  }
}

void PciHost::writeConfigDword(Function& function, unsigned offset, uint32_t value) {
  if (offset == 0x04) {
    moveDoorbells(function, false);
    function.command = value & COMMAND_WRITABLE;
    moveDoorbells(function, true);
  } else if (offset >= 0x10 && offset <= 0x24) {
    unsigned bar = (offset - 0x10) / 4;
    if (function.barSize[bar] == 0) return;
    moveDoorbells(function, false);
    // Address bits below the size read back as zero: that is how the guest sizes a BAR.
    bool io = function.barIo[bar];
    uint32_t mask = ~static_cast<uint32_t>(function.barSize[bar] - 1);
    function.barValue[bar] = (value & mask) | (io ? 1 : 0);
    moveDoorbells(function, true);
  }
  // Interrupt Line (0x3c) is read-only here: it reports the GSI the function's INTA# is wired to,
  // which no guest write can change. Firmware that writes its own choice and reads it back
  // (SeaBIOS for its MP table) then describes the wiring that is (docs/virtio.md).
}

uint64_t PciHost::read(Space space, uint64_t address, unsigned size) {
  std::optional<Target> target;
  if (space == Space::PIO && address >= CONFIG_ADDRESS_PORT && address < CONFIG_ADDRESS_PORT + 8) {
    std::unique_lock<std::mutex> guard(lock);
    if (address == CONFIG_ADDRESS_PORT && size == 4) return addressRegister;
    if (address < CONFIG_DATA_PORT) return allOnes(size);
    unsigned offset;
    Function* function = selected(&offset);
    if (function == nullptr) return allOnes(size);
    unsigned byte = address - CONFIG_DATA_PORT;
    offset += byte;
    if (offset >= HEADER_BYTES) {
      if (function->spec.handler == nullptr) return 0;
      target = Target{function->spec.handler, Space::PCI_CONFIG, offset};
    } else {
      return readConfigDword(*function, offset & ~3u) >> (8 * (offset & 3));
    }
  } else {
    std::lock_guard<std::mutex> guard(lock);
    target = findBar(space == Space::PIO, address);
  }
  if (!target) return allOnes(size);
  // Outside the lock: the server may take a while.
  return target->handler->read(target->space, target->address, size);
}

void PciHost::write(Space space, uint64_t address, unsigned size, uint64_t value,
                    bool synchronous) {
  std::optional<Target> target;
  if (space == Space::PIO && address >= CONFIG_ADDRESS_PORT && address < CONFIG_ADDRESS_PORT + 8) {
    std::lock_guard<std::mutex> guard(lock);
    if (address == CONFIG_ADDRESS_PORT && size == 4) {
      addressRegister = value;
      return;
    }
    if (address < CONFIG_DATA_PORT) return;
    unsigned offset;
    Function* function = selected(&offset);
    if (function == nullptr) return;
    unsigned byte = address - CONFIG_DATA_PORT;
    if (offset + byte >= HEADER_BYTES) {
      if (function->spec.handler == nullptr) return;
      target = Target{function->spec.handler, Space::PCI_CONFIG, offset + byte};
    } else {
      unsigned dword = (offset + byte) & ~3u;
      unsigned within = (offset + byte) & 3;
      if (within + size > 4) return;
      writeConfigDword(*function, dword,
                       merge(readConfigDword(*function, dword), within, size, value));
      return;
    }
  } else {
    std::lock_guard<std::mutex> guard(lock);
    target = findBar(space == Space::PIO, address);
  }
  if (target) {
    target->handler->write(target->space, target->address, size, value,
                           synchronous || target->synchronous);
  }
}

std::optional<PciHost::Target> PciHost::findBar(bool io, uint64_t address) {
  for (unsigned slot = 1; slot < PCI_SLOTS; ++slot) {
    if (!slots[slot]) continue;
    Function& function = *slots[slot];
    for (unsigned bar = 0; bar < 6; ++bar) {
      if (function.barIo[bar] != io) continue;
      auto base = decoded(function, bar);
      if (base && address >= *base && address - *base < function.barSize[bar]) {
        uint64_t offset = address - *base;
        const PciMsix& msix = function.spec.function.msix;
        bool table = msix.vectors > 0 && msix.bar == bar && offset >= msix.tableOffset &&
                     offset - msix.tableOffset < 16ull * msix.vectors;
        return Target{function.spec.handler, barSpace(bar), offset, table};
      }
    }
  }
  return std::nullopt;
}

}  // namespace bulkhead
