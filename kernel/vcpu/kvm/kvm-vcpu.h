// One KVM vCPU: its kvm_run page, its initial state, and one KVM_RUN at a time.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <string>

#include <absl/status/statusor.h>
#include <kj/io.h>

#include "kernel/vcpu/vcpu.h"

namespace bulkhead {

class KvmVcpu final : public Vcpu {
 public:
  KvmVcpu(unsigned index, kj::AutoCloseFd fd, kvm_run* run, size_t runBytes);
  ~KvmVcpu() override;
  KJ_DISALLOW_COPY(KvmVcpu);

  // The guest's CPUID: `model` applied to what KVM supports.
  absl::Status setCpuid(int kvmFd, const CpuModel& model);
  absl::Status setBootState(const BootState& state) override;
  absl::StatusOr<bool> enter() override;
  kvm_run& exitInfo() override { return *run; }
  void kick() override;
  void clearKick() override { run->immediate_exit = 0; }
  void setThread(pthread_t thread) override {
    this->thread = thread;
    threadKnown.store(true, std::memory_order_release);
  }
  absl::Status setGuestDebug(const kvm_guest_debug& debug) override;
  absl::StatusOr<VcpuSnapshot> snapshot() override;
  std::string describeLocation(GuestMemory& memory) override;
  bool haltedWithInterruptsOff() override;
  unsigned index() const override { return vcpuIndex; }

 private:
  unsigned vcpuIndex;
  kj::AutoCloseFd vcpuFd;
  kvm_run* run;
  size_t runBytes;
  pthread_t thread{};
  std::atomic<bool> threadKnown{false};
};

}  // namespace bulkhead
