#include "kernel/machine/machine.h"

#include <unistd.h>

#include <algorithm>
#include <string>

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include "kernel/base/log.h"
#include "kernel/base/status-macros.h"
#include "kernel/boot/bios.h"
#include "kernel/boot/flat.h"
#include "kernel/boot/linux.h"
#include "kernel/boot/memory-map.h"
#include "kernel/boot/mp-table.h"
#include "kernel/boot/multiboot.h"
#include "kernel/console/terminal.h"
#include "kernel/machine/device-kinds.h"
#include "kernel/machine/host-backends.h"

namespace bulkhead {

namespace {

constexpr uint64_t DETERMINISTIC_RTC_TIME = 946684800;  // 2000-01-01 00:00:00 UTC

enum class Boot { BIOS, FLAT, LINUX, MULTIBOOT };

Boot bootKind(const Options& options, kj::ArrayPtr<const uint8_t> kernel) {
  if (!options.bios.empty()) return Boot::BIOS;
  if (!options.flat.empty()) return Boot::FLAT;
  return isBzImage(kernel) || isElf64(kernel) ? Boot::LINUX : Boot::MULTIBOOT;
}

absl::Status badInput(const std::string& prefix, const absl::Status& status) {
  return absl::InvalidArgumentError(absl::StrCat(prefix, status.message()));
}

// The platform servers of --machine pc: the CMOS/RTC and the i8042 (whose reset line ends the
// VM), and fw_cfg, which only a BIOS reads.
std::vector<DeviceSpec> platformDevices(const Options& options, Vm& vm, Boot boot) {
  std::vector<DeviceSpec> specs;
  if (options.machine != Options::Machine::PC) return specs;
  uint64_t low = vm.memory().lowSize();
  DeviceOptions cmos = {{"low", std::to_string(low)},
                        {"high", std::to_string(vm.memory().size() - low)},
                        {"cpus", std::to_string(options.cpus)}};
  // --deterministic: the RTC reads a fixed time, not the host's, which would change what the
  // guest computes from run to run (docs/emu.md).
  if (options.deterministic) cmos.push_back({"time", std::to_string(DETERMINISTIC_RTC_TIME)});
  specs.push_back(deviceSpecFor("cmos", std::move(cmos)));
  specs.push_back(deviceSpecFor("i8042", {}));
  if (boot == Boot::BIOS) {
    std::string e820;
    for (const MemoryMapEntry& entry : pcMemoryMap(vm.memory())) {
      e820 += absl::StrFormat("%s%x:%x:%x", e820.empty() ? "" : ";", entry.base, entry.length,
                              entry.type);
    }
    specs.push_back(deviceSpecFor("fw-cfg", {{"ram", std::to_string(vm.memory().size())},
                                             {"cpus", std::to_string(options.cpus)},
                                             {"e820", e820}}));
  }
  return specs;
}

absl::StatusOr<DeviceSpec> serialDevice(const Options& options, Vm& vm) {
  DeviceSpec spec = deviceSpecFor("serial", options.serialOptions);
  RETURN_IF_ERROR(takePolicyOptions(spec.options, spec.policy));
  if (options.serial == Options::Serial::FILE) {
    ASSIGN_OR_RETURN(spec.output, openOutputFile(options.serialPath, /*truncate=*/true));
    return spec;
  }
  // A terminal becomes the console (kernel/console/terminal.h): the core reads it, and hands
  // the server what is typed for the guest. Anything else on stdin goes to the server as is.
  // A terminal this VM does not have in the foreground gives no input at all: a server reading
  // it would be stopped by SIGTTIN.
  std::unique_ptr<TerminalConsole> console = TerminalConsole::open();
  bool stdinFree = console == nullptr && !isatty(STDIN_FILENO);
  ASSIGN_OR_RETURN(HostSide side, openHostSide(HostBackend::STDIO, spec.options, stdinFree));
  spec.output = kj::mv(side.output);
  spec.backends = kj::mv(side.backends);
  if (console != nullptr) {
    spec.backends.push_back(console->takeGuestInput());
    vm.setConsole(std::move(console));
  }
  return spec;
}

// A device from --device, --disk or --net, with what its row grants and its backend opened.
absl::StatusOr<DeviceSpec> requestedDevice(const Options& options, const DeviceArgument& device) {
  DeviceKind row = deviceKind(device.kind);
  DeviceSpec spec = deviceSpecFor(device.kind, device.options);
  absl::Status opened = takePolicyOptions(spec.options, spec.policy);
  if (opened.ok()) {
    bool stdinFree = options.serial != Options::Serial::STDIO;
    absl::StatusOr<HostSide> side = openHostSide(row.backend, spec.options, stdinFree);
    if (side.ok()) {
      spec.output = kj::mv(side->output);
      spec.backends = kj::mv(side->backends);
    }
    opened = side.status();
  }
  if (!opened.ok()) {
    return badInput(absl::StrCat(row.alias.empty() ? "--device" : row.alias, ": "), opened);
  }
  return spec;
}

absl::StatusOr<BootState> loadGuest(Vm& vm, const Options& options, Boot boot,
                                    kj::ArrayPtr<const uint8_t> kernel) {
  switch (boot) {
    case Boot::BIOS: {
      std::string path = options.bios == "seabios" ? DEBIAN_SEABIOS : options.bios;
      ASSIGN_OR_RETURN(std::vector<uint8_t> image, readImage(path, "BIOS image"));
      absl::StatusOr<BootState> loaded =
          loadBios(vm.memory(), kj::arrayPtr(image.data(), image.size()));
      if (!loaded.ok()) return badInput(absl::StrFormat("--bios %s: ", path), loaded.status());
      for (const RamRegion& rom : vm.memory().roms()) RETURN_IF_ERROR(vm.mapRom(rom));
      return loaded;
    }
    case Boot::FLAT: {
      ASSIGN_OR_RETURN(std::vector<uint8_t> image, readImage(options.flat, "flat image"));
      absl::StatusOr<BootState> loaded = loadFlat(
          vm.memory(), kj::arrayPtr(image.data(), image.size()), options.entry, options.mode);
      if (!loaded.ok()) {
        return badInput(absl::StrFormat("flat image %s: ", options.flat), loaded.status());
      }
      return loaded;
    }
    case Boot::LINUX: {
      if (!options.modules.empty()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "kernel %s is a Linux kernel, which takes --initrd, not --module", options.kernel));
      }
      std::vector<uint8_t> initrd;
      if (!options.initrd.empty()) {
        ASSIGN_OR_RETURN(initrd, readImage(options.initrd, "initrd"));
      }
      auto initrdBytes = kj::arrayPtr(initrd.data(), initrd.size());
      absl::StatusOr<BootState> loaded =
          isBzImage(kernel) ? loadLinux(vm.memory(), kernel, initrdBytes, options.cmdline)
                            : loadLinuxElf(vm.memory(), kernel, initrdBytes, options.cmdline);
      if (!loaded.ok()) {
        return badInput(absl::StrFormat("kernel %s: ", options.kernel), loaded.status());
      }
      return loaded;
    }
    case Boot::MULTIBOOT: {
      if (!options.initrd.empty()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--initrd: kernel %s is not a Linux bzImage (Multiboot kernels take --module)",
            options.kernel));
      }
      std::vector<std::vector<uint8_t>> images;
      std::vector<MultibootModule> modules;
      for (const std::string& module : options.modules) {
        ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                         readImage(module.substr(0, module.find(' ')), "module"));
        images.push_back(std::move(bytes));
      }
      for (size_t i = 0; i < images.size(); ++i) {
        modules.push_back({kj::arrayPtr(images[i].data(), images[i].size()), options.modules[i]});
      }
      absl::StatusOr<BootState> loaded = loadMultiboot(
          vm.memory(), kernel,
          options.kernel + (options.cmdline.empty() ? "" : " " + options.cmdline), modules);
      if (!loaded.ok()) {
        return badInput(absl::StrFormat("kernel %s: ", options.kernel), loaded.status());
      }
      return loaded;
    }
  }
  return absl::InternalError("unknown boot kind");
}

}  // namespace

