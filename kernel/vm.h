// One virtual machine: guest RAM, the I/O bus, the vCPU threads, and the device servers.
//
// main() (or a test) builds a VmConfig, creates the Vm, adds devices and in-process handlers,
// then calls run(), which returns the process exit status (exit-status.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <absl/status/statusor.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>

#include "kernel/boot/boot-state.h"
#include "kernel/bus/io-bus.h"
#include "kernel/console/terminal.h"
#include "kernel/guestview/exit-trace.h"
#include "kernel/memory/guest-memory.h"
#include "kernel/supervisor/device-process.h"
#include "kernel/vcpu/vcpu.h"

namespace bulkhead {

class GdbStub;

struct VmConfig {
  uint64_t memoryBytes = 64 * MIB;
  unsigned cpus = 1;
  CpuModel cpu;  // --cpu
  // --accel: "kvm", "emu" (the software CPU), or "" for KVM where usable, else emu.
  std::string accel;
  // --deterministic (emu only): a virtual clock driven by the instruction count.
  bool deterministic = false;
  // The machine has an i8254 PIT (the backend's own: KVM's in-kernel one, or kernel/irqchip/).
  bool pit = false;
  // SIGINT, SIGTERM, SIGHUP and SIGQUIT end the VM cleanly; the caller must have called
  // kj::UnixEventPort::captureSignal() for each before creating the event loop.
  bool handleSignals = false;
  // Where each fired fault is recorded, one JSON object per line; "" logs them to stderr.
  std::string faultLog;
  // A unix socket to serve the control API on (protocols/control.capnp); "" for none.
  std::string controlPath;
  // Serve the GDB remote protocol on 127.0.0.1:gdbPort (0: no), starting with the vCPUs
  // stopped until the debugger continues them.
  uint16_t gdbPort = 0;
  // Trace every exit (--trace exits): to `tracePath`, or to stderr when it is empty.
  bool traceExits = false;
  std::string tracePath;
};

class Vm final : public DeviceSink, public DevicePlatform, private BusTracer {
 public:
  static absl::StatusOr<std::unique_ptr<Vm>> create(const VmConfig& config, kj::AsyncIoContext& io);
  ~Vm();

  GuestMemory& memory() { return *ram; }
  IoBus& bus() { return ioBus; }
  PciHost& pci() override { return pciHost; }

  // The host terminal as the console (kernel/console/terminal.h), served while the VM runs.
  void setConsole(std::unique_ptr<TerminalConsole> terminal);

  // Starts a device server and routes its ranges here.
  absl::Status addDevice(DeviceSpec spec);
  const std::vector<std::unique_ptr<DeviceProcess>>& devices() const { return processes; }

  // Sets every vCPU's starting state (vCPU 0 boots; others start the same way for now).
  absl::Status setBootState(const BootState& state);
  // A ROM region of guest memory, mapped for the guest (memory().addRom first).
  absl::Status mapRom(const RamRegion& rom) { return accel->mapRom(rom); }
  const char* accelName() const { return accel->name(); }

  // Runs the guest until it ends; returns the exit status.
  int run();

  // The fault plan (text form). loadFaults() parses and checks it against this VM's devices
  // and keeps it; applyFaults() hands each device its rules (none while disabled). The first
  // load happens before run(), the rest from the control socket.
  absl::Status loadFaults(const std::string& text);
  kj::Promise<void> applyFaults();
  const std::string& faultPlanText() const { return planText; }
  bool faultsEnabled() const { return planEnabled; }
  void setFaultsEnabled(bool enabled) { planEnabled = enabled; }
  void setFaultSeed(std::optional<uint64_t> seed) { seedOverride = seed; }

  // Parks every vCPU outside KVM_RUN, for a consistent view of the guest; false if one did not
  // stop within `timeout` (it is then resumed). Call resumeVcpus() when done.
  bool pauseVcpus(std::chrono::milliseconds timeout);
  void resumeVcpus();
  // While paused: one vCPU's registers.
  absl::StatusOr<ArchState> snapshot(unsigned vcpu);
  unsigned vcpuCount() const { return vcpus.size(); }
  // While paused: sets a vCPU's debugging (breakpoints, single step).
  absl::Status setDebug(unsigned vcpu, const GuestDebug& debug);

  // DevicePlatform.
  std::vector<DmaGrant> dmaGrants() override;
  absl::Status addIrqfd(uint32_t gsi, int fd, int resampleFd) override;
  absl::StatusOr<uint32_t> reserveMsiGsis(unsigned count) override;

  // DeviceSink: may be called from any thread.
  void setIrqLine(uint32_t line, bool level) override;
  void setMsiRoute(uint32_t gsi, uint64_t address, uint32_t data) override;
  void signalMsi(uint64_t address, uint32_t data) override;
  void requestExit(int status, const std::string& why) override;
  void faultFired(const std::string& device, const std::string& rule, const std::string& action,
                  uint64_t event) override;

 private:
  Vm(kj::AsyncIoContext& io, const VmConfig& config) : io(io), config(config) {}
  void vcpuLoop(Vcpu& vcpu);
  void parkIfPaused();
  // What the core does about a vCPU's exit (all but Kicked).
  void handleExit(Vcpu& vcpu, const VcpuExit& exit);
  // BusTracer (--trace exits): the access, the vCPU that made it and where it is.
  void traced(bool write, Space space, uint64_t address, unsigned size, uint64_t value) override;
  kj::Promise<void> serviceDevice(DeviceProcess& process, kj::UnixEventPort::FdObserver& observer);
  kj::Promise<void> watchHalts();
  kj::Promise<void> watchDevices();
  kj::Promise<void> watchDebugStops(kj::UnixEventPort::FdObserver& observer, GdbStub& stub);
  void shutDownDevices();

  kj::AsyncIoContext& io;
  VmConfig config;
  std::unique_ptr<Accelerator> accel;
  std::unique_ptr<GuestMemory> ram;
  std::unique_ptr<ExitTrace> trace;
  std::vector<std::unique_ptr<Vcpu>> vcpus;
  std::vector<std::thread> threads;
  IoBus ioBus;
  PciHost pciHost;
  std::vector<std::unique_ptr<DeviceProcess>> processes;

  std::atomic<bool> stopping{false};
  std::once_flag exitOnce;
  int status = 0;
  std::string reason;
  uint32_t faultGeneration = 0;  // of the plan last applied (applyFaults)
  std::unique_ptr<TerminalConsole> console;
  kj::AutoCloseFd stopEvent;
  std::mutex pauseLock;
  std::condition_variable pauseChanged;
  bool pauseRequested = false;
  unsigned parked = 0;
  bool debugStopPending = false;  // a vCPU stopped for the debugger; tell the event loop
  kj::AutoCloseFd debugEvent;
  RateLimitedLog irqFailures;
  std::mutex msiGsiLock;
  uint32_t nextMsiGsi = MSI_GSI_BASE;
  std::mutex faultLogLock;
  kj::AutoCloseFd faultLogFd;
  RateLimitedLog faultLines;
  std::string planText;
  bool planEnabled = true;
  std::optional<uint64_t> seedOverride;
  std::shared_ptr<capnp::MallocMessageBuilder> plan;
};

}  // namespace bulkhead
