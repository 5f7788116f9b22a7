#include "sandbox.h"

#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <initializer_list>

namespace bulkhead::sdk {

namespace {

// What a server calls after attach: its event loop (epoll, eventfd reads and writes), the RPC
// socket (recvmsg/sendmsg), memory for Cap'n Proto (mmap, brk), threads' futexes, time, and
// leaving. Everything names an existing descriptor or the process itself; none takes a path.
constexpr int ALLOWED[] = {
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(close),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendmsg),
    SCMP_SYS(recvfrom),
    SCMP_SYS(sendto),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(fcntl),
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(lseek),
    SCMP_SYS(mmap),
    SCMP_SYS(munmap),
    SCMP_SYS(mremap),
    SCMP_SYS(madvise),
    SCMP_SYS(brk),
    SCMP_SYS(mprotect),
    SCMP_SYS(futex),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep),
    SCMP_SYS(sched_yield),
    SCMP_SYS(gettid),
    SCMP_SYS(getpid),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(restart_syscall),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
    SCMP_SYS(getrandom),
    SCMP_SYS(dup),
    SCMP_SYS(tgkill),
};

// Calls that would reach another process or replace this one: fatal, not merely refused.
constexpr int FATAL[] = {
    SCMP_SYS(execve),           SCMP_SYS(execveat),          SCMP_SYS(ptrace),
    SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev),
};

}  // namespace

const char* enterSandbox(SandboxNeeds needs) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return "PR_SET_NO_NEW_PRIVS failed";
  // No new processes, no core dumps, a small descriptor table.
  struct rlimit none = {0, 0};
  struct rlimit files = {64, 64};
  // io_uring runs blocking work in kernel worker threads that count as this user's processes;
  // there seccomp (no clone, fork or vfork on the allow-list) is what keeps the server from
  // starting processes.
  if (!needs.ioUring) setrlimit(RLIMIT_NPROC, &none);
  setrlimit(RLIMIT_CORE, &none);
  setrlimit(RLIMIT_NOFILE, &files);

  scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (filter == nullptr) return "seccomp_init failed";
  const char* failure = nullptr;
  for (int call : ALLOWED) {
    if (seccomp_rule_add(filter, SCMP_ACT_ALLOW, call, 0) != 0) failure = "seccomp_rule_add failed";
  }
  if (needs.ioUring) {
    for (int call :
         {SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register)}) {
      if (seccomp_rule_add(filter, SCMP_ACT_ALLOW, call, 0) != 0) {
        failure = "seccomp_rule_add failed";
      }
    }
  }
  if (needs.accept && seccomp_rule_add(filter, SCMP_ACT_ALLOW, SCMP_SYS(accept4), 0) != 0) {
    failure = "seccomp_rule_add failed";
  }
  if (needs.fileIo) {
    for (int call : {SCMP_SYS(pread64), SCMP_SYS(pwrite64), SCMP_SYS(fdatasync)}) {
      if (seccomp_rule_add(filter, SCMP_ACT_ALLOW, call, 0) != 0)
        failure = "seccomp_rule_add failed";
    }
  }
  for (int call : FATAL) {
    if (seccomp_rule_add(filter, SCMP_ACT_KILL_PROCESS, call, 0) != 0) {
      failure = "seccomp_rule_add failed";
    }
  }
  if (failure == nullptr && seccomp_load(filter) != 0) failure = "seccomp_load failed";
  seccomp_release(filter);
  return failure;
}

}  // namespace bulkhead::sdk
