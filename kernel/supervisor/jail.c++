// The jail a device server runs in: forked (in new PID, mount, network, IPC and UTS namespaces
// and as nobody where the core is root), with only its channel as a descriptor, exec'd by
// descriptor with an empty environment; the server installs its seccomp filter itself
// (servers/sdk/sandbox.h) before any device code runs. Also the spare: the next restart's
// server, launched the same way ahead of time and waiting on its channel (docs/recovery.md).
#include "kernel/supervisor/device-process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"
#include "kernel/base/status-macros.h"

namespace bulkhead {

namespace {
constexpr int CHANNEL_FD = 3;
constexpr uint32_t MAX_FDS_PER_MESSAGE = 16;
constexpr uid_t UNPRIVILEGED = 65534;  // nobody / nogroup
}  // namespace

absl::StatusOr<DeviceProcess::Spare> DeviceProcess::launch() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return errnoStatus("socketpair");
  kj::AutoCloseFd ours(pair[0]);
  kj::AutoCloseFd theirs(pair[1]);
  int devNull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devNull < 0) return errnoStatus("opening /dev/null");
  kj::AutoCloseFd nullFd(devNull);
  std::string argv0 = "bulkhead-" + spec.kind;
  char* argv[] = {argv0.data(), nullptr};
  char* envp[] = {nullptr};

  // Where the host allows it (the core is root), the server starts in new PID, mount, network,
  // IPC and UTS namespaces; otherwise it is forked plainly.
  constexpr unsigned long NAMESPACES =
      CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
  bool privileged = getuid() == 0;
  pid_t parent = getpid();
  pid_t child =
      privileged ? static_cast<pid_t>(syscall(SYS_clone, NAMESPACES | SIGCHLD, 0, 0, 0, 0)) : -1;
  bool isolated = child >= 0;
  if (!isolated) child = fork();
  if (child < 0) return errnoStatus("fork for a device server");
  if (child == 0) {
    // Only async-signal-safe calls from here to exec. The server gets an unprivileged identity
    // where possible; it is exec'd by descriptor, so it needs no access to its folders.
    if (privileged &&
        (setgroups(0, nullptr) != 0 || setresgid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED) != 0 ||
         setresuid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED) != 0)) {
      _exit(126);
    }
    // After the identity change, which clears it. In a new PID namespace the parent is outside
    // and getppid() says 0; a server whose core is gone sees its channel close anyway.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!isolated && getppid() != parent) _exit(127);
    dup2(nullFd.get(), STDIN_FILENO);
    dup2(nullFd.get(), STDOUT_FILENO);
    dup2(theirs.get(), CHANNEL_FD);
    // The binary's descriptor, close-on-exec: the server does not keep it.
    constexpr int BINARY_FD = CHANNEL_FD + 1;
    dup2(serverBinary.get(), BINARY_FD);
    fcntl(BINARY_FD, F_SETFD, FD_CLOEXEC);
    close_range(BINARY_FD + 1, ~0u, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    syscall(SYS_execveat, BINARY_FD, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
  }
  theirs = nullptr;
  int raw = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
  if (raw < 0) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    return errnoStatus("pidfd_open for a device server");
  }
  return Spare{child, kj::AutoCloseFd(raw), kj::mv(ours)};
}

absl::Status DeviceProcess::spawn() {
  dropIncarnation();
  // The spare, if one is waiting and alive: exec'd and in its jail already.
  Spare next = std::exchange(spare, Spare{});
  if (next.pid > 0) {
    pollfd exited{next.pidfd.get(), POLLIN, 0};
    if (poll(&exited, 1, 0) != 0) {
      waitpid(next.pid, nullptr, 0);  // killed with the one it was to replace (pkill)
      next = Spare{};
    }
  }
  if (next.pid <= 0) {
    ASSIGN_OR_RETURN(next, launch());
  }
  {
    std::lock_guard<std::mutex> lock(incarnationLock);
    childPid = next.pid;
    pidfd = kj::mv(next.pidfd);
    socketFd = next.socket.get();
  }
  pidObserver = kj::heap<kj::UnixEventPort::FdObserver>(
      io.unixEventPort, pidfd.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
  stream = io.lowLevelProvider->wrapUnixSocketFd(kj::mv(next.socket));
  network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, MAX_FDS_PER_MESSAGE,
                                                capnp::rpc::twoparty::Side::CLIENT);
  rpc = kj::heap(capnp::makeRpcClient(*network));
  return absl::OkStatus();
}

void DeviceProcess::prepareSpare() {
  if (stopped || remote->fenced() || spare.pid > 0) return;
  absl::StatusOr<Spare> launched = launch();
  // Without a spare the next restart starts a server itself, as it always could.
  if (launched.ok()) spare = std::move(*launched);
}

void DeviceProcess::dropSpare() {
  if (spare.pid <= 0) return;
  syscall(SYS_pidfd_send_signal, spare.pidfd.get(), SIGKILL, nullptr, 0);
  waitpid(spare.pid, nullptr, 0);
  spare = Spare{};
}

}  // namespace bulkhead
