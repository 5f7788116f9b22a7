#include "kernel/vcpu/kvm/kvm-vm.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"
#include "kernel/base/status-macros.h"
#include "kernel/vcpu/kvm/kvm-vcpu.h"

namespace bulkhead {

namespace {
// Three pages KVM on Intel needs for real-mode emulation; placed just below the BIOS area at the
// top of 4 GiB, where no RAM or device lives (SDM Vol. 3, 28.3; KVM API "KVM_SET_TSS_ADDR").
constexpr uint64_t TSS_ADDRESS = 0xfffbd000;
constexpr uint64_t IDENTITY_MAP_ADDRESS = 0xfffbc000;
}  // namespace

bool KvmVm::available(std::string* reason) {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *reason = absl::StrFormat("/dev/kvm cannot be opened (%s)", strerror(errno));
    return false;
  }
  close(fd);
  return true;
}

absl::StatusOr<std::unique_ptr<KvmVm>> KvmVm::create(IoBus& bus, bool pit) {
  int raw = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (raw < 0) {
    return errnoStatus("opening /dev/kvm (is KVM enabled, and may this user use it?)");
  }
  kj::AutoCloseFd kvm(raw);
  int version = ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrFormat("/dev/kvm speaks API version %d, not %d", version, KVM_API_VERSION));
  }
  int runBytes = ioctl(kvm.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (runBytes <= 0) return errnoStatus("KVM_GET_VCPU_MMAP_SIZE");
  raw = ioctl(kvm.get(), KVM_CREATE_VM, 0);
  if (raw < 0) return errnoStatus("KVM_CREATE_VM");
  kj::AutoCloseFd vm(raw);
  if (ioctl(vm.get(), KVM_SET_TSS_ADDR, TSS_ADDRESS) < 0) return errnoStatus("KVM_SET_TSS_ADDR");
  uint64_t identityMap = IDENTITY_MAP_ADDRESS;
  if (ioctl(vm.get(), KVM_SET_IDENTITY_MAP_ADDR, &identityMap) < 0) {
    return errnoStatus("KVM_SET_IDENTITY_MAP_ADDR");
  }
  if (ioctl(vm.get(), KVM_CREATE_IRQCHIP, 0) < 0) {
    return errnoStatus(
        "KVM_CREATE_IRQCHIP (this host's KVM has no in-kernel interrupt controller)");
  }
  kvm_pit_config pitConfig{};
  if (pit && ioctl(vm.get(), KVM_CREATE_PIT2, &pitConfig) < 0) {
    return errnoStatus("KVM_CREATE_PIT2 (this host's KVM has no in-kernel PIT)");
  }
  return std::unique_ptr<KvmVm>(new KvmVm(kj::mv(kvm), kj::mv(vm), runBytes, bus));
}

