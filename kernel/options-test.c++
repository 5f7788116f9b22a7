#include "kernel/options.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

absl::StatusOr<Options> parse(std::vector<std::string> arguments) {
  return parseOptions(arguments);
}

TEST(Options, ParsesAMultibootRun) {
  auto options = parse({"run", "--kernel", "k.elf", "--cmdline", "a=1", "--memory", "128M",
                        "--device", "debug-exit,iobase=0x501", "--serial", "file:/tmp/x"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->kernel, "k.elf");
  EXPECT_EQ(options->memoryBytes, 128u << 20);
  ASSERT_EQ(options->devices.size(), 1u);
  EXPECT_EQ(options->devices[0].options[0].second, "0x501");
  EXPECT_EQ(options->serial, Options::Serial::FILE);
  EXPECT_EQ(options->serialPath, "/tmp/x");
}

TEST(Options, ParsesAFlatRun) {
  auto options = parse({"run", "--flat", "g.bin", "--entry", "0x7c00", "--mode", "16"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->entry, 0x7c00u);
  EXPECT_EQ(options->mode, CpuMode::REAL16);
}

TEST(Options, EveryMistakeIsOneClearError) {
  struct Case {
    std::vector<std::string> arguments;
    const char* mentions;
  } cases[] = {
      {{}, "no command given"},
      {{"fly"}, "unknown command"},
      {{"run", "--bios", "--disk", "path=x"},
       "--bios needs a value, and --disk is the next option"},
      {{"run", "--kernel", "a", "--bogus"}, "unknown option --bogus"},
      {{"run", "--kernel", "a", "--memory", "64M", "--memory", "128M"},
       "--memory is given twice ('64M', then '128M')"},
      {{"run", "--kernel", "a", "--kernel", "b"}, "--kernel is given twice"},
      {{"run", "--kernel", "a", "--serial", "none", "--serial", "stdio"},
       "--serial is given twice"},
      {{"run", "--kernel", "a", "--memory", "999999G"}, "more than this host's"},
      {{"run", "--kernel", "a", "--memory", "2000G"}, "more than this host's"},
      {{"run", "--kernel=a", "--deterministic=yes"}, "--deterministic takes no value"},
      {{"run"}, "no guest given"},
      {{"run", "--kernel"}, "--kernel needs a value"},
      {{"run", "--kernel", "a", "--flat", "b"}, "give one of --kernel, --flat and --bios"},
      {{"run", "--bios", "seabios", "--initrd", "i", "--disk", "path=d"}, "do not apply to --bios"},
      {{"run", "--bios", "seabios"}, "--bios has nothing to boot from: add --disk path=IMG"},
      {{"run", "--kernel", "a", "--disk", "path=d,if=scsi"}, "use if=virtio or if=ide"},
      {{"run", "--kernel", "a", "--disk", "path=d,format=qcow2"}, "only raw images"},
      {{"run", "--kernel", "a", "--cpu", "pentium"}, "unknown CPU model"},
      {{"run", "--kernel", "a", "--net", "mac=1"}, "needs socket=PATH or tap=NAME"},
      {{"run", "--flat", "b", "--mode", "32"}, "--entry"},
      {{"run", "--flat", "b", "--entry", "zz", "--mode", "32"}, "not an address"},
      {{"run", "--flat", "b", "--entry", "0", "--mode", "8"}, "not 16, 32 or 64"},
      {{"run", "--kernel", "a", "--memory", "12Q"}, "--memory"},
      {{"run", "--kernel", "a", "--memory", "512K"}, "at least 1M"},
      {{"run", "--kernel", "a", "--cpus", "0"}, "--cpus"},
      {{"run", "--kernel", "a", "--serial", "tcp:1"}, "--serial"},
      {{"run", "--kernel", "a", "--device", "GPU!"}, "device kind"},
      {{"run", "--kernel", "a", "--device", "debug-exit,iobase"}, "not key=value"},
      {{"run", "--kernel", "a", "--device", "serial"}, "--serial"},
      {{"run", "--kernel", "a", "--bogus", "1"}, "unknown option --bogus"},
      {{"run", "--kernel", "a", "--entry", "1"}, "only apply to --flat"},
      {{"run", "--kernel", "a", "--gdb", "70000"}, "not a TCP port"},
      {{"run", "--kernel", "a", "--trace", "irqs"}, "the trace kind is exits"},
      {{"run", "--kernel", "a", "--fault-seed", "3"}, "need --faults"},
  };
  for (const Case& c : cases) {
    auto options = parse(c.arguments);
    ASSERT_FALSE(options.ok()) << c.mentions;
    std::string message(options.status().message());
    EXPECT_NE(message.find(c.mentions), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  }
}

// --option=value works as --option value does; repeatable options may repeat.
TEST(Options, EqualsFormAndRepeatableOptions) {
  auto options = parse({"run", "--kernel=k.elf", "--memory=128M", "--cmdline=--x a=b", "--device",
                        "debug-exit", "--device=virtio-rng", "--machine=minimal", "--verbose"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->kernel, "k.elf");
  EXPECT_EQ(options->memoryBytes, 128u << 20);
  EXPECT_EQ(options->cmdline, "--x a=b");
  EXPECT_EQ(options->devices.size(), 2u);
  EXPECT_EQ(options->machine, Options::Machine::MINIMAL);
  EXPECT_TRUE(options->verbose);
}

TEST(Options, Sizes) {
  EXPECT_EQ(*parseSize("64M"), 64u << 20);
  EXPECT_EQ(*parseSize("1G"), 1u << 30);
  EXPECT_EQ(*parseSize("4096"), 4096u);
  EXPECT_FALSE(parseSize("0").ok());
  EXPECT_FALSE(parseSize("-1M").ok());
  EXPECT_EQ(parseSize("99999999999G").status().code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace bulkhead
