// A KVM virtual machine: /dev/kvm, the VM file descriptor, memory slots and the in-kernel
// interrupt controllers.
#pragma once

#include <cstdint>
#include <memory>

#include <absl/status/statusor.h>
#include <kj/io.h>

#include "kernel/memory/guest-memory.h"
#include "kernel/vcpu/cpu-model.h"

namespace bulkhead {

class KvmVcpu;

class KvmVm {
 public:
  // Opens /dev/kvm and creates a VM with an in-kernel irqchip (PIC, IOAPIC, local APICs).
  static absl::StatusOr<std::unique_ptr<KvmVm>> create();
  // Whether /dev/kvm can be opened here; `reason` says why not.
  static bool available(std::string* reason);

  absl::Status mapMemory(GuestMemory& memory);
  // Registers a ROM region of `memory` (read-only where KVM can; otherwise writable).
  absl::Status mapRom(const RamRegion& rom);
  // The in-kernel i8254 PIT on IRQ 0 (BIOS and Linux guests calibrate their clocks with it).
  absl::Status createPit();
  absl::StatusOr<std::unique_ptr<KvmVcpu>> createVcpu(unsigned index, const CpuModel& model);
  // Drives an interrupt line of the in-kernel PIC/IOAPIC (GSI numbering, ISA lines 0-15).
  absl::Status setIrqLine(uint32_t line, bool level);
  // Signals `fd` when the guest writes `value` (`size` bytes) at `address`, without an exit
  // to user space; `assign` false removes it again.
  absl::Status setIoeventfd(bool pio, uint64_t address, unsigned size, uint64_t value, int fd,
                            bool assign);
  // Raises GSI `gsi` when `fd` is signalled; with `resampleFd` the line is level-triggered:
  // KVM lowers it when the guest ends the interrupt and signals `resampleFd`.
  absl::Status addIrqfd(uint32_t gsi, int fd, int resampleFd);

 private:
  absl::Status addSlot(const RamRegion& region, uint32_t flags, const char* what);

  KvmVm(kj::AutoCloseFd kvm, kj::AutoCloseFd vm, size_t runBytes)
      : kvmFd(kj::mv(kvm)), vmFd(kj::mv(vm)), runBytes(runBytes) {}

  kj::AutoCloseFd kvmFd;
  kj::AutoCloseFd vmFd;
  size_t runBytes;
  uint32_t nextSlot = 0;
};

}  // namespace bulkhead
