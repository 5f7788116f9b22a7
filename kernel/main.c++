// bulkhead: parse the command line, build the VM and its devices explicitly, run it.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <absl/strings/str_format.h>
#include <kj/async-unix.h>

#include "demo-guest.h"
#include "kernel/base/errno-status.h"
#include "kernel/base/log.h"
#include "kernel/base/status-macros.h"
#include "kernel/boot/bios.h"
#include "kernel/boot/flat.h"
#include "kernel/boot/linux.h"
#include "kernel/boot/memory-map.h"
#include "kernel/boot/mp-table.h"
#include "kernel/boot/multiboot.h"
#include "kernel/exit-status.h"
#include "kernel/options.h"
#include "kernel/supervisor/device-process.h"
#include "kernel/vm.h"

namespace bulkhead {
namespace {

constexpr uint64_t MAX_IMAGE_BYTES = 1ull << 30;
constexpr uint64_t DETERMINISTIC_RTC_TIME = 946684800;  // 2000-01-01 00:00:00 UTC

absl::StatusOr<std::vector<uint8_t>> readImage(const std::string& path, const char* what) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoStatus(absl::StrFormat("cannot read %s %s", what, path));
  kj::AutoCloseFd owned(fd);
  struct stat info;
  if (fstat(fd, &info) != 0) return errnoStatus(absl::StrFormat("cannot stat %s %s", what, path));
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s %s is not a regular file", what, path));
  }
  if (static_cast<uint64_t>(info.st_size) > MAX_IMAGE_BYTES) {
    return absl::InvalidArgumentError(absl::StrFormat("%s %s is larger than 1 GiB", what, path));
  }
  std::vector<uint8_t> bytes(info.st_size);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errnoStatus(absl::StrFormat("reading %s %s", what, path));
    done += n;
  }
  return bytes;
}

// Input for the serial line only when select/epoll can watch it (a terminal, pipe or socket).
bool pollable(int fd) {
  struct stat info;
  if (fstat(fd, &info) != 0) return false;
  return isatty(fd) || S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode);
}

absl::StatusOr<DeviceSpec> serialSpec(const Options& options) {
  DeviceSpec spec;
  spec.kind = "serial";
  spec.options = options.serialOptions;
  RETURN_IF_ERROR(takePolicyOptions(spec.options, spec.policy));
  if (options.serial == Options::Serial::FILE) {
    int fd = open(options.serialPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errnoStatus(absl::StrFormat("--serial: cannot open %s", options.serialPath));
    spec.output = kj::AutoCloseFd(fd);
    return spec;
  }
  // Output is written by the core from the device's committed output log (exactly once);
  // input goes to the server directly.
  spec.output = kj::AutoCloseFd(fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3));
  if (pollable(STDIN_FILENO)) spec.backends.emplace_back(fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3));
  return spec;
}

// A virtio-blk disk: the core opens the image (the server may open nothing) and passes it.
absl::Status openDisk(DeviceSpec& spec) {
  std::string path;
  bool readOnly = false;
  for (auto it = spec.options.begin(); it != spec.options.end();) {
    if (it->first == "path") {
      path = it->second;
      it = spec.options.erase(it);
      continue;
    }
    if (it->first == "readonly") readOnly = it->second != "off";
    ++it;
  }
  if (path.empty()) return absl::InvalidArgumentError("needs path=IMAGE (a raw disk image)");
  int fd = open(path.c_str(), (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot open disk image %s%s: %s", path, readOnly ? "" : " for writing", strerror(errno)));
  }
  kj::AutoCloseFd image(fd);
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("disk image %s is not a regular file", path));
  }
  if (info.st_size < 512) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk image %s holds %d bytes, less than one 512-byte sector", path, info.st_size));
  }
  spec.backends.push_back(std::move(image));
  return absl::OkStatus();
}

