#include "kernel/options.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <optional>

#include <absl/strings/str_format.h>
#include <absl/strings/str_split.h>

namespace bulkhead {

namespace {

absl::Status bad(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(message, "; see bulkhead --help"));
}

bool validName(const std::string& text) {
  if (text.empty() || text.size() > 32) return false;
  for (char c : text) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  }
  return true;
}

// KIND[,key=value]...: the kind names the server (bulkhead-KIND); the options go to it as they
// are, and the server refuses what it does not understand when it attaches.
absl::StatusOr<DeviceArgument> parseDevice(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  DeviceArgument device{parts[0], {}};
  if (!validName(device.kind)) {
    return bad(
        absl::StrFormat("--device '%s': a device kind is lower-case letters, digits and "
                        "dashes (e.g. debug-exit)",
                        device.kind));
  }
  if (device.kind == "serial") {
    return bad("--device serial: the serial port is configured with --serial");
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    std::pair<std::string, std::string> option = absl::StrSplit(parts[i], absl::MaxSplits('=', 1));
    if (!validName(option.first) || option.second.empty()) {
      return bad(
          absl::StrFormat("--device %s: option '%s' is not key=value", device.kind, parts[i]));
    }
    device.options.push_back(option);
  }
  return device;
}

}  // namespace

absl::StatusOr<uint64_t> parseNumber(const std::string& text) {
  if (text.empty() || text[0] == '-' || text[0] == '+') {
    return absl::InvalidArgumentError("not a number");
  }
  char* end = nullptr;
  errno = 0;
  unsigned long long value = strtoull(text.c_str(), &end, 0);
  if (errno != 0 || *end != '\0') return absl::InvalidArgumentError("not a number");
  return value;
}

absl::StatusOr<uint64_t> parseSize(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty size");
  uint64_t shift = 0;
  std::string digits = text;
  switch (text.back()) {
    case 'K':
    case 'k':
      shift = 10;
      break;
    case 'M':
    case 'm':
      shift = 20;
      break;
    case 'G':
    case 'g':
      shift = 30;
      break;
    default:
      break;
  }
  if (shift != 0) digits.pop_back();
  absl::StatusOr<uint64_t> value = parseNumber(digits);
  if (!value.ok() || *value == 0) return absl::InvalidArgumentError("not a size");
  if (*value > (uint64_t{1} << (40 - shift))) return absl::OutOfRangeError("too large");
  return *value << shift;
}

