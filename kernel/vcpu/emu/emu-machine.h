// The `emu` backend: the software CPU (cpu.h) behind the core's Accelerator and Vcpu
// interfaces, with the interrupt controllers KVM would have in the kernel, from
// kernel/irqchip/: the PIC and IOAPIC (and the PIT when the machine has one) in an IrqChip, and
// a local APIC per vCPU.
//
// Contract: the guest sees the same RAM, ROMs, I/O bus and device servers as under KVM. Port
// I/O and MMIO are handled on the vCPU's thread by calling the bus directly (a vCPU's own
// local APIC page never reaches the bus); interrupt lines reach the PIC and IOAPIC from any
// thread, wired as KVM wires them: GSIs 0-15 go to both, 16-23 to the IOAPIC alone. vCPUs
// other than 0 wait for INIT and a start-up IPI, as on a PC. vCPUs run one at a time, in turn
// (`turn`; under --deterministic a fixed ring by index), so that every guest instruction,
// locked or not, is atomic to the others. What KVM
// does and this backend does not (irqfd, for which the core falls back to the channel) is
// listed in docs/emu.md. Doorbells (ioeventfd) work as
// under KVM: a matching guest write signals the device's eventfd instead of going through the
// channel.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kernel/bus/io-bus.h"
#include "kernel/irqchip/irqchip.h"
#include "kernel/vcpu/emu/cpu.h"
#include "kernel/vcpu/vcpu.h"

namespace bulkhead {

class EmuVcpu;

class EmuMachine final : public Accelerator {
 public:
  // `pit`: the machine has an i8254 (the core emulates it, kernel/irqchip/).
  static absl::StatusOr<std::unique_ptr<EmuMachine>> create(GuestMemory& memory, IoBus& bus,
                                                            bool deterministic, bool pit);
  ~EmuMachine() override;

  const char* name() const override { return "emu"; }
  absl::Status mapMemory(GuestMemory& memory) override;
  absl::Status mapRom(const RamRegion& rom) override;
  absl::StatusOr<std::unique_ptr<Vcpu>> createVcpu(unsigned index, const CpuModel& model) override;
  absl::Status setIrqLine(uint32_t line, bool level) override;
  absl::Status setIoeventfd(bool pio, uint64_t address, unsigned size, uint64_t value, int fd,
                            bool assign) override;
  absl::Status addIrqfd(uint32_t gsi, int fd, int resampleFd) override;
  // No irqfds here: MSI messages come through the channel (signalMsi), so routes are not kept.
  absl::Status setMsiRoute(uint32_t, uint64_t, uint32_t) override { return absl::OkStatus(); }
  absl::Status signalMsi(uint64_t address, uint32_t data) override;

  // For the vCPUs.
  uint8_t* page(uint64_t physical, bool write);
  IoBus& bus() { return ioBus; }
  IrqChip& irqChip() { return *chip; }
  bool deterministic() const { return virtualClock; }
  // Fires the PIT's interrupt if due; returns when to look again (clockNs() time).
  uint64_t pollTimer() { return chip->pollTimer(); }
  // The timers' clock in nanoseconds: host time, or when deterministic the instructions all
  // vCPUs retired (one nanosecond each) plus the time skipped while every vCPU was idle.
  uint64_t clockNs();

  // --deterministic: vCPUs take turns in index order, round and round (host threads would take
  // them in the order the host wakes them). waitForTurn() returns whether vCPU `index` has the
  // turn, or false if `cancelled` (its kick) came first; passTurn() hands it to the next.
  bool waitForTurn(unsigned index, const std::function<bool()>& cancelled);
  void passTurn();
  // A kick or an interrupt: turn waiters look again.
  void wakeTurns();
  // vCPU `index` used its turn, or had nothing to run in it (halted or waiting for start-up)
  // until its next timer event at `due` (clockNs() time; UINT64_MAX: none). When every vCPU's
  // last turn was idle, time skips to the earliest event; with none, the turn waits (on host
  // time, briefly) for an interrupt from outside.
  void busyTurn(unsigned index);
  void idleTurn(unsigned index, uint64_t due);

 private:
  EmuMachine(GuestMemory& memory, IoBus& bus, bool deterministic);
  void interruptRaised();
  // An IOAPIC message: to the first vCPU whose local APIC matches.
  void deliver(uint8_t vector, bool level, uint8_t destination, bool logical);
  // An IPI vCPU `from` wrote to its ICR (Lapic's contract).
  void sendIpi(unsigned from, uint32_t icrLow, uint8_t destination);

  // A first-come first-served lock: the vCPU that holds it runs guest instructions.
  class Turn {
   public:
    void lock();
    void unlock();

   private:
    std::mutex mutex;
    std::condition_variable changed;
    uint64_t next = 0, serving = 0;
  };
  Turn turn;
  // The deterministic ring: whose turn it is, and which vCPUs were idle in their last turn and
  // until when.
  std::mutex ringLock;
  std::condition_variable ringChanged;
  unsigned ringTurn = 0;
  std::vector<uint64_t> idleUntil;  // per vCPU: 0 busy, else its next timer event

  GuestMemory& memory;
  IoBus& ioBus;
  bool virtualClock;
  std::unique_ptr<IrqChip> chip;
  std::atomic<uint64_t> skipped{0};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::vector<RamRegion> writable;
  std::vector<RamRegion> readOnly;
  std::mutex vcpusLock;
  std::vector<EmuVcpu*> vcpus;
  friend class EmuVcpu;
};

}  // namespace bulkhead
