#include "kernel/supervisor/device-process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include "device.capnp.h"
#include "fd-capability.h"
#include "kernel/base/errno-status.h"
#include "kernel/base/status-macros.h"

namespace bulkhead {

namespace {

constexpr int CHANNEL_FD = 3;
constexpr uint32_t MAX_FDS_PER_MESSAGE = 8;
constexpr size_t MAX_RANGES = 16;
constexpr unsigned ISA_IRQ_LINES = 16;
constexpr auto ATTACH_TIMEOUT = 5 * kj::SECONDS;

bool isExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

std::string ownDirectory() {
  char buffer[4096];
  ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return ".";
  std::string path(buffer, n);
  return path.substr(0, path.rfind('/'));
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrFormat("exited with status %d", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrFormat("killed by signal %d (%s)", WTERMSIG(status),
                           strsignal(WTERMSIG(status)));
  }
  return "ended";
}

absl::StatusOr<kj::AutoCloseFd> makeEventfd() {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return errnoStatus("eventfd");
  return kj::AutoCloseFd(fd);
}

absl::Status addRanges(IoBus& bus, RemoteDevice& device, capnp::List<protocol::Range>::Reader list,
                       const std::string& kind) {
  if (list.size() > MAX_RANGES) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "device server %s asked for %u ranges (at most %u)", kind, list.size(), MAX_RANGES));
  }
  for (auto range : list) {
    Space space;
    switch (range.getSpace()) {
      case protocol::Space::PIO:
        space = Space::PIO;
        break;
      case protocol::Space::MMIO:
        space = Space::MMIO;
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrFormat("device server %s asked for an unknown address space", kind));
    }
    RETURN_IF_ERROR(bus.add(space, range.getBase(), range.getSize(),
                            Route{&device, range.getSynchronous(), kind}));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> findServer(const std::string& kind) {
  std::string binary = "bulkhead-" + kind;
  std::vector<std::string> candidates;
  if (const char* dir = getenv("BULKHEAD_SERVER_DIR")) {
    candidates.push_back(absl::StrCat(dir, "/", kind, "/", binary));
    candidates.push_back(absl::StrCat(dir, "/", binary));
  }
  std::string own = ownDirectory();
  candidates.push_back(absl::StrCat(own, "/../servers/", kind, "/", binary));
  candidates.push_back(absl::StrCat(own, "/", binary));
  for (const std::string& path : candidates) {
    if (isExecutable(path)) return path;
  }
  return absl::NotFoundError(
      absl::StrFormat("cannot find the device server %s (looked beside %s); build it, or set "
                      "BULKHEAD_SERVER_DIR to the folder that holds it",
                      binary, own));
}