absl::StatusOr<Options> parseOptions(const std::vector<std::string>& arguments) {
  Options options;
  if (arguments.empty()) {
    return bad("no command given: use `bulkhead run ...` or `bulkhead demo`");
  }
  const std::string& command = arguments[0];
  if (command == "--help" || command == "-h" || command == "help") return options;
  if (command == "--version") {
    options.command = Options::Command::VERSION;
    return options;
  }
  if (command == "demo") {
    options.command = Options::Command::DEMO;
    if (arguments.size() > 1) return bad("demo takes no arguments");
    return options;
  }
  if (command != "run") {
    return bad(absl::StrFormat("unknown command '%s' (commands: run, demo)", command));
  }
  options.command = Options::Command::RUN;
  // Options that take a value, and whether they may be given more than once.
  static const std::map<std::string, bool> VALUED = {
      {"--kernel", false},  {"--flat", false},    {"--entry", false},      {"--mode", false},
      {"--cmdline", false}, {"--module", true},   {"--memory", false},     {"--cpus", false},
      {"--serial", false},  {"--machine", false}, {"--gdb", false},        {"--trace", false},
      {"--control", false}, {"--faults", false},  {"--fault-seed", false}, {"--fault-log", false},
      {"--device", true},   {"--bios", false},    {"--initrd", false},     {"--accel", false},
      {"--cpu", false},     {"--net", true},      {"--disk", true},
  };
  std::map<std::string, std::string> given;
  for (size_t i = 1; i < arguments.size(); ++i) {
    std::string flag = arguments[i];
    if (flag == "--help" || flag == "-h") {
      options.command = Options::Command::HELP;
      return options;
    }
    if (flag.rfind("--", 0) != 0) {
      return bad(absl::StrFormat("unexpected argument '%s' (options start with --)", flag));
    }
    // --option=value, as most command lines take it, or --option value.
    std::optional<std::string> inlineValue;
    if (size_t equals = flag.find('='); equals != std::string::npos) {
      inlineValue = flag.substr(equals + 1);
      flag.resize(equals);
    }
    if (flag == "--deterministic" || flag == "--verbose") {
      if (inlineValue) return bad(absl::StrFormat("%s takes no value", flag));
      (flag == "--verbose" ? options.verbose : options.deterministic) = true;
      continue;
    }
    auto known = VALUED.find(flag);
    if (known == VALUED.end()) return bad(absl::StrFormat("unknown option %s", flag));
    std::string value;
    if (inlineValue) {
      value = *inlineValue;
    } else {
      if (i + 1 >= arguments.size()) return bad(absl::StrFormat("%s needs a value", flag));
      value = arguments[++i];
      if (value.rfind("--", 0) == 0) {
        return bad(absl::StrFormat(
            "%s needs a value, and %s is the next option, not one (write %s=VALUE for a value "
            "that starts with --)",
            flag, value, flag));
      }
    }
    if (!known->second) {
      auto [earlier, first] = given.emplace(flag, value);
      if (!first) {
        return bad(absl::StrFormat("%s is given twice ('%s', then '%s'); give it once", flag,
                                   earlier->second, value));
      }
    }
    if (flag == "--kernel") {
      options.kernel = value;
    } else if (flag == "--flat") {
      options.flat = value;
    } else if (flag == "--entry") {
      absl::StatusOr<uint64_t> entry = parseNumber(value);
      if (!entry.ok()) {
        return bad(absl::StrFormat("--entry '%s' is not an address (e.g. 0x7c00)", value));
      }
      options.entry = *entry;
      options.entryGiven = true;
    } else if (flag == "--mode") {
      if (value == "16") {
        options.mode = CpuMode::REAL16;
      } else if (value == "32") {
        options.mode = CpuMode::PROTECTED32;
      } else if (value == "64") {
        options.mode = CpuMode::LONG64;
      } else {
        return bad(absl::StrFormat("--mode '%s' is not 16, 32 or 64", value));
      }
      options.modeGiven = true;
    } else if (flag == "--cmdline") {
      options.cmdline = value;
    } else if (flag == "--module") {
      options.modules.push_back(value);
    } else if (flag == "--memory") {
      absl::StatusOr<uint64_t> size = parseSize(value);
      uint64_t host = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
      bool tooLarge =
          size.ok() ? *size > host : size.status().code() == absl::StatusCode::kOutOfRange;
      if (tooLarge) {
        return bad(absl::StrFormat("--memory '%s' is more than this host's %uM of RAM", value,
                                   host >> 20));
      }
      if (!size.ok() || *size < (1 << 20) || *size % 4096 != 0) {
        return bad(absl::StrFormat(
            "--memory '%s' is not a size of at least 1M in whole pages (e.g. 64M or 1G)", value));
      }
      options.memoryBytes = *size;
    } else if (flag == "--cpus") {
      absl::StatusOr<uint64_t> cpus = parseNumber(value);
      if (!cpus.ok() || *cpus == 0 || *cpus > 64) {
        return bad(absl::StrFormat("--cpus '%s' is not a count from 1 to 64", value));
      }
      options.cpus = *cpus;
    } else if (flag == "--serial") {
      std::vector<std::string> parts = absl::StrSplit(value, ',');
      for (size_t part = 1; part < parts.size(); ++part) {
        std::pair<std::string, std::string> option =
            absl::StrSplit(parts[part], absl::MaxSplits('=', 1));
        if (!validName(option.first) || option.second.empty()) {
          return bad(absl::StrFormat("--serial: option '%s' is not key=value", parts[part]));
        }
        options.serialOptions.push_back(option);
      }
      const std::string& mode = parts[0];
      if (mode == "stdio") {
        options.serial = Options::Serial::STDIO;
      } else if (mode == "none") {
        options.serial = Options::Serial::NONE;
      } else if (mode.rfind("file:", 0) == 0 && mode.size() > 5) {
        options.serial = Options::Serial::FILE;
        options.serialPath = mode.substr(5);
      } else {
        return bad(absl::StrFormat("--serial '%s' is not stdio, none or file:PATH", mode));
      }
    } else if (flag == "--machine") {
      if (value == "pc") {
        options.machine = Options::Machine::PC;
      } else if (value == "minimal") {
        options.machine = Options::Machine::MINIMAL;
      } else {
        return bad(absl::StrFormat("--machine '%s' is not pc or minimal", value));
      }
    } else if (flag == "--gdb") {
      absl::StatusOr<uint64_t> port = parseNumber(value);
      if (!port.ok() || *port == 0 || *port > 65535) {
        return bad(absl::StrFormat("--gdb '%s' is not a TCP port (1-65535)", value));
      }
      options.gdbPort = *port;
    } else if (flag == "--trace") {
      if (value != "exits" && value.rfind("exits,", 0) != 0) {
        return bad(
            absl::StrFormat("--trace '%s': the trace kind is exits (--trace exits[,FILE])", value));
      }
      options.traceExits = true;
      options.tracePath = value.size() > 6 ? value.substr(6) : "";
    } else if (flag == "--control") {
      options.controlPath = value;
    } else if (flag == "--faults") {
      options.faultsPath = value;
    } else if (flag == "--fault-seed") {
      absl::StatusOr<uint64_t> seed = parseNumber(value);
      if (!seed.ok()) return bad(absl::StrFormat("--fault-seed '%s' is not a number", value));
      options.faultSeed = *seed;
    } else if (flag == "--fault-log") {
      options.faultLog = value;
    } else if (flag == "--device") {
      absl::StatusOr<DeviceArgument> device = parseDevice(value);
      if (!device.ok()) return device.status();
      options.devices.push_back(*device);
    } else if (flag == "--bios") {
      options.bios = value;
    } else if (flag == "--initrd") {
      options.initrd = value;
    } else if (flag == "--accel") {
      if (value != "kvm" && value != "emu") {
        return bad(absl::StrFormat(
            "--accel '%s' is not a backend (kvm: the host's KVM; emu: the software CPU)", value));
      }
      options.accel = value;
    } else if (flag == "--cpu") {
      absl::StatusOr<CpuModel> model = parseCpuModel(value);
      if (!model.ok()) return model.status();
      options.cpu = *model;
    } else if (flag == "--net") {
      // --net socket=PATH[,listen] | tap=NAME, [,mac=MAC][,failure options]: a virtio-net NIC.
      DeviceArgument device{"virtio-net", {}};
      bool backend = false;
      for (absl::string_view piece : absl::StrSplit(value, ',')) {
        std::string part(piece);
        std::pair<std::string, std::string> option = absl::StrSplit(part, absl::MaxSplits('=', 1));
        if (part == "listen") {
          device.options.emplace_back("listen", "on");
        } else if (validName(option.first) && !option.second.empty()) {
          backend = backend || option.first == "socket" || option.first == "tap";
          device.options.push_back(option);
        } else {
          return bad(absl::StrFormat("--net: '%s' is not key=value or listen", part));
        }
      }
      if (!backend) return bad("--net needs socket=PATH or tap=NAME");
      options.devices.push_back(device);
    } else if (flag == "--disk") {
      // --disk path=IMG[,readonly][,serial=ID][,failure options]: a virtio-blk device.
      DeviceArgument device{"virtio-blk", {}};
      std::string path;
      for (absl::string_view piece : absl::StrSplit(value, ',')) {
        std::string part(piece);
        std::pair<std::string, std::string> option = absl::StrSplit(part, absl::MaxSplits('=', 1));
        if (option.first == "path") {
          path = option.second;
        } else if (option.first == "if") {
          if (option.second != "virtio" && option.second != "ide") {
            return bad(absl::StrFormat("--disk: if=%s: use if=virtio or if=ide", option.second));
          }
          device.kind = option.second == "ide" ? "ide" : "virtio-blk";
        } else if (option.first == "format") {
          if (option.second != "raw") {
            return bad(
                absl::StrFormat("--disk: format=%s: only raw images are supported", option.second));
          }
        } else if (part == "readonly" || part == "readonly=on") {
          device.options.emplace_back("readonly", "on");
        } else if (validName(option.first) && !option.second.empty()) {
          device.options.push_back(option);
        } else {
          return bad(absl::StrFormat("--disk: '%s' is not key=value or readonly", part));
        }
      }
      if (path.empty()) return bad("--disk needs path=IMAGE (a raw disk image)");
      device.options.emplace_back("path", path);
      options.devices.push_back(device);
    }
  }
  bool kernel = !options.kernel.empty();
  bool flat = !options.flat.empty();
  bool bios = !options.bios.empty();
  if (kernel + flat + bios != 1) {
    return bad(kernel + flat + bios > 1
                   ? "give one of --kernel, --flat and --bios"
                   : "no guest given: pass --kernel FILE (Multiboot or Linux), --flat FILE "
                     "--entry ADDR --mode 16|32|64, or --bios seabios --disk path=IMG; or try "
                     "`bulkhead demo`");
  }
  if (bios && (!options.cmdline.empty() || !options.modules.empty() || !options.initrd.empty())) {
    return bad("--cmdline, --module and --initrd do not apply to --bios (the BIOS boots a disk)");
  }
  bool disk = std::any_of(options.devices.begin(), options.devices.end(), [](const auto& device) {
    return device.kind == "virtio-blk" || device.kind == "ide";
  });
  if (bios && !disk) {
    // SeaBIOS would say "No bootable device" on a console nobody may be watching, and wait.
    return bad("--bios has nothing to boot from: add --disk path=IMG");
  }
  if (flat && (!options.entryGiven || !options.modeGiven)) {
    return bad("--flat needs --entry ADDR and --mode 16|32|64");
  }
  if (!flat && (options.entryGiven || options.modeGiven)) {
    return bad("--entry and --mode only apply to --flat images");
  }
  if (options.faultsPath.empty() && (options.faultSeed || !options.faultLog.empty())) {
    return bad("--fault-seed and --fault-log need --faults PLAN");
  }
  if (flat && !options.initrd.empty()) return bad("--initrd only applies to --kernel images");
  if (flat && (!options.modules.empty() || !options.cmdline.empty())) {
    return bad("--module and --cmdline only apply to --kernel images");
  }
  return options;
}

