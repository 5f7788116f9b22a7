// Watching a device server: a pidfd tells the core the moment it dies, a watchdog kills one
// that lets a request wait, and the supervisor restarts it on the same channel (or fences the
// device after too many restarts); supervisor faults (kill, stop, sever) and the end of a VM.
#include "kernel/supervisor/device-process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"
#include "kernel/base/status-macros.h"

namespace bulkhead {

namespace {

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrFormat("exited with status %d", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrFormat("killed by signal %d (%s)", WTERMSIG(status),
                           strsignal(WTERMSIG(status)));
  }
  return "ended";
}

}  // namespace

bool DeviceProcess::alive() {
  std::lock_guard<std::mutex> lock(incarnationLock);
  if (pidfd == nullptr) return false;
  pollfd exited{pidfd.get(), POLLIN, 0};
  return poll(&exited, 1, 0) == 0;
}

kj::Promise<void> DeviceProcess::whenServerExits() {
  // The observer is edge-triggered and an edge that came while nobody waited is lost (the
  // server may die during attach), so look at the pidfd's level first.
  pollfd exited{pidfd.get(), POLLIN, 0};
  if (poll(&exited, 1, 0) > 0) return kj::evalLater([]() {});
  return pidObserver->whenBecomesReadable();
}

kj::Promise<void> DeviceProcess::supervise() {
  if (stopped || remote->fenced() || pidObserver.get() == nullptr) return kj::READY_NOW;
  return whenServerExits().then([this]() -> kj::Promise<void> {
    std::string how = reap();
    if (stopped) return kj::READY_NOW;
    if (remote->fenced()) {
      logf("device %s: its fenced server %s", spec.kind, how);
      dropIncarnation();
      dropSpare();
      return kj::READY_NOW;
    }
    if (spec.policy.onFailure == RestartPolicy::OnFailure::ERROR) {
      remote->fence(absl::StrFormat("its server %s (on-failure=error)", how));
      dropIncarnation();
      dropSpare();
      return kj::READY_NOW;
    }
    auto now = std::chrono::steady_clock::now();
    recentRestarts.push_back(now);
    while (!recentRestarts.empty() && now - recentRestarts.front() > spec.policy.window) {
      recentRestarts.pop_front();
    }
    if (recentRestarts.size() > spec.policy.maxRestarts) {
      remote->fence(absl::StrFormat(
          "its server died %u times within %d s (the last one %s)", recentRestarts.size(),
          std::chrono::duration_cast<std::chrono::seconds>(spec.policy.window).count(), how));
      dropIncarnation();
      dropSpare();
      return kj::READY_NOW;
    }
    ++restartCount;
    if (restartLog.admit()) {
      logf("device %s: its server %s; restarting it (restart %u)", spec.kind, how, restartCount);
    }
    absl::Status spawned = spawn();
    if (!spawned.ok()) {
      remote->fence(absl::StrCat("a new server could not be started: ", spawned.message()));
      dropSpare();
      return kj::READY_NOW;
    }
    return attach().then([this](absl::Status attached) -> kj::Promise<void> {
      if (!attached.ok()) {
        // Treat it as a crash: kill it, and the next round counts it against the limit.
        if (restartLog.admit()) {
          logf("device %s: a restarted server failed: %s", spec.kind, attached.message());
        }
        killServer();
      } else {
        remote->noteProgress(std::chrono::steady_clock::now());
      }
      // The next restart's server, started once this one serves (a few ms of fork and exec
      // that no waiting request pays for).
      return kj::evalLater([this]() {
        prepareSpare();
        return supervise();
      });
    });
  });
}

kj::Promise<void> DeviceProcess::setFaults(std::shared_ptr<capnp::MallocMessageBuilder> rules) {
  spec.faults = rules;
  remote->setFaultRules(rules != nullptr ? rules->getRoot<protocol::FaultPlan>().asReader()
                                         : protocol::FaultPlan::Reader());
  if (rpc.get() == nullptr || remote->fenced()) return kj::READY_NOW;
  capnp::word scratch[8];
  memset(scratch, 0, sizeof(scratch));
  capnp::MallocMessageBuilder vatMessage(scratch);
  auto vat = vatMessage.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto request = rpc->bootstrap(vat).castAs<protocol::Device>().setFaultsRequest();
  if (rules != nullptr) request.setFaults(rules->getRoot<protocol::FaultPlan>().asReader());
  return request.send().ignoreResult();
}

void DeviceProcess::checkWatchdog(std::chrono::steady_clock::time_point now) {
  if (stopped || childPid <= 0 || remote->fenced()) return;
  if (!remote->stalled(now, spec.policy.watchdog)) return;
  if (restartLog.admit()) {
    logf("device %s: its server left a request waiting for over %d ms; killing it", spec.kind,
         static_cast<int>(spec.policy.watchdog.count()));
  }
  remote->noteProgress(now);  // one kill per hang
  killServer();
}

void DeviceProcess::killServer() { signalServer(SIGKILL); }

bool DeviceProcess::signalServer(int signal) {
  // By pidfd, so a recycled pid can never be hit; the lock keeps a restart from swapping it.
  std::lock_guard<std::mutex> lock(incarnationLock);
  return pidfd != nullptr && syscall(SYS_pidfd_send_signal, pidfd.get(), signal, nullptr, 0) == 0;
}

void DeviceProcess::injectFault(protocol::FaultAction::Which action) {
  switch (action) {
    case protocol::FaultAction::KILL:
      signalServer(SIGKILL);
      break;
    case protocol::FaultAction::STOP:
      signalServer(SIGSTOP);
      break;
    case protocol::FaultAction::SEVER: {
      // Cut the connection under the server: it sees end-of-file and exits.
      std::lock_guard<std::mutex> lock(incarnationLock);
      if (socketFd >= 0) shutdown(socketFd, SHUT_RDWR);
      break;
    }
    default:
      break;
  }
}

std::string DeviceProcess::reap() {
  if (childPid <= 0) return "was already gone";
  int status = 0;
  pid_t done = waitpid(childPid, &status, 0);
  childPid = -1;
  return done < 0 ? "vanished" : describeWaitStatus(status);
}

bool DeviceProcess::diedFromSignal() {
  pollfd exited{pidfd.get(), POLLIN, 0};
  if (childPid <= 0 || poll(&exited, 1, 200) <= 0) return false;
  int status = 0;
  if (waitpid(childPid, &status, 0) != childPid) return false;
  childPid = -1;
  return WIFSIGNALED(status);
}

void DeviceProcess::dropIncarnation() {
  rpc = nullptr;
  network = nullptr;
  stream = nullptr;
  pidObserver = nullptr;
  std::lock_guard<std::mutex> lock(incarnationLock);
  pidfd = nullptr;
  socketFd = -1;
}

std::string DeviceProcess::stop() {
  stopped = true;
  dropSpare();
  if (childPid <= 0) {
    dropIncarnation();
    return "already stopped";
  }
  dropIncarnation();  // the server sees end-of-file and exits
  int status = 0;
  for (int waited = 0; waited < 100; ++waited) {
    pid_t done = waitpid(childPid, &status, WNOHANG);
    if (done == childPid) {
      childPid = -1;
      return describeWaitStatus(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(childPid, SIGKILL);
  waitpid(childPid, &status, 0);
  childPid = -1;
  return "did not exit within 1 s of its channel closing; killed";
}

DeviceProcess::~DeviceProcess() {
  stop();
  if (stateMapping != nullptr) munmap(stateMapping, stateRegionBytes());
}

}  // namespace bulkhead