// A virtio-net backend: the core makes the socket or opens the tap (the server may open nothing).
absl::Status openNet(DeviceSpec& spec) {
  std::string socketPath, tapName;
  bool listening = false;
  for (auto it = spec.options.begin(); it != spec.options.end();) {
    if (it->first == "socket" || it->first == "tap") {
      (it->first == "socket" ? socketPath : tapName) = it->second;
      it = spec.options.erase(it);
      continue;
    }
    if (it->first == "listen") listening = it->second == "on";
    ++it;
  }
  if (!socketPath.empty() && !tapName.empty()) {
    return absl::InvalidArgumentError("give socket=PATH or tap=NAME, not both");
  }
  if (!tapName.empty()) {
    if (listening) return absl::InvalidArgumentError("listen applies to socket=PATH only");
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return errnoStatus("cannot open /dev/net/tun for tap=" + tapName);
    kj::AutoCloseFd tap(fd);
    ifreq request{};
    if (tapName.size() >= sizeof(request.ifr_name)) {
      return absl::InvalidArgumentError("tap=" + tapName + ": the name is too long");
    }
    strncpy(request.ifr_name, tapName.c_str(), sizeof(request.ifr_name) - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(fd, TUNSETIFF, &request) != 0) {
      return errnoStatus("tap=" + tapName +
                         ": TUNSETIFF failed (needs CAP_NET_ADMIN or a tap "
                         "owned by this user)");
    }
    spec.backends.push_back(std::move(tap));
    return absl::OkStatus();
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socketPath.empty() || socketPath.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError("socket=PATH needs a path of at most 107 bytes");
  }
  strncpy(address.sun_path, socketPath.c_str(), sizeof(address.sun_path) - 1);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoStatus("socket");
  kj::AutoCloseFd sock(fd);
  auto* raw = reinterpret_cast<sockaddr*>(&address);
  if (listening) {
    struct stat info;
    // A socket left by an earlier run is replaced; anything else at PATH is not touched.
    if (lstat(socketPath.c_str(), &info) == 0 && S_ISSOCK(info.st_mode)) unlink(socketPath.c_str());
    if (bind(fd, raw, sizeof(address)) != 0 || listen(fd, 1) != 0) {
      return errnoStatus("cannot listen on socket=" + socketPath);
    }
  } else {
    // The listening VM may still be starting: try for up to 10 s.
    int result = -1;
    for (int attempt = 0; attempt < 200; ++attempt) {
      result = connect(fd, raw, sizeof(address));
      if (result == 0 || (errno != ENOENT && errno != ECONNREFUSED)) break;
      usleep(50000);
    }
    if (result != 0) {
      return errnoStatus("cannot connect to socket=" + socketPath +
                         " (is a VM with --net socket=" + socketPath + ",listen running?)");
    }
  }
  spec.backends.push_back(std::move(sock));
  return absl::OkStatus();
}

absl::Status loadGuest(Vm& vm, const Options& options, std::vector<uint8_t>& kernelImage) {
  BootState state;
  if (!options.bios.empty()) {
    std::string path = options.bios == "seabios" ? DEBIAN_SEABIOS : options.bios;
    ASSIGN_OR_RETURN(std::vector<uint8_t> image, readImage(path, "BIOS image"));
    absl::StatusOr<BootState> loaded =
        loadBios(vm.memory(), kj::arrayPtr(image.data(), image.size()));
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--bios %s: %s", path, loaded.status().message()));
    }
    for (const RamRegion& rom : vm.memory().roms()) RETURN_IF_ERROR(vm.mapRom(rom));
    return vm.setBootState(*loaded);
  }
  if (!options.flat.empty()) {
    ASSIGN_OR_RETURN(std::vector<uint8_t> image, readImage(options.flat, "flat image"));
    absl::StatusOr<BootState> loaded = loadFlat(
        vm.memory(), kj::arrayPtr(image.data(), image.size()), options.entry, options.mode);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("flat image %s: %s", options.flat, loaded.status().message()));
    }
    state = *loaded;
  } else {
    auto kernel = kj::arrayPtr(kernelImage.data(), kernelImage.size());
    if (isBzImage(kernel) || isElf64(kernel)) {
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
        return absl::InvalidArgumentError(
            absl::StrFormat("kernel %s: %s", options.kernel, loaded.status().message()));
      }
      return vm.setBootState(*loaded);
    }
    if (!options.initrd.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--initrd: kernel %s is not a Linux bzImage (Multiboot kernels take --module)",
          options.kernel));
    }
    std::vector<std::vector<uint8_t>> moduleImages;
    std::vector<MultibootModule> modules;
    for (const std::string& module : options.modules) {
      std::string path = module.substr(0, module.find(' '));
      ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, readImage(path, "module"));
      moduleImages.push_back(std::move(bytes));
    }
    for (size_t i = 0; i < moduleImages.size(); ++i) {
      modules.push_back(
          {kj::arrayPtr(moduleImages[i].data(), moduleImages[i].size()), options.modules[i]});
    }
    absl::StatusOr<BootState> loaded = loadMultiboot(
        vm.memory(), kj::arrayPtr(kernelImage.data(), kernelImage.size()),
        options.kernel + (options.cmdline.empty() ? "" : " " + options.cmdline), modules);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("kernel %s: %s", options.kernel, loaded.status().message()));
    }
    state = *loaded;
  }
  return vm.setBootState(state);
}

