// How a device describes itself to the core, the one description both sides use: the address
// spaces an access can name, the ranges a device claims, and a PCI function's identity, BARs,
// MSI-X table and doorbells. The server fills these (servers/sdk/device.h), the channel carries
// them (protocols/device.capnp), and the core checks and places them (kernel/bus/pci-host.h).
#pragma once

#include <cstdint>
#include <vector>

#include "device.capnp.h"

namespace bulkhead {

// PIO and MMIO are bus addresses; the rest name what a PCI function sees, in the order of
// protocols/device.capnp's Space: its configuration space beyond the header (0x40..0xff) and
// offsets into its BARs.
enum class Space : uint8_t { PIO, MMIO, PCI_CONFIG, BAR0, BAR1, BAR2, BAR3, BAR4, BAR5 };
constexpr Space barSpace(unsigned index) { return static_cast<Space>(3 + index); }
static_assert(static_cast<int>(Space::BAR5) == static_cast<int>(protocol::Space::BAR5));

// Whether a number read from the wire names a Space.
constexpr bool validSpace(uint16_t raw) { return raw <= static_cast<uint16_t>(Space::BAR5); }
inline protocol::Space wireSpace(Space space) {
  return static_cast<protocol::Space>(static_cast<uint16_t>(space));
}

struct IoRange {
  Space space;
  uint64_t base;
  uint64_t size;
  bool synchronous = false;  // the guest's write waits until the device took it
};

struct PciBar {
  uint8_t index;  // 0..5
  uint64_t size;  // a power of two
  bool io = false;
};

// MSI-X: the device serves the capability and the table (16 bytes per vector, at `tableOffset`
// in BAR `bar`); the core routes what the guest writes there.
constexpr unsigned MAX_MSIX_VECTORS = 32;
struct PciMsix {
  uint16_t vectors = 0;  // 0: no MSI-X
  uint8_t bar = 0;
  uint64_t tableOffset = 0;
};

struct PciFunction {
  uint16_t vendorId = 0;
  uint16_t deviceId = 0;
  uint32_t classCode = 0;
  uint8_t revision = 0;
  uint16_t subsystemVendorId = 0;
  uint16_t subsystemId = 0;
  uint8_t capabilities = 0;  // first capability's offset in config space, or 0
  bool interruptPin = false;
  std::vector<PciBar> bars;
  PciMsix msix;
};

// A register the guest writes to ring a bell: `size` bytes of `value` (size 0: any write) at
// `offset` in BAR `bar`. It reaches the device as an eventfd where the host can.
struct Doorbell {
  uint8_t bar;
  uint64_t offset;
  uint8_t size;
  uint64_t value;
};

void encodePciFunction(const PciFunction& function, protocol::PciFunction::Builder wire);
// Copies what the wire says; the core's PCI host checks it (PciHost::add).
PciFunction decodePciFunction(protocol::PciFunction::Reader wire);
void encodeDoorbell(const Doorbell& bell, protocol::Doorbell::Builder wire);
Doorbell decodeDoorbell(protocol::Doorbell::Reader wire);

}  // namespace bulkhead
