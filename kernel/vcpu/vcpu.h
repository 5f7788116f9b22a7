// The two halves of a CPU backend, behind which the core runs guests: an Accelerator (one per VM:
// memory, interrupt lines, vCPU creation) and its Vcpus. Two implement them: `kvm/` (the host's
// KVM) and `emu/` (the software CPU, for hosts where KVM is absent or cannot run the guest).
//
// The exit record is KVM's `struct kvm_run` layout for both: the software CPU fills the same
// fields (exit_reason, internal), so the Vm's exit handling is one code path. The software CPU
// reaches port I/O and MMIO by calling the bus itself, without an exit.
#pragma once

#include <linux/kvm.h>
#include <pthread.h>

#include <cstdint>
#include <memory>
#include <string>

#include <absl/status/statusor.h>

#include "kernel/boot/boot-state.h"
#include "kernel/guestview/exit-trace.h"
#include "kernel/guestview/inspect.h"
#include "kernel/memory/guest-memory.h"
#include "kernel/vcpu/cpu-model.h"

namespace bulkhead {

class Vcpu {
 public:
  virtual ~Vcpu() noexcept(false) = default;

  virtual absl::Status setBootState(const BootState& state) = 0;
  // Runs the guest until the next exit. Returns false when interrupted by kick(); exitInfo()
  // then describes nothing new. Errors are host failures.
  virtual absl::StatusOr<bool> enter() = 0;
  virtual kvm_run& exitInfo() = 0;

  // Makes a running or about-to-run enter() return at once. Any thread may call it.
  virtual void kick() = 0;
  virtual void clearKick() = 0;
  virtual void setThread(pthread_t thread) = 0;

  // Breakpoints and single steps (KVM's structure; the software CPU supports single steps and
  // hardware breakpoints on execution).
  virtual absl::Status setGuestDebug(const kvm_guest_debug& debug) = 0;
  // The registers; only while the vCPU's thread is outside enter() (parked).
  virtual absl::StatusOr<VcpuSnapshot> snapshot() = 0;
  // For reports: "RIP 0008:0x100004 (32-bit): hlt". Failures are described inline.
  virtual std::string describeLocation(GuestMemory& memory) = 0;
  // Whether the vCPU sits in HLT with RFLAGS.IF clear, from which nothing here can wake it.
  virtual bool haltedWithInterruptsOff() = 0;
  virtual unsigned index() const = 0;
  // After an emulation failure (KVM_EXIT_INTERNAL_ERROR): what the backend could not do, when
  // it knows ("the software CPU does not implement fld1"); "" otherwise.
  virtual std::string failure() const { return ""; }
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
  // The i8254 PIT on IRQ 0 (BIOS and Linux guests calibrate their clocks with it).
  virtual absl::Status createPit() = 0;
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
  // A backend that handles port I/O and MMIO without exits records them here (--trace exits).
  virtual void setTrace(ExitTrace* trace) {}
};

// A disassembled description of where a vCPU is, from its registers: "RIP 0008:0x100004
// (32-bit): hlt [f4]". Shared by the backends; `translate` maps a linear address.
std::string describeLocation(const VcpuSnapshot& registers, GuestMemory& memory);

}  // namespace bulkhead
