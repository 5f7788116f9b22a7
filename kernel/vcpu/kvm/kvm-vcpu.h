// One KVM vCPU: its kvm_run page, its initial state, and one KVM_RUN at a time.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <string>

#include <absl/status/statusor.h>
#include <kj/io.h>

#include "kernel/boot/boot-state.h"
#include "kernel/guestview/disassembler.h"
#include "kernel/guestview/inspect.h"
#include "kernel/memory/guest-memory.h"
#include "kernel/vcpu/cpu-model.h"

namespace bulkhead {

class KvmVcpu {
 public:
  KvmVcpu(unsigned index, kj::AutoCloseFd fd, kvm_run* run, size_t runBytes);
  ~KvmVcpu();
  KJ_DISALLOW_COPY(KvmVcpu);

  // The guest's CPUID: `model` applied to what KVM supports.
  absl::Status setCpuid(int kvmFd, const CpuModel& model);
  absl::Status setBootState(const BootState& state);

  // Runs the guest until the next exit. Returns false when KVM_RUN was interrupted (a kick);
  // `run()` then describes nothing new. Errors are host failures.
  absl::StatusOr<bool> enter();
  kvm_run& exitInfo() { return *run; }

  // Makes a running or about-to-run enter() return at once. Any thread may call it.
  void kick();
  void clearKick() { run->immediate_exit = 0; }
  void setThread(pthread_t thread) {
    this->thread = thread;
    threadKnown.store(true, std::memory_order_release);
  }

  absl::Status setGuestDebug(const kvm_guest_debug& debug);
  // The vCPU's registers; only while its thread is outside KVM_RUN (parked).
  absl::StatusOr<VcpuSnapshot> snapshot();

  // For reports: "RIP 0008:0x100004 (32-bit): hlt". Host failures are described inline.
  std::string describeLocation(GuestMemory& memory);
  // Whether the vCPU sits in HLT with RFLAGS.IF clear, from which nothing here can wake it.
  bool haltedWithInterruptsOff();

  unsigned index() const { return vcpuIndex; }

 private:
  unsigned vcpuIndex;
  kj::AutoCloseFd vcpuFd;
  kvm_run* run;
  size_t runBytes;
  pthread_t thread{};
  std::atomic<bool> threadKnown{false};
};

}  // namespace bulkhead
