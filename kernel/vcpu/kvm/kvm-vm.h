// A KVM virtual machine: /dev/kvm, the VM file descriptor, memory slots and the in-kernel
// interrupt controllers.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <kj/io.h>

#include "kernel/vcpu/vcpu.h"

namespace bulkhead {

class KvmVm final : public Accelerator {
 public:
  // Opens /dev/kvm and creates a VM with an in-kernel irqchip (PIC, IOAPIC, local APICs); its
  // vCPUs serve port I/O and MMIO exits on `bus`. `pit`: the machine has an i8254 (KVM's
  // in-kernel one).
  static absl::StatusOr<std::unique_ptr<KvmVm>> create(IoBus& bus, bool pit);
  // Whether /dev/kvm can be opened here; `reason` says why not.
  static bool available(std::string* reason);

  const char* name() const override { return "kvm"; }
  absl::Status mapMemory(GuestMemory& memory) override;
  // Read-only where KVM can; otherwise writable.
  absl::Status mapRom(const RamRegion& rom) override;
  absl::StatusOr<std::unique_ptr<Vcpu>> createVcpu(unsigned index, const CpuModel& model) override;
  // The in-kernel PIC/IOAPIC.
  absl::Status setIrqLine(uint32_t line, bool level) override;
  absl::Status setIoeventfd(bool pio, uint64_t address, unsigned size, uint64_t value, int fd,
                            bool assign) override;
  absl::Status addIrqfd(uint32_t gsi, int fd, int resampleFd) override;
  // KVM's GSI routing table holds the MSI routes with the default PIC/IOAPIC ones.
  absl::Status setMsiRoute(uint32_t gsi, uint64_t address, uint32_t data) override;
  absl::Status signalMsi(uint64_t address, uint32_t data) override;

  using MsiRoutes = std::map<uint32_t, std::pair<uint64_t, uint32_t>>;  // GSI -> message
  // The whole routing table KVM_SET_GSI_ROUTING takes (it replaces the default one): GSIs
  // 0-15 to the PIC and the IOAPIC, 16-23 to the IOAPIC, then `msi`.
  static std::vector<kvm_irq_routing_entry> routingTable(const MsiRoutes& msi);

 private:
  absl::Status addSlot(const RamRegion& region, uint32_t flags, const char* what);

  KvmVm(kj::AutoCloseFd kvm, kj::AutoCloseFd vm, size_t runBytes, IoBus& bus)
      : kvmFd(kj::mv(kvm)), vmFd(kj::mv(vm)), runBytes(runBytes), bus(bus) {}

  kj::AutoCloseFd kvmFd;
  kj::AutoCloseFd vmFd;
  size_t runBytes;
  IoBus& bus;
  uint32_t nextSlot = 0;
  std::mutex routesLock;
  MsiRoutes msiRoutes;
};

}  // namespace bulkhead
