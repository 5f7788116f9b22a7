// One supervised device: its channel, which outlives any server process, and the server
// process of the moment.
//
// The core forks the server binary with one end of a unix socketpair as file descriptor 3 (and
// nothing else but stderr), in new namespaces and as an unprivileged user where the host
// allows, and asks it over Cap'n Proto RPC to attach to the channel (ring memfd, eventfds and
// state region, passed as file descriptors). It checks what address ranges and interrupt
// lines the server wants and registers them on the bus.
//
// The supervisor part: a pidfd tells the core the moment the server dies; a watchdog kills a
// server that stops taking requests. Under the `hidden` policy the core then starts a new
// server on the same channel, which resumes from the state region's last commit; after too
// many restarts in a window, or at once under the `error` policy, the device is fenced.
// docs/recovery.md describes the protocol.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>

#include "kernel/bus/io-bus.h"
#include "kernel/bus/pci-host.h"
#include "kernel/supervisor/remote-device.h"

namespace bulkhead {

struct RestartPolicy {
  enum class OnFailure { HIDDEN, ERROR };
  OnFailure onFailure = OnFailure::HIDDEN;
  unsigned maxRestarts = 20;  // more than this many in `window` fences
  std::chrono::milliseconds window{10000};
  std::chrono::milliseconds watchdog{250};  // a request waiting this long unserved: hung
};

struct DmaGrant {
  int fd;  // the guest-RAM memfd (the core keeps it open)
  uint64_t offset;
  uint64_t guestPhysical;
  uint64_t size;
};

// What PCI and DMA devices need from the VM.
class DevicePlatform {
 public:
  virtual ~DevicePlatform() noexcept(false) = default;
  virtual PciHost& pci() = 0;
  // Guest RAM, for devices that do DMA.
  virtual std::vector<DmaGrant> dmaGrants() = 0;
  // Routes `fd` to GSI `gsi` (level-triggered with `resampleFd`); an error where the host
  // has no irqfd, and the device's interrupt then travels the channel.
  virtual absl::Status addIrqfd(uint32_t gsi, int fd, int resampleFd) = 0;
  // `count` GSIs for MSI-X vectors, never given out again; the first of them.
  virtual absl::StatusOr<uint32_t> reserveMsiGsis(unsigned count) = 0;
};

struct DeviceSpec {
  std::string kind;  // names the server binary: bulkhead-<kind>
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<kj::AutoCloseFd> backends;  // host files the server may use
  kj::AutoCloseFd output;                 // where the device's output log goes (may be null)
  bool mayExit = false;                   // may end the VM (debug-exit)
  bool dma = false;                       // gets guest RAM as DMA windows (virtio)
  bool interrupts = false;                // may raise interrupts
  DevicePlatform* platform = nullptr;     // for PCI functions and DMA
  RestartPolicy policy;
  // The fault plan's rules for this device (selectFaultRules), or null for none.
  std::shared_ptr<capnp::MallocMessageBuilder> faults;
};

// Where the server binary for `kind` is: $BULKHEAD_SERVER_DIR, then the build tree's
// servers/<kind>/ beside the core's own directory, then the core's own directory.
absl::StatusOr<std::string> findServer(const std::string& kind);

// Takes the core's own keys (on-failure=hidden|error, restarts=N/SECONDSs, watchdog=MSms) out
// of `options` into `policy`; an error names a malformed one.
absl::Status takePolicyOptions(std::vector<std::pair<std::string, std::string>>& options,
                               RestartPolicy& policy);

class DeviceProcess {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceProcess>> start(kj::AsyncIoContext& io,
                                                              DeviceSpec spec, DeviceSink& sink,
                                                              IoBus& bus);
  ~DeviceProcess();

  RemoteDevice& device() { return *remote; }
  pid_t pid() const { return childPid; }
  const std::string& kind() const { return spec.kind; }
  unsigned restarts() const { return restartCount; }