absl::StatusOr<std::unique_ptr<DeviceProcess>> DeviceProcess::start(kj::AsyncIoContext& io,
                                                                    DeviceSpec spec,
                                                                    DeviceSink& sink, IoBus& bus) {
  ASSIGN_OR_RETURN(std::string path, findServer(spec.kind));

  // The channel: ring memory sealed so the server cannot shrink it under the core's feet.
  uint32_t slots = DEFAULT_RING_SLOTS;
  int raw = memfd_create(("bulkhead-ring-" + spec.kind).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (raw < 0) return errnoStatus("memfd_create for a device ring");
  kj::AutoCloseFd ringFd(raw);
  if (ftruncate(ringFd.get(), channelBytes(slots)) != 0) return errnoStatus("sizing a ring");
  if (fcntl(ringFd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return errnoStatus("sealing a ring");
  }
  ChannelMapping mapping;
  if (!mapping.map(ringFd.get(), slots)) return errnoStatus("mapping a ring");
  ringInit(mapping.requests(), slots, 0);
  ringInit(mapping.replies(), slots, 0);
  ASSIGN_OR_RETURN(kj::AutoCloseFd toDevice, makeEventfd());
  ASSIGN_OR_RETURN(kj::AutoCloseFd toCore, makeEventfd());

  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return errnoStatus("socketpair");
  kj::AutoCloseFd ours(pair[0]);
  kj::AutoCloseFd theirs(pair[1]);
  int devNull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devNull < 0) return errnoStatus("opening /dev/null");
  kj::AutoCloseFd nullFd(devNull);

  pid_t parent = getpid();
  pid_t child = fork();
  if (child < 0) return errnoStatus("fork for a device server");
  if (child == 0) {
    // Only async-signal-safe calls from here to exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(nullFd.get(), STDIN_FILENO);
    dup2(nullFd.get(), STDOUT_FILENO);
    dup2(theirs.get(), CHANNEL_FD);
    close_range(CHANNEL_FD + 1, ~0u, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::string argv0 = "bulkhead-" + spec.kind;
    char* argv[] = {argv0.data(), nullptr};
    execv(path.c_str(), argv);
    _exit(127);
  }
  theirs = nullptr;

  std::unique_ptr<DeviceProcess> process(new DeviceProcess());
  process->deviceKind = spec.kind;
  process->childPid = child;
  process->stream = io.lowLevelProvider->wrapUnixSocketFd(kj::mv(ours));
  process->network = kj::heap<capnp::TwoPartyVatNetwork>(*process->stream, MAX_FDS_PER_MESSAGE,
                                                         capnp::rpc::twoparty::Side::CLIENT);
  process->rpc = kj::heap(capnp::makeRpcClient(*process->network));
  capnp::word scratch[8];
  memset(scratch, 0, sizeof(scratch));
  capnp::MallocMessageBuilder vatMessage(scratch);
  auto vat = vatMessage.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto server = process->rpc->bootstrap(vat).castAs<protocol::Device>();

  auto request = server.attachRequest();
  auto channel = request.initChannel();
  channel.setRing(kj::heap<FdCapability>(ringFd.get()));
  channel.setRingSlots(slots);
  channel.setToDevice(kj::heap<FdCapability>(toDevice.get()));
  channel.setToCore(kj::heap<FdCapability>(toCore.get()));
  auto options = request.initOptions(spec.options.size());
  for (size_t i = 0; i < spec.options.size(); ++i) {
    options[i].setKey(spec.options[i].first);
    options[i].setValue(spec.options[i].second);
  }
  auto backends = request.initBackends(spec.backends.size());
  for (size_t i = 0; i < spec.backends.size(); ++i) {
    backends.set(i, kj::heap<FdCapability>(spec.backends[i].get()));
  }

  std::string failure;
  std::set<uint8_t> lines;
  process->remote = std::make_unique<RemoteDevice>(spec.kind, kj::mv(mapping), kj::mv(toDevice),
                                                   kj::mv(toCore), sink);
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                 auto response = io.provider->getTimer()
                                     .timeoutAfter(ATTACH_TIMEOUT, request.send())
                                     .wait(io.waitScope);
                 absl::Status status =
                     addRanges(bus, *process->remote, response.getRanges(), spec.kind);
                 if (!status.ok()) {
                   failure = std::string(status.message());
                   return;
                 }
                 for (uint8_t line : response.getIrqLines()) {
                   if (line >= ISA_IRQ_LINES) {
                     failure = absl::StrFormat(
                         "device server %s wants interrupt line %u; only "
                         "ISA lines 0-15 exist",
                         spec.kind, line);
                     return;
                   }
                   lines.insert(line);
                 }
               })) {
    std::string description = exception->getDescription().cStr();
    for (const char* noise : {"remote exception: ", "failed: "}) {
      if (description.rfind(noise, 0) == 0) description.erase(0, strlen(noise));
    }
    failure = absl::StrCat("device server ", spec.kind, " refused to start: ", description);
  }
  if (!failure.empty()) {
    process->stop();
    return absl::FailedPreconditionError(failure);
  }
  process->remote->allow(kj::mv(lines), spec.mayExit);
  return process;
}

std::string DeviceProcess::stop() {
  if (childPid <= 0) return "already stopped";
  rpc = nullptr;
  network = nullptr;
  stream = nullptr;  // the server sees end-of-file and exits
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

DeviceProcess::~DeviceProcess() { stop(); }

}  // namespace bulkhead
