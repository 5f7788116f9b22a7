// The PCI host bridge: configuration mechanism #1 (ports 0xcf8-0xcff) on bus 0, the standard
// type-0 header of every function, and BAR placement.
//
// A function's server describes itself (vendor, class, BARs, interrupt pin); the core emulates
// the header from that description, so BAR sizing, decode enables and the interrupt line
// register never need the server and a hostile server cannot make them lie. Config accesses
// beyond the header (0x40-0xff: capabilities) go to the server. The core places every BAR in
// the PCI window at start-up with decoding on (as firmware would); a guest may move BARs, and
// accesses in the window are routed to whichever enabled BAR holds them, as an offset into that
// BAR. Doorbells move with their BAR (the `doorbellMoved` hook re-registers the ioeventfd).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "kernel/bus/io-bus.h"

namespace bulkhead {

// Where BARs may live: a memory window in the PCI hole below the IOAPIC, and the top of port
// space.
constexpr uint64_t PCI_MMIO_BASE = 0xc0000000;
constexpr uint64_t PCI_MMIO_END = 0xfec00000;
constexpr uint64_t PCI_IO_BASE = 0xc000;
constexpr uint64_t PCI_IO_END = 0x10000;
constexpr unsigned PCI_SLOTS = 32;
// INTx of the function in slot S goes to IOAPIC pin PCI_GSI_BASE + (S - 1) % 8.
constexpr uint32_t PCI_GSI_BASE = 16;

// A PCI function as the core adds it: the server's description (checked by add()), who serves
// it, and the eventfd each doorbell signals.
struct PciDoorbellSpec {
  Doorbell bell;
  int fd;
};

struct PciFunctionSpec {
  std::string owner;
  IoHandler* handler;  // gets PCI_CONFIG and BARn accesses
  PciFunction function;
  std::vector<PciDoorbellSpec> doorbells;
};

class PciHost final : public IoHandler {
 public:
  // (pio, address, size, value, fd, assign): register or remove an ioeventfd.
  using DoorbellHook = std::function<void(bool, uint64_t, unsigned, uint64_t, int, bool)>;

  PciHost();
  ~PciHost() noexcept override = default;
  // Claims the config ports and the BAR windows on `bus`.
  absl::Status attach(IoBus& bus);
  void onDoorbellMoved(DoorbellHook hook) { doorbellMoved = std::move(hook); }

  // Checks `spec` (BAR sizes and indexes, doorbells inside their BAR), gives it the next slot
  // and places its BARs. Returns the slot.
  absl::StatusOr<unsigned> add(PciFunctionSpec spec);
  static uint32_t gsiForSlot(unsigned slot) { return PCI_GSI_BASE + (slot - 1) % 8; }

  uint64_t read(Space space, uint64_t address, unsigned size) override;
  void write(Space space, uint64_t address, unsigned size, uint64_t value,
             bool synchronous) override;

  // (slot, GSI) of every function with an interrupt pin, for the firmware tables.
  std::vector<std::pair<unsigned, uint32_t>> interruptRoutes();

  // For tests: what a function's BAR decodes now (0 when off).
  uint64_t barAddress(unsigned slot, unsigned bar);

 private:
  struct Function {
    PciFunctionSpec spec;
    std::array<uint64_t, 6> barSize{};  // 0: no BAR
    std::array<bool, 6> barIo{};
    std::array<uint32_t, 6> barValue{};
    uint16_t command = 0;
    uint8_t interruptLine = 0;
  };
  struct Target {
    IoHandler* handler;
    Space space;
    uint64_t address;
    bool synchronous = false;  // a write into the MSI-X table
  };

  uint32_t readConfigDword(const Function& function, unsigned offset);
  void writeConfigDword(Function& function, unsigned offset, uint32_t value);
  // The address BAR `bar` decodes, or nothing when it is off or outside the window.
  std::optional<uint64_t> decoded(const Function& function, unsigned bar) const;
  void moveDoorbells(Function& function, bool assign);
  std::optional<Target> findBar(bool io, uint64_t address);
  Function* selected(unsigned* offset);

  std::mutex lock;
  uint32_t addressRegister = 0;
  std::vector<std::optional<Function>> slots;  // slot 0: the host bridge itself
  uint64_t nextMmio = PCI_MMIO_BASE;
  uint64_t nextIo = PCI_IO_BASE;
  DoorbellHook doorbellMoved;
};

}  // namespace bulkhead
