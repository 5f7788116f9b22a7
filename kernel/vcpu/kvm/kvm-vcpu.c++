#include "kernel/vcpu/kvm/kvm-vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <vector>

#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"
#include "kernel/base/log.h"
#include "kernel/base/status-macros.h"
#include "kernel/boot/layout.h"

namespace bulkhead {

namespace {

// Control-register and EFLAGS bits (SDM Vol. 3, 2.5; Vol. 1, 3.4.3).
constexpr uint64_t CR0_PE = 1ull << 0;
constexpr uint64_t CR0_ET = 1ull << 4;
constexpr uint64_t CR0_PG = 1ull << 31;
constexpr uint64_t CR4_PAE = 1ull << 5;
constexpr uint64_t EFER_LME = 1ull << 8;
constexpr uint64_t EFER_LMA = 1ull << 10;
constexpr uint64_t RFLAGS_RESERVED = 1ull << 1;
constexpr uint64_t RFLAGS_IF = 1ull << 9;

// g++ sizes `struct kvm_cpuid2` (a header with a zero-length array) as 12 bytes, not the 8 the
// kernel encodes in the ioctl numbers, so the headers' macros yield numbers KVM rejects.
struct CpuidHeader {
  uint32_t nent;
  uint32_t padding;
};
constexpr unsigned long GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long SET_CPUID2 = _IOW(KVMIO, 0x90, CpuidHeader);

constexpr uint8_t SEGMENT_CODE_READ_ACCESSED = 0xb;
constexpr uint8_t SEGMENT_DATA_WRITE_ACCESSED = 0x3;

kvm_segment flatSegment(uint16_t selector, uint8_t type, bool code64) {
  kvm_segment segment{};
  segment.base = 0;
  segment.limit = 0xffffffff;
  segment.selector = selector;
  segment.type = type;
  segment.present = 1;
  segment.s = 1;
  segment.g = 1;
  segment.l = code64 ? 1 : 0;
  segment.db = code64 ? 0 : 1;
  return segment;
}

void realSegment(kvm_segment& segment) {
  segment.base = 0;
  segment.selector = 0;
}

}  // namespace

KvmVcpu::KvmVcpu(unsigned index, kj::AutoCloseFd fd, kvm_run* run, size_t runBytes)
    : vcpuIndex(index), vcpuFd(kj::mv(fd)), run(run), runBytes(runBytes) {}

KvmVcpu::~KvmVcpu() { munmap(run, runBytes); }

absl::Status KvmVcpu::setCpuid(int kvmFd, const CpuModel& model) {
  for (size_t count = 64; count <= 4096; count *= 2) {
    std::vector<uint8_t> buffer(sizeof(CpuidHeader) + count * sizeof(kvm_cpuid_entry2));
    auto* cpuid = reinterpret_cast<CpuidHeader*>(buffer.data());
    auto* raw = reinterpret_cast<kvm_cpuid_entry2*>(cpuid + 1);
    cpuid->nent = count;
    if (ioctl(kvmFd, GET_SUPPORTED_CPUID, cpuid) < 0) {
      if (errno == E2BIG) continue;
      return errnoStatus("KVM_GET_SUPPORTED_CPUID");
    }
    std::vector<CpuidEntry> supported;
    for (uint32_t i = 0; i < cpuid->nent; ++i) {
      supported.push_back(CpuidEntry{raw[i].function, raw[i].index, raw[i].flags, raw[i].eax,
                                     raw[i].ebx, raw[i].ecx, raw[i].edx});
    }
    std::vector<std::string> notes;
    ASSIGN_OR_RETURN(std::vector<CpuidEntry> guest,
                     applyCpuModel(model, std::move(supported), &notes));
    if (vcpuIndex == 0) {
      for (const std::string& note : notes) logLine(note);
    }
    for (size_t i = 0; i < guest.size(); ++i) {
      raw[i] = kvm_cpuid_entry2{};
      raw[i].function = guest[i].function;
      raw[i].index = guest[i].index;
      raw[i].flags = guest[i].flags;
      raw[i].eax = guest[i].eax;
      raw[i].ebx = guest[i].ebx;
      raw[i].ecx = guest[i].ecx;
      raw[i].edx = guest[i].edx;
    }
    cpuid->nent = guest.size();
    if (ioctl(vcpuFd.get(), SET_CPUID2, cpuid) < 0) return errnoStatus("KVM_SET_CPUID2");
    return absl::OkStatus();
  }
  return absl::InternalError("KVM_GET_SUPPORTED_CPUID wants more than 4096 entries");
}

absl::Status KvmVcpu::setBootState(const BootState& state) {
  if (state.mode == CpuMode::RESET) return absl::OkStatus();  // KVM creates vCPUs in that state
  kvm_sregs sregs;
  if (ioctl(vcpuFd.get(), KVM_GET_SREGS, &sregs) < 0) return errnoStatus("KVM_GET_SREGS");
  switch (state.mode) {
    case CpuMode::REAL16:
      for (kvm_segment* segment :
           {&sregs.cs, &sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss}) {
        realSegment(*segment);
      }
      break;
    case CpuMode::RESET:
      break;  // handled above
    case CpuMode::PROTECTED32:
    case CpuMode::LONG64: {
      bool long64 = state.mode == CpuMode::LONG64;
      sregs.cs = flatSegment(long64 ? layout::CODE64_SELECTOR : layout::CODE32_SELECTOR,
                             SEGMENT_CODE_READ_ACCESSED, long64);
      kvm_segment data = flatSegment(layout::DATA_SELECTOR, SEGMENT_DATA_WRITE_ACCESSED, false);
      sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
      sregs.gdt.base = state.gdtBase;
      sregs.gdt.limit = state.gdtLimit;
      sregs.cr0 = CR0_PE | CR0_ET;
      if (long64) {
        sregs.cr0 |= CR0_PG;
        sregs.cr3 = state.cr3;
        sregs.cr4 = CR4_PAE;
        sregs.efer = EFER_LME | EFER_LMA;
      }
      break;
    }
  }
  if (ioctl(vcpuFd.get(), KVM_SET_SREGS, &sregs) < 0) return errnoStatus("KVM_SET_SREGS");
  kvm_regs regs{};
  regs.rip = state.rip;
  regs.rsp = state.rsp;
  regs.rax = state.rax;
  regs.rbx = state.rbx;
  regs.rsi = state.rsi;
  regs.rflags = RFLAGS_RESERVED;
  if (ioctl(vcpuFd.get(), KVM_SET_REGS, &regs) < 0) return errnoStatus("KVM_SET_REGS");
  return absl::OkStatus();
}

absl::StatusOr<bool> KvmVcpu::enter() {
  if (ioctl(vcpuFd.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) return false;
    return errnoStatus("KVM_RUN");
  }
  return true;
}

void KvmVcpu::kick() {
  // immediate_exit covers a kick that lands before KVM_RUN; the signal one inside it.
  __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  if (threadKnown.load(std::memory_order_acquire)) pthread_kill(thread, SIGUSR2);
}

absl::Status KvmVcpu::setGuestDebug(const kvm_guest_debug& debug) {
  if (ioctl(vcpuFd.get(), KVM_SET_GUEST_DEBUG, &debug) < 0) {
    return errnoStatus("KVM_SET_GUEST_DEBUG");
  }
  return absl::OkStatus();
}

absl::StatusOr<VcpuSnapshot> KvmVcpu::snapshot() {
  kvm_regs regs;
  kvm_sregs sregs;
  if (ioctl(vcpuFd.get(), KVM_GET_REGS, &regs) < 0) return errnoStatus("KVM_GET_REGS");
  if (ioctl(vcpuFd.get(), KVM_GET_SREGS, &sregs) < 0) return errnoStatus("KVM_GET_SREGS");
  VcpuSnapshot s;
  uint64_t gpr[16] = {regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp,
                      regs.rsi, regs.rdi, regs.r8,  regs.r9,  regs.r10, regs.r11,
                      regs.r12, regs.r13, regs.r14, regs.r15};
  memcpy(s.gpr, gpr, sizeof(gpr));
  s.rip = regs.rip;
  s.rflags = regs.rflags;
  auto segment = [](const kvm_segment& k) {
    return SegmentState{k.selector, k.base,   k.limit,   k.type, k.present != 0,
                        k.s == 0,   k.l != 0, k.db != 0, k.dpl};
  };
  s.cs = segment(sregs.cs);
  s.ds = segment(sregs.ds);
  s.es = segment(sregs.es);
  s.fs = segment(sregs.fs);
  s.gs = segment(sregs.gs);
  s.ss = segment(sregs.ss);
  s.tr = segment(sregs.tr);
  s.ldt = segment(sregs.ldt);
  s.gdtBase = sregs.gdt.base;
  s.gdtLimit = sregs.gdt.limit;
  s.idtBase = sregs.idt.base;
  s.idtLimit = sregs.idt.limit;
  s.cr0 = sregs.cr0;
  s.cr2 = sregs.cr2;
  s.cr3 = sregs.cr3;
  s.cr4 = sregs.cr4;
  s.efer = sregs.efer;
  return s;
}

bool KvmVcpu::haltedWithInterruptsOff() {
  kvm_mp_state state;
  kvm_regs regs;
  if (ioctl(vcpuFd.get(), KVM_GET_MP_STATE, &state) < 0) return false;
  if (state.mp_state != KVM_MP_STATE_HALTED) return false;
  if (ioctl(vcpuFd.get(), KVM_GET_REGS, &regs) < 0) return false;
  return (regs.rflags & RFLAGS_IF) == 0;
}

std::string KvmVcpu::describeLocation(GuestMemory& memory) {
  absl::StatusOr<VcpuSnapshot> registers = snapshot();
  if (!registers.ok()) {
    return absl::StrFormat("(registers unreadable: %s)", registers.status().message());
  }
  return bulkhead::describeLocation(*registers, memory);
}

}  // namespace bulkhead
