#include "kernel/base/thread-sandbox.h"

#include <seccomp.h>
#include <sys/mman.h>

#include <memory>

namespace bulkhead {

namespace {

constexpr int ALLOWED[] = {
    // Waiting and waking: futexes, eventfds, the kick signal, sleeps, the clock.
    SCMP_SYS(futex),
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(pread64),
    SCMP_SYS(pwrite64),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(sched_yield),
    SCMP_SYS(nanosleep),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigtimedwait),
    SCMP_SYS(restart_syscall),
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(tgkill),
    SCMP_SYS(sched_getaffinity),
    SCMP_SYS(getrandom),
    SCMP_SYS(madvise),
    SCMP_SYS(munmap),
    SCMP_SYS(mremap),
    SCMP_SYS(brk),
    SCMP_SYS(membarrier),
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(lseek),
    SCMP_SYS(close),
    SCMP_SYS(fcntl),
    SCMP_SYS(dup),
    // Supervisor faults a fault plan fires on the vCPU's access (kill, stop, sever).
    SCMP_SYS(pidfd_send_signal),
    SCMP_SYS(shutdown),
    // Leaving.
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
};

constexpr int FATAL[] = {
    SCMP_SYS(execve),           SCMP_SYS(execveat),          SCMP_SYS(ptrace),
    SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev),
};

constexpr uint64_t KVM_IO = 0xae;  // the request type of every KVM ioctl

}  // namespace

absl::Status confineVcpuThread() {
  std::unique_ptr<void, void (*)(scmp_filter_ctx)> filter(seccomp_init(SCMP_ACT_ERRNO(EPERM)),
                                                          seccomp_release);
  if (filter == nullptr) return absl::InternalError("seccomp_init failed");
  auto add = [&](uint32_t action, int call, unsigned count, const scmp_arg_cmp* args) {
    return seccomp_rule_add_array(filter.get(), action, call, count, args) == 0;
  };
  bool ok = true;
  for (int call : ALLOWED) ok = ok && add(SCMP_ACT_ALLOW, call, 0, nullptr);
  for (int call : FATAL) ok = ok && add(SCMP_ACT_KILL_PROCESS, call, 0, nullptr);
  // Memory, never executable.
  scmp_arg_cmp noExec2 = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0);
  ok = ok && add(SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, &noExec2);
  ok = ok && add(SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1, &noExec2);
  // KVM's calls only (KVM_RUN, registers, debug): request type in bits 8-15.
  scmp_arg_cmp kvmRequest = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, KVM_IO << 8);
  ok = ok && add(SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, &kvmRequest);
  if (!ok) return absl::InternalError("seccomp_rule_add failed");
  // This thread only: no SCMP_FLTATR_CTL_TSYNC.
  if (seccomp_load(filter.get()) != 0) return absl::InternalError("seccomp_load failed");
  return absl::OkStatus();
}

}  // namespace bulkhead