  // Runs for the VM's life: restarts the server each time it dies, or fences the device.
  kj::Promise<void> supervise();
  // Whether the current server process is still running.
  bool alive();
  // Kills a server that has let a request wait too long; supervise() then restarts it.
  void checkWatchdog(std::chrono::steady_clock::time_point now);
  // Stops supervising, closes the channel and reaps the process. Returns how it ended.
  std::string stop();

  // Replaces the device's fault rules, on the running server and for its successors.
  kj::Promise<void> setFaults(std::shared_ptr<capnp::MallocMessageBuilder> rules);

 private:
  DeviceProcess(kj::AsyncIoContext& io, DeviceSpec spec, IoBus& bus)
      : io(io), spec(std::move(spec)), bus(bus) {}

  // A server exec'd in its jail, waiting on its channel for an attach.
  struct Spare {
    pid_t pid = -1;
    kj::AutoCloseFd pidfd;
    kj::AutoCloseFd socket;  // the core's end of its channel
  };
  absl::StatusOr<Spare> launch();
  // Makes a server the current incarnation: the spare when one is alive, else a new one.
  absl::Status spawn();
  // Starts the next restart's server ahead of time (docs/recovery.md); it waits for an attach.
  void prepareSpare();
  void dropSpare();
  // Attaches the current incarnation; resolves to OK or to why it failed. The first attach that
  // gets its answer places the device (its ranges, its PCI function); later ones must match it.
  kj::Promise<absl::Status> attach();
  // The first incarnation's PCI function: put it on the bus, make its doorbells and interrupt.
  absl::Status addPciFunction(protocol::PciFunction::Reader pci,
                              capnp::List<protocol::Doorbell>::Reader doorbells);
  // The PCI function's MSI-X vectors: a GSI each, and an irqfd each where the host has them.
  absl::Status addMsiVectors(unsigned count);
  // Hands the server its doorbells and interrupt (after every attach).
  kj::Promise<absl::Status> wire();
  kj::Promise<void> whenServerExits();
  std::string reap();
  // After a failed first attach: whether the server died from a signal (killed, or crashed)
  // rather than refusing. Waits up to 200 ms for it to exit, and reaps it.
  bool diedFromSignal();
  void killServer();
  // True when the signal reached a live server.
  bool signalServer(int signal);
  // A supervisor fault (kill, stop, sever) from the device's fault plan; any thread.
  void injectFault(protocol::FaultAction::Which action);
  void dropIncarnation();

  kj::AsyncIoContext& io;
  DeviceSpec spec;
  IoBus& bus;
  std::string serverPath;
  kj::AutoCloseFd serverBinary;  // opened once, exec'd by descriptor
  kj::AutoCloseFd ringFd, toDeviceFd, toCoreFd, stateFd;
  void* stateMapping = nullptr;
  std::unique_ptr<RemoteDevice> remote;
  std::vector<std::tuple<Space, uint64_t, uint64_t, bool>> ranges;  // as first attached
  std::string pciShape;  // the first incarnation's PCI function and doorbells, to compare
  bool placed = false;   // `ranges` and the PCI function are on the buses
  std::vector<kj::AutoCloseFd> doorbellFds;
  kj::AutoCloseFd interruptFd, resampleFd;  // null when the interrupt travels the channel
  std::vector<kj::AutoCloseFd> vectorFds;   // MSI-X irqfds; empty when they travel the channel
  std::vector<uint32_t> msiGsis;            // each MSI-X vector's GSI
  uint32_t pciInterruptGsi = 0;

  std::mutex incarnationLock;  // pidfd and socketFd, used from vCPU threads by injectFault
  pid_t childPid = -1;
  kj::AutoCloseFd pidfd;
  int socketFd = -1;  // the core's end of the control connection (owned by `stream`)
  kj::Own<kj::UnixEventPort::FdObserver> pidObserver;
  kj::Own<kj::AsyncCapabilityStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;

  Spare spare;

  bool stopped = false;
  unsigned restartCount = 0;
  std::deque<std::chrono::steady_clock::time_point> recentRestarts;
  RateLimitedLog restartLog;
};

}  // namespace bulkhead
