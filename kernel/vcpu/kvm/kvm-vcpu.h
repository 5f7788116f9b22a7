// One KVM vCPU: its kvm_run page, its state in and out of KVM's structures, and one KVM_RUN at a
// time. Port I/O and MMIO exits are served here, on the bus; run() returns what the core decides.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include <absl/status/statusor.h>
#include <kj/io.h>

#include "kernel/vcpu/vcpu.h"

namespace bulkhead {

class KvmVcpu final : public Vcpu {
 public:
  KvmVcpu(unsigned index, kj::AutoCloseFd fd, kvm_run* run, size_t runBytes, IoBus& bus);
  ~KvmVcpu() override;
  KJ_DISALLOW_COPY(KvmVcpu);

  // The guest's CPUID: `model` applied to what KVM supports.
  absl::Status setCpuid(int kvmFd, const CpuModel& model);
  absl::StatusOr<ArchState> getState() override;
  absl::Status setState(const ArchState& state) override;
  absl::StatusOr<VcpuExit> run() override;
  void kick() override;
  void clearKick() override { shared->immediate_exit = 0; }
  void setThread(pthread_t thread) override {
    this->thread = thread;
    threadKnown.store(true, std::memory_order_release);
  }
  absl::Status setDebug(const GuestDebug& debug) override;
  std::string describeAccessLocation(GuestMemory& memory) override;
  bool haltedWithInterruptsOff() override;
  unsigned index() const override { return vcpuIndex; }

 private:
  void serveIo();
  void serveMmio();
  // What an exit means for the core; nothing for the exits served here.
  std::optional<VcpuExit> decide();

  unsigned vcpuIndex;
  kj::AutoCloseFd vcpuFd;
  kvm_run* shared;
  size_t runBytes;
  IoBus& bus;
  pthread_t thread{};
  std::atomic<bool> threadKnown{false};
};

}  // namespace bulkhead