absl::Status KvmVm::addSlot(const RamRegion& region, uint32_t flags, const char* what) {
  kvm_userspace_memory_region slot{};
  slot.slot = nextSlot++;
  slot.flags = flags;
  slot.guest_phys_addr = region.guestPhysical;
  slot.memory_size = region.size;
  slot.userspace_addr = reinterpret_cast<uint64_t>(region.host);
  if (ioctl(vmFd.get(), KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
    return errnoStatus(absl::StrFormat("registering %s at %#x+%#x with KVM", what,
                                       region.guestPhysical, region.size));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::mapMemory(GuestMemory& memory) {
  for (const RamRegion& region : memory.regions()) {
    RETURN_IF_ERROR(addSlot(region, 0, "guest RAM"));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::mapRom(const RamRegion& rom) {
  // Read-only where KVM can: a write then becomes an MMIO exit, which nobody claims.
  bool readOnly = ioctl(kvmFd.get(), KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
  return addSlot(rom, readOnly ? KVM_MEM_READONLY : 0, "a ROM");
}

absl::StatusOr<std::unique_ptr<Vcpu>> KvmVm::createVcpu(unsigned index, const CpuModel& model) {
  int raw = ioctl(vmFd.get(), KVM_CREATE_VCPU, index);
  if (raw < 0) return errnoStatus(absl::StrFormat("KVM_CREATE_VCPU %u", index));
  kj::AutoCloseFd fd(raw);
  void* run = mmap(nullptr, runBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (run == MAP_FAILED) return errnoStatus("mapping kvm_run");
  auto vcpu =
      std::make_unique<KvmVcpu>(index, kj::mv(fd), static_cast<kvm_run*>(run), runBytes, bus);
  absl::Status status = vcpu->setCpuid(kvmFd.get(), model);
  if (!status.ok()) return status;
  return std::unique_ptr<Vcpu>(std::move(vcpu));
}

absl::Status KvmVm::setIrqLine(uint32_t line, bool level) {
  kvm_irq_level irq{};
  irq.irq = line;
  irq.level = level ? 1 : 0;
  if (ioctl(vmFd.get(), KVM_IRQ_LINE, &irq) < 0) {
    return errnoStatus(absl::StrFormat("KVM_IRQ_LINE %u", line));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::setIoeventfd(bool pio, uint64_t address, unsigned size, uint64_t value, int fd,
                                 bool assign) {
  kvm_ioeventfd request{};
  request.datamatch = value;
  request.addr = address;
  request.len = size;  // 0: any write (for MMIO, KVM's fast MMIO bus: no instruction decoding)
  request.fd = fd;
  request.flags = (size != 0 ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
                  (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN);
  if (ioctl(vmFd.get(), KVM_IOEVENTFD, &request) < 0) {
    return errnoStatus(absl::StrFormat("KVM_IOEVENTFD at %s %#x", pio ? "port" : "MMIO", address));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::addIrqfd(uint32_t gsi, int fd, int resampleFd) {
  kvm_irqfd request{};
  request.fd = fd;
  request.gsi = gsi;
  if (resampleFd >= 0) {
    request.flags = KVM_IRQFD_FLAG_RESAMPLE;
    request.resamplefd = resampleFd;
  }
  if (ioctl(vmFd.get(), KVM_IRQFD, &request) < 0) {
    return errnoStatus(absl::StrFormat("KVM_IRQFD for GSI %u", gsi));
  }
  return absl::OkStatus();
}

std::vector<kvm_irq_routing_entry> KvmVm::routingTable(const MsiRoutes& msi) {
  std::vector<kvm_irq_routing_entry> table;
  auto pin = [&table](uint32_t gsi, uint32_t chip, uint32_t line) {
    kvm_irq_routing_entry entry{};
    entry.gsi = gsi;
    entry.type = KVM_IRQ_ROUTING_IRQCHIP;
    entry.u.irqchip.irqchip = chip;
    entry.u.irqchip.pin = line;
    table.push_back(entry);
  };
  for (uint32_t gsi = 0; gsi < MSI_GSI_BASE; ++gsi) {
    if (gsi < 8) pin(gsi, KVM_IRQCHIP_PIC_MASTER, gsi);
    if (gsi >= 8 && gsi < 16) pin(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8);
    pin(gsi, KVM_IRQCHIP_IOAPIC, gsi);  // as KVM's default table, GSI 2 included
  }
  for (const auto& [gsi, message] : msi) {
    kvm_irq_routing_entry entry{};
    entry.gsi = gsi;
    entry.type = KVM_IRQ_ROUTING_MSI;
    entry.u.msi.address_lo = static_cast<uint32_t>(message.first);
    entry.u.msi.address_hi = static_cast<uint32_t>(message.first >> 32);
    entry.u.msi.data = message.second;
    table.push_back(entry);
  }
  return table;
}

absl::Status KvmVm::setMsiRoute(uint32_t gsi, uint64_t address, uint32_t data) {
  std::lock_guard<std::mutex> lock(routesLock);
  if (address == 0) {
    msiRoutes.erase(gsi);
  } else {
    msiRoutes[gsi] = {address, data};
  }
  std::vector<kvm_irq_routing_entry> entries = routingTable(msiRoutes);
  // The kernel's layout, spelled out: compiled as C++, <linux/kvm.h>'s struct puts its
  // zero-length entry array at offset 16 instead of 8 (and KVM_SET_GSI_ROUTING's size field
  // follows), which this host's KVM rightly refuses (ENOTTY).
  struct Header {
    uint32_t nr;
    uint32_t flags;
  };
  constexpr unsigned long SET_GSI_ROUTING = _IOW(KVMIO, 0x6a, Header);
  std::vector<uint8_t> buffer(sizeof(Header) + entries.size() * sizeof(kvm_irq_routing_entry));
  Header header{static_cast<uint32_t>(entries.size()), 0};
  memcpy(buffer.data(), &header, sizeof(header));
  memcpy(buffer.data() + sizeof(header), entries.data(),
         entries.size() * sizeof(kvm_irq_routing_entry));
  if (ioctl(vmFd.get(), SET_GSI_ROUTING, buffer.data()) < 0) {
    return errnoStatus(absl::StrFormat("KVM_SET_GSI_ROUTING with an MSI route for GSI %u", gsi));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::signalMsi(uint64_t address, uint32_t data) {
  kvm_msi message{};
  message.address_lo = static_cast<uint32_t>(address);
  message.address_hi = static_cast<uint32_t>(address >> 32);
  message.data = data;
  if (ioctl(vmFd.get(), KVM_SIGNAL_MSI, &message) < 0) {
    return errnoStatus(absl::StrFormat("KVM_SIGNAL_MSI to %#x", address));
  }
  return absl::OkStatus();
}

}  // namespace bulkhead