DeviceSpec deviceSpecFor(const std::string& kind, DeviceOptions options) {
  DeviceKind row = deviceKind(kind);
  DeviceSpec spec;
  spec.kind = kind;
  spec.options = std::move(options);
  spec.mayExit = row.mayExit;
  spec.dma = row.dma;
  spec.interrupts = row.interrupts;
  return spec;
}

absl::StatusOr<std::unique_ptr<Vm>> buildMachine(const Options& options,
                                                 std::vector<uint8_t> kernelImage,
                                                 kj::AsyncIoContext& io) {
  if (kernelImage.empty() && !options.kernel.empty()) {
    ASSIGN_OR_RETURN(kernelImage, readImage(options.kernel, "kernel"));
  }
  auto kernel = kj::arrayPtr(kernelImage.data(), kernelImage.size()).asConst();
  Boot boot = bootKind(options, kernel);
  // The fault plan is read before anything starts and checked once the devices exist.
  std::string planText;
  if (!options.faultsPath.empty()) {
    ASSIGN_OR_RETURN(std::vector<uint8_t> text, readImage(options.faultsPath, "fault plan"));
    planText.assign(text.begin(), text.end());
  }

  if (!options.controlPath.empty()) {
    absl::Status free = checkListeningPath(options.controlPath);
    if (!free.ok()) return badInput("--control ", free);
  }
  if (options.gdbPort != 0) {
    absl::Status free = checkLocalTcpPort(options.gdbPort);
    if (!free.ok()) return badInput(absl::StrFormat("--gdb %u: ", options.gdbPort), free);
  }

  setVerbose(options.verbose);
  VmConfig config;
  config.memoryBytes = options.memoryBytes;
  config.cpus = options.cpus;
  config.cpu = options.cpu;
  config.accel = options.accel;
  config.deterministic = options.deterministic;
  config.pit = options.machine == Options::Machine::PC;
  config.handleSignals = true;
  config.faultLog = options.faultLog;
  config.controlPath = options.controlPath;
  config.traceExits = options.traceExits;
  config.gdbPort = options.gdbPort;
  config.tracePath = options.tracePath;
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm, Vm::create(config, io));
  ASSIGN_OR_RETURN(BootState state, loadGuest(*vm, options, boot, kernel));
  RETURN_IF_ERROR(vm->setBootState(state));

  std::vector<DeviceSpec> specs = platformDevices(options, *vm, boot);
  if (options.serial != Options::Serial::NONE) {
    absl::StatusOr<DeviceSpec> serial = serialDevice(options, *vm);
    if (!serial.ok()) return badInput("--serial: ", serial.status());
    specs.push_back(std::move(*serial));
  }
  for (const DeviceArgument& device : options.devices) {
    ASSIGN_OR_RETURN(DeviceSpec spec, requestedDevice(options, device));
    specs.push_back(std::move(spec));
  }
  for (DeviceSpec& spec : specs) {
    absl::Status added = vm->addDevice(std::move(spec));
    if (!added.ok()) return badInput("", added);
  }
  if (boot == Boot::LINUX) {
    // Linux finds its CPUs, the IOAPIC and the PCI interrupt wiring here; the devices are
    // known only now.
    std::vector<PciInterruptRoute> routes;
    for (auto [slot, gsi] : vm->pci().interruptRoutes()) routes.push_back({slot, gsi});
    absl::Status written = writeMpTable(vm->memory(), options.cpus, routes);
    if (!written.ok()) return badInput("", written);
  }
  if (!options.faultsPath.empty()) {
    vm->setFaultSeed(options.faultSeed);
    absl::Status loaded = vm->loadFaults(planText);
    if (!loaded.ok()) return badInput(absl::StrCat(options.faultsPath, ": "), loaded);
    vm->applyFaults().wait(io.waitScope);
  }
  return vm;
}

}  // namespace bulkhead
