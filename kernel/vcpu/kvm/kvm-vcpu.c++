#include "kernel/vcpu/kvm/kvm-vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <vector>

#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"
#include "kernel/base/log.h"
#include "kernel/base/status-macros.h"
#include "kernel/bus/io-bus.h"
#include "kernel/x86/registers.h"

namespace bulkhead {

namespace {

// g++ sizes `struct kvm_cpuid2` (a header with a zero-length array) as 12 bytes, not the 8 the
// kernel encodes in the ioctl numbers, so the headers' macros yield numbers KVM rejects.
struct CpuidHeader {
  uint32_t nent;
  uint32_t padding;
};
constexpr unsigned long GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long SET_CPUID2 = _IOW(KVMIO, 0x90, CpuidHeader);

const char* internalErrorName(uint32_t suberror) {
  switch (suberror) {
    case KVM_INTERNAL_ERROR_EMULATION:
      return "KVM could not emulate an instruction";
    case KVM_INTERNAL_ERROR_SIMUL_EX:
      return "an exception occurred while delivering another";
    case KVM_INTERNAL_ERROR_DELIVERY_EV:
      return "delivering an event to the guest failed";
    default:
      return "KVM reported an internal error";
  }
}

SegmentState fromKvm(const kvm_segment& k) {
  return SegmentState{k.selector, k.base,   k.limit,   k.type, k.present != 0,
                      k.s == 0,   k.l != 0, k.db != 0, k.dpl};
}

void toKvm(const SegmentState& segment, kvm_segment& k) {
  k.selector = segment.selector;
  k.base = segment.base;
  k.limit = segment.limit;
  k.type = segment.type;
  k.present = segment.present;
  k.s = !segment.system;
  k.l = segment.longMode;
  k.db = segment.big;
  k.dpl = segment.dpl;
  k.g = segment.limit > 0xfffff;  // a limit above 1 MiB can only be in 4 KiB units
}

}  // namespace

KvmVcpu::KvmVcpu(unsigned index, kj::AutoCloseFd fd, kvm_run* run, size_t runBytes, IoBus& bus)
    : vcpuIndex(index), vcpuFd(kj::mv(fd)), shared(run), runBytes(runBytes), bus(bus) {}

KvmVcpu::~KvmVcpu() { munmap(shared, runBytes); }

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

absl::StatusOr<ArchState> KvmVcpu::getState() {
  kvm_regs regs;
  kvm_sregs sregs;
  if (ioctl(vcpuFd.get(), KVM_GET_REGS, &regs) < 0) return errnoStatus("KVM_GET_REGS");
  if (ioctl(vcpuFd.get(), KVM_GET_SREGS, &sregs) < 0) return errnoStatus("KVM_GET_SREGS");
  ArchState s;
  uint64_t gpr[16] = {regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp,
                      regs.rsi, regs.rdi, regs.r8,  regs.r9,  regs.r10, regs.r11,
                      regs.r12, regs.r13, regs.r14, regs.r15};
  memcpy(s.gpr, gpr, sizeof(gpr));
  s.rip = regs.rip;
  s.rflags = regs.rflags;
  s.cs = fromKvm(sregs.cs);
  s.ds = fromKvm(sregs.ds);
  s.es = fromKvm(sregs.es);
  s.fs = fromKvm(sregs.fs);
  s.gs = fromKvm(sregs.gs);
  s.ss = fromKvm(sregs.ss);
  s.tr = fromKvm(sregs.tr);
  s.ldt = fromKvm(sregs.ldt);
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

absl::Status KvmVcpu::setState(const ArchState& s) {
  // What ArchState does not hold (the APIC base, CR8, pending interrupts) stays as KVM has it.
  kvm_sregs sregs;
  if (ioctl(vcpuFd.get(), KVM_GET_SREGS, &sregs) < 0) return errnoStatus("KVM_GET_SREGS");
  toKvm(s.cs, sregs.cs);
  toKvm(s.ds, sregs.ds);
  toKvm(s.es, sregs.es);
  toKvm(s.fs, sregs.fs);
  toKvm(s.gs, sregs.gs);
  toKvm(s.ss, sregs.ss);
  toKvm(s.tr, sregs.tr);
  toKvm(s.ldt, sregs.ldt);
  sregs.gdt.base = s.gdtBase;
  sregs.gdt.limit = s.gdtLimit;
  sregs.idt.base = s.idtBase;
  sregs.idt.limit = s.idtLimit;
  sregs.cr0 = s.cr0;
  sregs.cr2 = s.cr2;
  sregs.cr3 = s.cr3;
  sregs.cr4 = s.cr4;
  sregs.efer = s.efer;
  if (ioctl(vcpuFd.get(), KVM_SET_SREGS, &sregs) < 0) return errnoStatus("KVM_SET_SREGS");
  kvm_regs regs{};
  regs.rax = s.gpr[0];
  regs.rcx = s.gpr[1];
  regs.rdx = s.gpr[2];
  regs.rbx = s.gpr[3];
  regs.rsp = s.gpr[4];
  regs.rbp = s.gpr[5];
  regs.rsi = s.gpr[6];
  regs.rdi = s.gpr[7];
  regs.r8 = s.gpr[8];
  regs.r9 = s.gpr[9];
  regs.r10 = s.gpr[10];
  regs.r11 = s.gpr[11];
  regs.r12 = s.gpr[12];
  regs.r13 = s.gpr[13];
  regs.r14 = s.gpr[14];
  regs.r15 = s.gpr[15];
  regs.rip = s.rip;
  regs.rflags = s.rflags;
  if (ioctl(vcpuFd.get(), KVM_SET_REGS, &regs) < 0) return errnoStatus("KVM_SET_REGS");
  return absl::OkStatus();
}

absl::StatusOr<VcpuExit> KvmVcpu::run() {
  for (;;) {
    if (ioctl(vcpuFd.get(), KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) return vcpu_exit::Kicked{};
      return errnoStatus("KVM_RUN");
    }
    if (std::optional<VcpuExit> exit = decide()) return *exit;
  }
}

std::optional<VcpuExit> KvmVcpu::decide() {
  switch (shared->exit_reason) {
    case KVM_EXIT_IO:
      serveIo();
      return std::nullopt;
    case KVM_EXIT_MMIO:
      serveMmio();
      return std::nullopt;
    case KVM_EXIT_INTR:
      return vcpu_exit::Kicked{};
    case KVM_EXIT_DEBUG:
      return vcpu_exit::Debug{};
    case KVM_EXIT_HLT:
      return vcpu_exit::Halted{};
    case KVM_EXIT_SHUTDOWN:
      return vcpu_exit::Shutdown{};
    case KVM_EXIT_SYSTEM_EVENT:
      if (shared->system_event.type == KVM_SYSTEM_EVENT_RESET) return vcpu_exit::Reset{};
      return vcpu_exit::PowerOff{};
    case KVM_EXIT_INTERNAL_ERROR:
      return vcpu_exit::Failure{absl::StrFormat("%s (suberror %u)",
                                                internalErrorName(shared->internal.suberror),
                                                shared->internal.suberror)};
    case KVM_EXIT_FAIL_ENTRY:
      return vcpu_exit::Failure{absl::StrFormat("VM entry failed (hardware reason %#x)",
                                                shared->fail_entry.hardware_entry_failure_reason),
                                /*host=*/true};
    default:
      return vcpu_exit::Failure{
          absl::StrFormat("unexpected KVM exit reason %u", shared->exit_reason), /*host=*/true};
  }
}

void KvmVcpu::serveIo() {
  auto& exit = shared->io;
  // KVM puts the data inside the kvm_run mapping; a count or offset that points outside it is a
  // kernel bug we do not follow.
  size_t bytes = static_cast<size_t>(exit.size) * exit.count;
  if (exit.size > 8 || exit.data_offset > runBytes || bytes > runBytes - exit.data_offset) return;
  uint8_t* data = reinterpret_cast<uint8_t*>(shared) + exit.data_offset;
  for (uint32_t i = 0; i < exit.count; ++i, data += exit.size) {
    uint64_t value = 0;
    if (exit.direction == KVM_EXIT_IO_OUT) {
      memcpy(&value, data, exit.size);
      bus.write(Space::PIO, exit.port, exit.size, value);
    } else {
      value = bus.read(Space::PIO, exit.port, exit.size);
      memcpy(data, &value, exit.size);
    }
  }
}

void KvmVcpu::serveMmio() {
  auto& exit = shared->mmio;
  unsigned size = exit.len <= 8 ? exit.len : 8;
  uint64_t value = 0;
  if (exit.is_write) {
    memcpy(&value, exit.data, size);
    bus.write(Space::MMIO, exit.phys_addr, size, value);
  } else {
    value = bus.read(Space::MMIO, exit.phys_addr, size);
    memcpy(exit.data, &value, size);
  }
}

void KvmVcpu::kick() {
  // immediate_exit covers a kick that lands before KVM_RUN; the signal one inside it.
  __atomic_store_n(&shared->immediate_exit, 1, __ATOMIC_SEQ_CST);
  if (threadKnown.load(std::memory_order_acquire)) pthread_kill(thread, KICK_SIGNAL);
}

absl::Status KvmVcpu::setDebug(const GuestDebug& debug) {
  if (debug.breakpoints.size() > GuestDebug::MAX_BREAKPOINTS) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "at most %u breakpoints (the debug registers)", GuestDebug::MAX_BREAKPOINTS));
  }
  kvm_guest_debug request{};
  request.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
  if (debug.singleStep) request.control |= KVM_GUESTDBG_SINGLESTEP;
  uint64_t dr7 = 0;
  for (unsigned slot = 0; slot < debug.breakpoints.size(); ++slot) {
    request.arch.debugreg[slot] = debug.breakpoints[slot];
    dr7 |= uint64_t{1} << (slot * 2);  // Ln: enabled; R/W and LEN 0: instruction
  }
  request.arch.debugreg[7] = dr7;
  if (ioctl(vcpuFd.get(), KVM_SET_GUEST_DEBUG, &request) < 0) {
    return errnoStatus("KVM_SET_GUEST_DEBUG");
  }
  return absl::OkStatus();
}

bool KvmVcpu::haltedWithInterruptsOff() {
  kvm_mp_state state;
  kvm_regs regs;
  if (ioctl(vcpuFd.get(), KVM_GET_MP_STATE, &state) < 0) return false;
  if (state.mp_state != KVM_MP_STATE_HALTED) return false;
  if (ioctl(vcpuFd.get(), KVM_GET_REGS, &regs) < 0) return false;
  return (regs.rflags & x86::FLAG_IF) == 0;
}

std::string KvmVcpu::describeAccessLocation(GuestMemory& memory) {
  // KVM has already stepped past an IN or OUT when it exits, not past an MMIO access.
  return (shared->exit_reason == KVM_EXIT_IO ? "next " : "") + describeLocation(memory);
}

}  // namespace bulkhead