int run(Options options) {
  std::vector<uint8_t> kernelImage;
  if (options.command == Options::Command::DEMO) {
    kernelImage.assign(DEMO_GUEST, DEMO_GUEST + sizeof(DEMO_GUEST));
    options.kernel = "demo";
    options.devices.push_back({"debug-exit", {}});
  } else if (!options.kernel.empty()) {
    absl::StatusOr<std::vector<uint8_t>> image = readImage(options.kernel, "kernel");
    if (!image.ok()) {
      logLine(image.status().message());
      return EXIT_BAD_INPUT;
    }
    kernelImage = std::move(*image);
  }

  // The fault plan, read before anything starts; it is checked once the devices exist.
  std::string planText;
  if (!options.faultsPath.empty()) {
    absl::StatusOr<std::vector<uint8_t>> text = readImage(options.faultsPath, "fault plan");
    if (!text.ok()) {
      logLine(text.status().message());
      return EXIT_BAD_INPUT;
    }
    planText.assign(text->begin(), text->end());
  }

  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::AsyncIoContext io = kj::setupAsyncIo();
  VmConfig config;
  config.memoryBytes = options.memoryBytes;
  config.cpus = options.cpus;
  config.cpu = options.cpu;
  config.accel = options.accel;
  config.deterministic = options.deterministic;
  // BIOS and Linux guests calibrate their clocks with the PIT.
  auto kernel = kj::arrayPtr(kernelImage.data(), kernelImage.size());
  bool linuxGuest =
      options.bios.empty() && options.flat.empty() && (isBzImage(kernel) || isElf64(kernel));
  config.pit = !options.bios.empty() || linuxGuest;
  config.handleSignals = true;
  config.faultLog = options.faultLog;
  config.controlPath = options.controlPath;
  config.traceExits = options.traceExits;
  config.gdbPort = options.gdbPort;
  config.tracePath = options.tracePath;
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::create(config, io);
  if (!vm.ok()) {
    logLine(vm.status().message());
    return vm.status().code() == absl::StatusCode::kInvalidArgument ||
                   vm.status().code() == absl::StatusCode::kNotFound
               ? EXIT_BAD_INPUT
               : EXIT_HOST_FAILURE;
  }
  absl::Status loaded = loadGuest(**vm, options, kernelImage);
  if (!loaded.ok()) {
    logLine(loaded.message());
    return loaded.code() == absl::StatusCode::kInvalidArgument ||
                   loaded.code() == absl::StatusCode::kNotFound
               ? EXIT_BAD_INPUT
               : EXIT_HOST_FAILURE;
  }
  std::vector<DeviceSpec> specs;
  if (!options.bios.empty() || linuxGuest) {
    // The PC platform a BIOS expects (Linux uses its clock and reset line too), each in its
    // own process like any device.
    DeviceSpec cmos;
    cmos.kind = "cmos";
    uint64_t low = (*vm)->memory().lowSize();
    cmos.options = {{"low", std::to_string(low)},
                    {"high", std::to_string((*vm)->memory().size() - low)},
                    {"cpus", std::to_string(options.cpus)}};
    specs.push_back(std::move(cmos));
    DeviceSpec keyboard;
    keyboard.kind = "i8042";
    keyboard.mayExit = true;  // its reset line ends the VM
    specs.push_back(std::move(keyboard));
  }
  if (!options.bios.empty()) {
    DeviceSpec firmware;
    firmware.kind = "fw-cfg";
    std::string e820;
    for (const MemoryMapEntry& entry : pcMemoryMap((*vm)->memory())) {
      e820 += absl::StrFormat("%s%x:%x:%x", e820.empty() ? "" : ";", entry.base, entry.length,
                              entry.type);
    }
    firmware.options = {{"ram", std::to_string((*vm)->memory().size())},
                        {"cpus", std::to_string(options.cpus)},
                        {"e820", e820}};
    specs.push_back(std::move(firmware));
  }
  if (options.serial != Options::Serial::NONE) {
    absl::StatusOr<DeviceSpec> serial = serialSpec(options);
    if (!serial.ok()) {
      logLine(absl::StrCat("--serial: ", serial.status().message()));
      return EXIT_BAD_INPUT;
    }
    specs.push_back(std::move(*serial));
  }
  for (const DeviceArgument& device : options.devices) {
    DeviceSpec spec;
    spec.kind = device.kind;
    spec.options = device.options;
    spec.mayExit = device.kind == "debug-exit";
    spec.dma = device.kind.rfind("virtio-", 0) == 0;
    absl::Status policy = takePolicyOptions(spec.options, spec.policy);
    if (policy.ok() && (device.kind == "virtio-blk" || device.kind == "ide")) {
      policy = openDisk(spec);
    }
    if (policy.ok() && device.kind == "virtio-net") policy = openNet(spec);
    if (device.kind == "debugcon") {
      spec.output = kj::AutoCloseFd(fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3));
    }
    if (device.kind == "virtio-console") {
      // Output to standard output, through the output log (exactly once); standard input too,
      // unless the serial port already reads it.
      spec.output = kj::AutoCloseFd(fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3));
      if (options.serial != Options::Serial::STDIO && pollable(STDIN_FILENO)) {
        spec.backends.emplace_back(fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3));
      }
    }
    if (!policy.ok()) {
      const char* flag = device.kind == "virtio-blk" || device.kind == "ide" ? "disk"
                         : device.kind == "virtio-net"                       ? "net"
                                                                             : "device";
      logLine(absl::StrFormat("--%s: %s", flag, policy.message()));
      return EXIT_BAD_INPUT;
    }
    specs.push_back(std::move(spec));
  }
  for (DeviceSpec& spec : specs) {
    // --deterministic: the RTC reads a fixed time (2000-01-01 00:00:00 UTC), not the host's,
    // which would change what the guest computes from run to run (docs/emu.md).
    auto timed = [](const auto& option) { return option.first == "time"; };
    if (options.deterministic && spec.kind == "cmos" &&
        std::none_of(spec.options.begin(), spec.options.end(), timed)) {
      spec.options.push_back({"time", std::to_string(DETERMINISTIC_RTC_TIME)});
    }
    absl::Status added = (*vm)->addDevice(std::move(spec));
    if (!added.ok()) {
      logLine(added.message());
      return EXIT_BAD_INPUT;
    }
  }
  if (linuxGuest) {
    // Linux finds its CPUs, the IOAPIC and the PCI interrupt wiring here; the devices are
    // known only now.
    std::vector<PciInterruptRoute> routes;
    for (auto [slot, gsi] : (*vm)->pci().interruptRoutes()) routes.push_back({slot, gsi});
    absl::Status written = writeMpTable((*vm)->memory(), options.cpus, routes);
    if (!written.ok()) {
      logLine(written.message());
      return EXIT_BAD_INPUT;
    }
  }
  if (!options.faultsPath.empty()) {
    (*vm)->setFaultSeed(options.faultSeed);
    absl::Status loaded = (*vm)->loadFaults(planText);
    if (!loaded.ok()) {
      logLine(absl::StrCat(options.faultsPath, ": ", loaded.message()));
      return EXIT_BAD_INPUT;
    }
    (*vm)->applyFaults().wait(io.waitScope);
  }
  return (*vm)->run();
}

}  // namespace
}  // namespace bulkhead

int main(int argc, char** argv) {
  std::vector<std::string> arguments(argv + 1, argv + argc);
  absl::StatusOr<bulkhead::Options> options = bulkhead::parseOptions(arguments);
  if (!options.ok()) {
    bulkhead::logLine(options.status().message());
    return bulkhead::EXIT_BAD_INPUT;
  }
  switch (options->command) {
    case bulkhead::Options::Command::HELP:
      fputs(bulkhead::usageText(), stdout);
      return 0;
    case bulkhead::Options::Command::VERSION:
      puts("bulkhead " BULKHEAD_VERSION);
      return 0;
    case bulkhead::Options::Command::RUN:
    case bulkhead::Options::Command::DEMO:
      return bulkhead::run(std::move(*options));
  }
  return bulkhead::EXIT_BAD_INPUT;
}