const char* usageText() {
  return R"(bulkhead: a virtual machine monitor whose devices run as separate, isolated processes

usage:
  bulkhead run --kernel FILE [--cmdline TEXT] [--module "FILE [ARGS]"]... [common options]
  bulkhead run --kernel bzImage [--initrd FILE] [--cmdline TEXT] [common options]
  bulkhead run --flat FILE --entry ADDR --mode 16|32|64 [common options]
  bulkhead run --bios seabios|FILE --disk path=IMG [common options]
  bulkhead demo        run the built-in demo guest (serial on stdio, debug-exit)
  bulkhead --help | --version

Options take their value as `--option value` or `--option=value`. Those that add something
(--device, --disk, --net, --module) may repeat; the others may be given once.

guest:
  --kernel FILE        a Multiboot (v1) kernel, ELF32 or with the header's address fields, or
                       a Linux bzImage (x86-64, booted through its 64-bit entry point)
  --initrd FILE        the initial RAM disk of a Linux kernel
  --bios seabios|FILE  a PC BIOS (seabios: Debian's /usr/share/seabios/bios-256k.bin) mapped
                       below 4 GiB and at 0xe0000; the vCPU starts at the reset vector and the
                       BIOS boots from the disks
  --cmdline TEXT       the kernel's command line
  --module "FILE ARGS" a Multiboot module and its command line; repeatable
  --flat FILE          a flat binary, loaded at --entry and started there
  --entry ADDR         load and start address (16-bit mode: CS:IP = 0:ADDR, so below 0x10000)
  --mode 16|32|64      real mode, flat 32-bit protected mode, or 64-bit mode with the first
                       4 GiB identity-mapped

machine:
  --machine pc|minimal pc (the default): the PC platform every guest gets, whatever boots it:
                       PIC, PIT, CMOS/RTC, i8042 (and fw_cfg for --bios); minimal: only the
                       devices asked for (tiny test guests)

common options:
  --memory SIZE        guest RAM, e.g. 64M (default) or 1G
  --verbose            also log guest accesses nobody claims (once per address, and a count at
                       the end) and interrupts that travel the channel for want of an irqfd
  --control PATH       serve the control API on unix socket PATH (for bulkhead-ctl); PATH must
                       be free or a stale socket, and is removed when the VM ends
  --gdb PORT           serve the GDB remote protocol on 127.0.0.1:PORT; the guest waits for
                       the debugger (target remote :PORT) to continue it
  --trace exits[,FILE] log every vCPU exit with the instruction that caused it (to stderr, or
                       FILE); at most a million lines
  --cpus N             vCPUs (default 1)
  --accel kvm|emu      the CPU backend: KVM, or the software CPU (docs/emu.md); default KVM
                       where /dev/kvm can be opened, else emu
  --deterministic      (emu) a virtual clock driven by the instruction count and an RTC fixed
                       at 2000-01-01: the same guest, devices, fault plan and seed give the
                       same run (any number of vCPUs; no input from the host)
  --cpu MODEL[,+FEATURE,-FEATURE]...
                       the guest's CPUID: host (all KVM offers; default) or kvm64 (an x86-64
                       baseline), with features added or hidden, e.g. host,-cx16,-xsave
  --serial stdio|file:PATH|none[,key=value]...
                       COM1 (16550A at 0x3f8, IRQ 4), in its own process; default stdio
  --device KIND[,key=value]...
                       start the device server bulkhead-KIND with those options; repeatable.
                       debug-exit[,iobase=PORT]: a port (default 0xf4) that ends the VM:
                       writing v exits with status (v << 1) | 1, as QEMU's isa-debug-exit
                       virtio-rng[,seed=N]: a virtio entropy device (seeded: replayable bytes)
                       virtio-console: a virtio console on stdout (and stdin, unless the serial
                       port has it)
  --net socket=PATH[,listen]|tap=NAME[,mac=MAC]
                       a virtio-net NIC (PCI): frames over a unix SOCK_SEQPACKET socket (listen:
                       create PATH and take the first peer; else connect to PATH) or a tap device
  --disk path=IMG[,if=virtio|ide][,format=raw][,readonly][,serial=ID]
                       a disk backed by the raw image IMG: virtio-blk (PCI, the default) or the
                       primary IDE channel's master (if=ide, one at most); repeatable

fault injection (docs/fault-injection.md):
  --faults PLAN        apply the fault plan in file PLAN to the devices it names
  --fault-seed N       use seed N instead of the plan's (a campaign's runs differ by seed)
  --fault-log FILE     record every fault that fires, one JSON object per line

device failure options (for --device and --serial, handled by the core):
  on-failure=hidden    a crashed or hung server is restarted and resumes exactly (default)
  on-failure=error     a server that fails is fenced at once: reads all-ones, writes dropped
  restarts=N/Ts        fence after more than N restarts within T seconds (default 20/10s)
  watchdog=MSms        a request left waiting this long means a hung server (default 250ms)

exit status: (v << 1) | 1 from debug-exit; 0 guest powered off; 2 bad input; 4 guest crashed
(triple fault, emulation failure, halted with interrupts off); 6 host failure; 130 interrupted.
)";
}

}  // namespace bulkhead
