// The two halves of a CPU backend, behind which the core runs guests: an Accelerator (one per VM:
// memory, interrupt lines, vCPU creation) and its Vcpus. Two implement them: `kvm/` (the host's
// KVM) and `emu/` (the software CPU, for hosts where KVM is absent or cannot run the guest).
//
// The contract is Bulkhead's own: registers are an ArchState (kernel/x86/arch-state.h), a run
// ends with a VcpuExit, debugging is a GuestDebug. Both backends serve port I/O and MMIO
// themselves by calling the bus (kernel/bus/io-bus.h), which traces them; a run returns only
// for what the core must decide. Only kernel/vcpu/kvm/ names KVM's structures.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <absl/status/statusor.h>

#include "kernel/boot/boot-state.h"
#include "kernel/memory/guest-memory.h"
#include "kernel/vcpu/cpu-model.h"
#include "kernel/x86/arch-state.h"

namespace bulkhead {

class IoBus;

// The signal kick() sends a vCPU thread that is inside the backend, so that it returns.
constexpr int KICK_SIGNAL = SIGUSR2;

// Why Vcpu::run() returned.
namespace vcpu_exit {
struct Kicked {};    // kick() interrupted it; nothing happened in the guest
struct Debug {};     // a breakpoint or a single step
struct Halted {};    // HLT where the backend has nothing to wait in (KVM without its irqchip)
struct Shutdown {};  // a triple fault
struct PowerOff {};  // the guest asked the platform to power off
struct Reset {};     // the guest asked the platform to reset
// The backend could not go on: `what` says why ("the software CPU does not implement fld1").
// `host`: the host failed (a VM entry failure), not the guest.
struct Failure {
  std::string what;
  bool host = false;
};
}  // namespace vcpu_exit
using VcpuExit =
    std::variant<vcpu_exit::Kicked, vcpu_exit::Debug, vcpu_exit::Halted, vcpu_exit::Shutdown,
                 vcpu_exit::PowerOff, vcpu_exit::Reset, vcpu_exit::Failure>;

// "shutdown", "debug", ...: for traces.
std::string describeExit(const VcpuExit& exit);

// Breakpoints on execution (linear addresses, at most MAX_BREAKPOINTS) and single steps.
struct GuestDebug {
  static constexpr unsigned MAX_BREAKPOINTS = 4;
  bool singleStep = false;
  std::vector<uint64_t> breakpoints;
};

class Vcpu {
 public:
  virtual ~Vcpu() noexcept(false) = default;

  // The registers; only while the vCPU's thread is outside run() (parked).
  virtual absl::StatusOr<ArchState> getState() = 0;
  virtual absl::Status setState(const ArchState& state) = 0;
  // A loader's starting state, on top of the state after power-on (applyBootState).
  absl::Status setBootState(const BootState& boot);

  // Runs the guest, serving port I/O and MMIO on the bus, until something the core must
  // decide. Errors are host failures.
  virtual absl::StatusOr<VcpuExit> run() = 0;

  // Makes a running or about-to-run run() return Kicked at once. Any thread may call it.
  virtual void kick() = 0;
  virtual void clearKick() = 0;
  virtual void setThread(pthread_t thread) = 0;

  virtual absl::Status setDebug(const GuestDebug& debug) = 0;
  // For reports: "RIP 0008:0x100004 (32-bit): hlt". Failures are described inline.
  std::string describeLocation(GuestMemory& memory);
  // The same while the vCPU makes a port or MMIO access (for the bus's trace): "next RIP ..."
  // where the backend has already stepped past the instruction.
  virtual std::string describeAccessLocation(GuestMemory& memory) = 0;
  // Whether the vCPU sits in HLT with RFLAGS.IF clear, from which nothing here can wake it.
  virtual bool haltedWithInterruptsOff() = 0;
  virtual unsigned index() const = 0;
};

// GSIs 0-23 are the PIC's and IOAPIC's pins; MSI-X vectors get GSIs from here up.
constexpr uint32_t MSI_GSI_BASE = 24;
constexpr uint32_t MSI_GSI_END = 1024;  // KVM's routing table holds GSIs below 1024 (x86)

class Accelerator {
 public:
  virtual ~Accelerator() noexcept(false) = default;

  virtual const char* name() const = 0;
  virtual absl::Status mapMemory(GuestMemory& memory) = 0;
  // Registers a ROM region of guest memory; the guest cannot write it.
  virtual absl::Status mapRom(const RamRegion& rom) = 0;
  virtual absl::StatusOr<std::unique_ptr<Vcpu>> createVcpu(unsigned index,
                                                           const CpuModel& model) = 0;
  // Drives an interrupt line (GSI numbering, ISA lines 0-15). Any thread may call it.
  virtual absl::Status setIrqLine(uint32_t line, bool level) = 0;
  // Signals `fd` when the guest writes `value` (`size` bytes; size 0: any write) at `address`,
  // without an exit; `assign` false removes it again. May fail: the write then reaches the
  // device as usual.
  virtual absl::Status setIoeventfd(bool pio, uint64_t address, unsigned size, uint64_t value,
                                    int fd, bool assign) = 0;
  // Raises GSI `gsi` when `fd` is signalled; with `resampleFd` the line is level-triggered and
  // lowered (and `resampleFd` signalled) when the guest ends the interrupt. May fail: the device
  // then drives its line through the channel.
  virtual absl::Status addIrqfd(uint32_t gsi, int fd, int resampleFd) = 0;
  // MSI: makes GSI `gsi` (at or above MSI_GSI_BASE) send the message (`address`, `data`), so an
  // irqfd on it does; `address` 0 stops it. Backends without irqfds may ignore routes.
  virtual absl::Status setMsiRoute(uint32_t gsi, uint64_t address, uint32_t data) = 0;
  // Sends one MSI message now. Any thread may call it.
  virtual absl::Status signalMsi(uint64_t address, uint32_t data) = 0;
};

// A disassembled description of where a vCPU is, from its registers: "RIP 0008:0x100004
// (32-bit): hlt [f4]".
std::string describeLocation(const ArchState& registers, GuestMemory& memory);

}  // namespace bulkhead
