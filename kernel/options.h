// The command line of `bulkhead`: parsed into Options, or one error line saying what is wrong.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>

#include "kernel/boot/boot-state.h"
#include "kernel/vcpu/cpu-model.h"

namespace bulkhead {

struct DeviceArgument {
  std::string kind;
  std::vector<std::pair<std::string, std::string>> options;
};

struct Options {
  enum class Command { HELP, VERSION, RUN, DEMO };
  enum class Serial { STDIO, FILE, NONE };
  // --machine: pc (the PC platform, for every boot path) or minimal (only the devices asked for,
  // for tiny test guests).
  enum class Machine { PC, MINIMAL };

  Command command = Command::HELP;
  std::string kernel;  // Multiboot ELF or Linux bzImage
  std::string initrd;  // Linux only
  std::string bios;    // a BIOS image ("seabios": Debian's)
  std::string flat;    // flat binary
  uint64_t entry = 0;
  bool entryGiven = false;
  Machine machine = Machine::PC;
  CpuMode mode = CpuMode::REAL16;
  bool modeGiven = false;
  std::string cmdline;
  std::vector<std::string> modules;  // "FILE" or "FILE ARGUMENTS"
  uint64_t memoryBytes = 64ull << 20;
  unsigned cpus = 1;
  CpuModel cpu;
  std::string accel;  // "", "kvm" or "emu"
  bool deterministic = false;
  bool verbose = false;  // --verbose
  Serial serial = Serial::STDIO;
  std::string serialPath;
  std::vector<std::pair<std::string, std::string>> serialOptions;  // after the mode
  std::vector<DeviceArgument> devices;
  std::string faultsPath;  // a fault plan in its text form
  std::optional<uint64_t> faultSeed;
  std::string faultLog;
  std::string controlPath;  // unix socket for bulkhead-ctl
  uint16_t gdbPort = 0;
  bool traceExits = false;
  std::string tracePath;  // "" = stderr
};

absl::StatusOr<Options> parseOptions(const std::vector<std::string>& arguments);

// "64M", "1G", "4096K" or plain bytes. 0 or garbage is kInvalidArgument; over 1 TiB is
// kOutOfRange.
absl::StatusOr<uint64_t> parseSize(const std::string& text);
// Decimal or 0x-prefixed hexadecimal.
absl::StatusOr<uint64_t> parseNumber(const std::string& text);

const char* usageText();

}  // namespace bulkhead
