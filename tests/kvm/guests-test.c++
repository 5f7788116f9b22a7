// Real guests through the real core and real server processes.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "tests/kvm/run-bulkhead.h"

namespace bulkhead::testing {
namespace {

std::string guest(const std::string& name) { return guestDir() + "/" + name; }

TEST(Guests, HelloPrintsThroughTheSerialServerAndExitsThroughDebugExit) {
  REQUIRE_KVM();
  RunResult run = runBulkhead({"run", "--kernel", guest("hello.elf"), "--device", "debug-exit"});
  EXPECT_EQ(run.out, "hello\n");
  EXPECT_EQ(run.status, 3) << run.err;
}

// The device-table example (servers/post-codes/): a real-mode guest writes two POST codes to
// port 0x80; each reaches the file=PATH backend once, after what the file already held.
TEST(Guests, PostCodesReachTheirFileBackendOnce) {
  REQUIRE_KVM();
  std::string code = ::testing::TempDir() + "/bulkhead-post.bin";
  std::string log = ::testing::TempDir() + "/bulkhead-post.log";
  // mov al, 0x2c; out 0x80, al; mov al, 0x07; out 0x80, al; mov al, 0; out 0xf4, al; hlt
  std::ofstream(code, std::ios::binary | std::ios::trunc)
      << std::string("\xb0\x2c\xe6\x80\xb0\x07\xe6\x80\xb0\x00\xe6\xf4\xf4", 13);
  std::ofstream(log, std::ios::trunc) << "earlier\n";
  RunResult run = runBulkhead({"run", "--flat", code, "--entry", "0x7c00", "--mode", "16",
                               "--device", "debug-exit", "--device", "post-codes,file=" + log});
  EXPECT_EQ(run.status, 1) << run.err;
  std::ifstream file(log);
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "earlier\npost 0x2c\npost 0x07\n");
}

// Accesses nobody claims are quiet unless --verbose, and then logged once per address with a
// count at the end; port 0x80 (POST codes) is never listed.
TEST(Guests, UnclaimedPortsAreQuietUnlessVerbose) {
  REQUIRE_KVM();
  std::string code = ::testing::TempDir() + "/bulkhead-unclaimed.bin";
  // out 0xe0, al (three times); out 0x80, al; mov al, 0; out 0xf4, al; hlt
  std::ofstream(code, std::ios::binary | std::ios::trunc)
      << std::string("\xe6\xe0\xe6\xe0\xe6\xe0\xe6\x80\xb0\x00\xe6\xf4\xf4", 13);
  std::vector<std::string> arguments = {"run",    "--flat", code,       "--entry",   "0x7c00",
                                        "--mode", "16",     "--device", "debug-exit"};
  RunResult quiet = runBulkhead(arguments);
  EXPECT_EQ(quiet.status, 1) << quiet.err;
  EXPECT_EQ(quiet.err.find("unclaimed"), std::string::npos) << quiet.err;
  arguments.push_back("--verbose");
  RunResult loud = runBulkhead(arguments);
  EXPECT_EQ(loud.status, 1) << loud.err;
  size_t lines = 0;
  for (size_t at = 0; (at = loud.err.find("unclaimed port", at)) != std::string::npos; ++at)
    ++lines;
  EXPECT_EQ(lines, 1u) << loud.err;
  EXPECT_NE(loud.err.find("unclaimed port 0xe0"), std::string::npos) << loud.err;
  EXPECT_EQ(loud.err.find("port 0x80;"), std::string::npos) << loud.err;
  EXPECT_NE(loud.err.find("4 guest accesses reached no device (1 addresses listed above"),
            std::string::npos)
      << loud.err;
}

TEST(Guests, SixteenBitFlatGuestRunsInRealMode) {
  REQUIRE_KVM();
  RunResult run = runBulkhead({"run", "--flat", guest("real16.bin"), "--entry", "0x7c00", "--mode",
                               "16", "--device", "debug-exit"});
  EXPECT_EQ(run.out, "real mode ok\n");
  EXPECT_EQ(run.status, (5 << 1) | 1) << run.err;
}

// The same tiny guests under KVM and under the software CPU end with the same registers, flags
// and memory (regdump prints them all and a hash of what it wrote), the same output and status.
TEST(Differential, TinyGuestsEndTheSameUnderKvmAndEmu) {
  REQUIRE_KVM();
  std::vector<std::vector<std::string>> guests = {
      {"--flat", guest("regdump.bin"), "--entry", "0x100000", "--mode", "64"},
      {"--flat", guest("long64.bin"), "--entry", "0x100000", "--mode", "64"},
      {"--flat", guest("real16.bin"), "--entry", "0x7c00", "--mode", "16"},
      {"--flat", guest("irq16.bin"), "--entry", "0x7c00", "--mode", "16"},
      {"--kernel", guest("mbinfo.elf"), "--cmdline", "a b c"},
      {"--kernel", guest("hello.elf")},
      {"--kernel", guest("uart-regs.elf")},
  };
  for (const auto& image : guests) {
    RunResult results[2];
    for (int i = 0; i < 2; ++i) {
      std::vector<std::string> arguments = {"run", "--accel", i == 0 ? "kvm" : "emu"};
      arguments.insert(arguments.end(), image.begin(), image.end());
      arguments.insert(arguments.end(), {"--device", "debug-exit"});
      results[i] = runBulkhead(arguments);
    }
    SCOPED_TRACE(image[1]);
    EXPECT_EQ(results[0].status, results[1].status) << results[0].err << results[1].err;
    EXPECT_FALSE(results[0].out.empty());
    EXPECT_EQ(results[0].out, results[1].out);
  }
}

// What the software CPU cannot run ends the VM with one line naming the instruction, decoded.
TEST(Emu, AnUnimplementedInstructionEndsTheVmWithOneLine) {
  std::string path = ::testing::TempDir() + "/bulkhead-vmfunc.bin";
  std::ofstream(path, std::ios::binary) << "\x0f\x01\xd4\xf4";  // vmfunc (no VMX here); hlt
  RunResult run = runBulkhead({"run", "--accel", "emu", "--flat", path, "--entry", "0x100000",
                               "--mode", "64", "--serial", "none"});
  EXPECT_EQ(run.status, 4) << run.err;
  EXPECT_NE(run.err.find("the software CPU does not implement vmfunc at RIP 0018:0x100000 "
                         "(64-bit)"),
            std::string::npos)
      << run.err;
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
}

// Under --deterministic a device's answer lands at the same instruction in every run: the
// guest's clock (the instruction count) then reads the same at each step of a virtio-blk
// workload, though a server process does the I/O. Without it, the guest polls the used ring
// for however long the server took, and the counts differ from run to run.
TEST(Emu, DeterministicRunsOfAVirtioGuestAreTheSameToTheInstruction) {
  std::string disk = ::testing::TempDir() + "/bulkhead-deterministic.img";
  std::ofstream(disk, std::ios::binary | std::ios::trunc).close();
  ASSERT_EQ(truncate(disk.c_str(), 16 << 20), 0);
  std::string outputs[2];
  for (std::string& out : outputs) {
    RunResult run = runBulkhead({"run", "--accel", "emu", "--deterministic", "--kernel",
                                 guest("blk-bench.elf"), "--cmdline", "passes=1 random=100",
                                 "--disk", "path=" + disk, "--device", "debug-exit"});
    EXPECT_EQ(run.status, 1) << run.err;
    out = run.out;
  }
  EXPECT_EQ(std::count(outputs[0].begin(), outputs[0].end(), '\n'), 4) << outputs[0];
  EXPECT_NE(outputs[0].find("blk-bench rand-read cycles="), std::string::npos) << outputs[0];
  EXPECT_EQ(outputs[0], outputs[1]);
}

TEST(Guests, SixtyFourBitFlatGuestRunsInLongMode) {
  REQUIRE_KVM();
  RunResult run = runBulkhead({"run", "--flat", guest("long64.bin"), "--entry", "0x100000",
                               "--mode", "64", "--device", "debug-exit"});
  EXPECT_EQ(run.out, "long mode ok\n");
  EXPECT_EQ(run.status, (7 << 1) | 1) << run.err;
}

// The word after `key` in the guest's output, as a number.
uint32_t hexAfter(const std::string& out, const std::string& key) {
  size_t at = out.find(key);
  EXPECT_NE(at, std::string::npos) << out;
  return at == std::string::npos ? 0 : std::stoul(out.substr(at + key.size()), nullptr, 16);
}

TEST(Guests, TheCpuModelIsWhatTheGuestSees) {
  REQUIRE_KVM();
  auto run = [](const std::string& cpu) {
    RunResult result = runBulkhead(
        {"run", "--kernel", guestDir() + "/cpuid.elf", "--device", "debug-exit", "--cpu", cpu});
    EXPECT_EQ(result.status, 1) << result.err;
    return result.out;
  };
  constexpr uint32_t CX16 = 1u << 13, XSAVE = 1u << 26, X2APIC = 1u << 21;
  constexpr uint32_t TSC_DEADLINE = 1u << 24, SSE2 = 1u << 26;
  std::string host = run("host");
  uint32_t hostEcx = hexAfter(host, "cpuid 1 ecx=");
  ASSERT_NE(hostEcx & CX16, 0u) << "this host's KVM offers no cx16 to hide";
  EXPECT_EQ(hexAfter(run("host,-cx16"), "cpuid 1 ecx="), hostEcx & ~CX16);
  // kvm64 leaves out x2apic and the TSC deadline timer, which KVM offers.
  std::string baseline = run("kvm64");
  EXPECT_EQ(hexAfter(baseline, "cpuid 1 ecx=") & (X2APIC | TSC_DEADLINE), 0u);
  EXPECT_NE(hexAfter(baseline, "edx=") & SSE2, 0u);
  // xsave is hidden, or (where the host passes it through, as PVM does) the user is told.
  RunResult noXsave = runBulkhead({"run", "--kernel", guestDir() + "/cpuid.elf", "--device",
                                   "debug-exit", "--cpu", "host,-xsave"});
  if (hexAfter(noXsave.out, "cpuid 1 ecx=") & XSAVE) {
    EXPECT_NE(noXsave.err.find("cannot hide it"), std::string::npos) << noXsave.err;
  }
}

TEST(Guests, UartRegistersReadBackAsTheDatasheetSays) {
  REQUIRE_KVM();
  RunResult run =
      runBulkhead({"run", "--kernel", guest("uart-regs.elf"), "--device", "debug-exit"});
  EXPECT_EQ(run.out, "uart registers ok\n");
  EXPECT_EQ(run.status, 1) << run.err;
}

TEST(Guests, DebugExitHonoursAnotherPort) {
  REQUIRE_KVM();
  // hello writes to 0xf4; with debug-exit elsewhere that write goes nowhere and the guest ends
  // halted with interrupts off, which the core reports as a crash.
  RunResult run =
      runBulkhead({"run", "--kernel", guest("hello.elf"), "--device", "debug-exit,iobase=0x501"});
  EXPECT_EQ(run.out, "hello\n");
  EXPECT_EQ(run.status, 4) << run.err;
  EXPECT_NE(run.err.find("halted with interrupts disabled"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("RIP 0008:0x"), std::string::npos) << run.err;
}

TEST(Guests, HundredThousandBytesArriveInOrder) {
  REQUIRE_KVM();
  RunResult run = runBulkhead({"run", "--kernel", guest("stream.elf"), "--cmdline", "bytes=100000",
                               "--device", "debug-exit"});
  ASSERT_EQ(run.status, 1) << run.err;
  std::string expected;
  for (int line = 0; expected.size() < 100000; ++line) {
    char text[16];
    snprintf(text, sizeof(text), "%07d\n", line);
    expected += text;
  }
  expected.resize(100000);
  ASSERT_EQ(run.out.size(), expected.size());
  EXPECT_TRUE(run.out == expected) << "bytes arrived out of order or changed";
}

TEST(Guests, TheExitTraceShowsEachExitAndItsInstruction) {
  REQUIRE_KVM();
  std::string path = ::testing::TempDir() + "/bulkhead-trace";
  RunResult run = runBulkhead({"run", "--kernel", guest("hello.elf"), "--device", "debug-exit",
                               "--trace", "exits," + path});
  EXPECT_EQ(run.status, 3) << run.err;
  std::ifstream file(path);
  std::string trace((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  // 'h' written to THR, then debug-exit: each with the guest's next instruction decoded.
  EXPECT_NE(trace.find("vcpu 0 io out port 0x3f8 size 1 value 0x68; next RIP 0008:0x"),
            std::string::npos)
      << trace;
  EXPECT_NE(trace.find("vcpu 0 io in port 0x3fd size 1 value 0x60; next RIP"), std::string::npos)
      << trace;
  EXPECT_NE(trace.find("io out port 0xf4 size 1 value 0x1; next RIP"), std::string::npos) << trace;
  EXPECT_NE(trace.find("(32-bit): "), std::string::npos) << trace;
}

TEST(Guests, SerialToAFile) {
  REQUIRE_KVM();
  std::string path = ::testing::TempDir() + "/bulkhead-serial-out";
  RunResult run = runBulkhead({"run", "--kernel", guest("hello.elf"), "--device", "debug-exit",
                               "--serial", "file:" + path});
  EXPECT_EQ(run.status, 3) << run.err;
  EXPECT_EQ(run.out, "");
  std::ifstream file(path);
  std::string contents((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(contents, "hello\n");
}

std::set<std::string> childNames(pid_t parent) {
  std::set<std::string> names;
  std::string tasks = "/proc/" + std::to_string(parent) + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return names;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream children(tasks + "/" + entry->d_name + "/children");
    pid_t child;
    while (children >> child) {
      std::ifstream comm("/proc/" + std::to_string(child) + "/comm");
      std::string name;
      std::getline(comm, name);
      names.insert(name + ":" + std::to_string(child));
    }
  }
  closedir(dir);
  return names;
}

bool alive(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(status, line)) return false;
  size_t close = line.rfind(')');
  return close != std::string::npos && line[close + 2] != 'Z';
}

// The thread that runs guest code is under its own seccomp filter (kernel/base/thread-sandbox.h);
// the main loop, which starts servers, is not.
TEST(Processes, TheVcpuThreadRunsUnderASeccompFilter) {
  REQUIRE_KVM();
  pid_t core = startBulkhead({"run", "--kernel", guest("stream.elf"), "--cmdline",
                              "bytes=1000000000", "--device", "debug-exit"});
  ASSERT_GT(core, 0);
  auto field = [](const std::string& status, const std::string& name) {
    std::ifstream file(status);
    std::string line;
    while (std::getline(file, line)) {
      if (line.rfind(name, 0) == 0) return line.substr(line.find_first_not_of(" \t", name.size()));
    }
    return std::string();
  };
  std::string tasks = "/proc/" + std::to_string(core) + "/task";
  std::string vcpuFilter;
  for (int i = 0; i < 100 && vcpuFilter != "2"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    DIR* dir = opendir(tasks.c_str());
    while (dir != nullptr) {
      dirent* entry = readdir(dir);
      if (entry == nullptr) break;
      std::string task = tasks + "/" + entry->d_name;
      std::ifstream comm(task + "/comm");
      std::string name;
      std::getline(comm, name);
      if (name == "bulkhead-vcpu0") vcpuFilter = field(task + "/status", "Seccomp:");
    }
    if (dir != nullptr) closedir(dir);
  }
  std::string mainFilter = field("/proc/" + std::to_string(core) + "/status", "Seccomp:");
  kill(core, SIGTERM);
  int status;
  waitpid(core, &status, 0);
  EXPECT_EQ(vcpuFilter, "2") << "the vCPU thread is not under a filter (or was not found)";
  EXPECT_EQ(mainFilter, "0");
}

TEST(Processes, OneProcessPerDeviceAndNoOrphansWhenTheCoreIsKilled) {
  REQUIRE_KVM();
  // A stream long enough to still run while we look.
  pid_t core = startBulkhead({"run", "--kernel", guest("stream.elf"), "--cmdline",
                              "bytes=1000000000", "--device", "debug-exit"});
  ASSERT_GT(core, 0);
  // Four serving children, each past its exec (a child between fork and exec is still
  // "bulkhead"), and a spare for each, waiting to replace it (docs/recovery.md).
  auto serving = [](const std::string& n) {
    return n.rfind("bulkhead-", 0) == 0 && n.rfind("bulkhead-spare:", 0) != 0;
  };
  auto started = [&](const std::set<std::string>& names) {
    return std::count_if(names.begin(), names.end(), serving) == 4 &&
           std::count_if(names.begin(), names.end(),
                         [](const std::string& n) { return n.rfind("bulkhead-spare:", 0) == 0; }) ==
               4 &&
           names.size() == 8;
  };
  std::set<std::string> children;
  for (int i = 0; i < 100 && !started(children); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    children = childNames(core);
  }
  ASSERT_TRUE(started(children)) << children.size() << " children";
  std::vector<pid_t> servers, spares;
  std::set<std::string> names;
  for (const std::string& child : children) {
    pid_t pid = std::stoi(child.substr(child.find(':') + 1));
    if (!serving(child)) {
      spares.push_back(pid);
      continue;
    }
    names.insert(child.substr(0, child.find(':')));
    servers.push_back(pid);
  }
  // comm holds 15 characters.
  // The two asked for and the PC platform's CMOS/RTC and i8042 (--machine pc).
  EXPECT_EQ(names, (std::set<std::string>{"bulkhead-serial", "bulkhead-debug-", "bulkhead-cmos",
                                          "bulkhead-i8042"}));

  if (getuid() == 0) {
    // The core is root, so servers run as nobody, each as PID 1 of a PID namespace of its own,
    // under a seccomp filter.
    for (pid_t server : servers) {
      std::string uid, nspid, seccomp;
      // A server enters its filter once attached; the last one may still be attaching.
      for (int i = 0; i < 100 && seccomp != "Seccomp:\t2"; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        std::ifstream status("/proc/" + std::to_string(server) + "/status");
        std::string line;
        while (std::getline(status, line)) {
          if (line.rfind("Uid:", 0) == 0) uid = line;
          if (line.rfind("NSpid:", 0) == 0) nspid = line;
          if (line.rfind("Seccomp:", 0) == 0) seccomp = line;
        }
      }
      EXPECT_EQ(uid.substr(uid.find_first_not_of("Uid:\t ")), "65534\t65534\t65534\t65534");
      EXPECT_EQ(nspid.substr(nspid.rfind('\t') + 1), "1") << nspid;
      EXPECT_EQ(seccomp, "Seccomp:\t2");
    }
    // Spares are in the same jail already; each enters its filter when it is attached.
    for (pid_t spare : spares) {
      std::ifstream status("/proc/" + std::to_string(spare) + "/status");
      std::string line, uid, nspid;
      while (std::getline(status, line)) {
        if (line.rfind("Uid:", 0) == 0) uid = line;
        if (line.rfind("NSpid:", 0) == 0) nspid = line;
      }
      EXPECT_EQ(uid.substr(uid.find_first_not_of("Uid:\t ")), "65534\t65534\t65534\t65534");
      EXPECT_EQ(nspid.substr(nspid.rfind('\t') + 1), "1") << nspid;
    }
  }
  servers.insert(servers.end(), spares.begin(), spares.end());
  ASSERT_EQ(kill(core, SIGKILL), 0);
  int status;
  waitpid(core, &status, 0);
  // Within 100 ms of the core's death every server and spare has ended. One that has ended but
  // is not yet reaped (state Z: its reaper is the machine's init, which may be slow) runs no
  // code and holds nothing of the VM, so it counts as gone.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  for (pid_t server : servers) {
    while (alive(server) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_FALSE(alive(server)) << "device server " << server << " outlived the core by 100 ms";
  }
}

TEST(BadInput, UnreadableAndMalformedImagesGetOneLineAndStatusTwo) {
  REQUIRE_KVM();
  std::string empty = ::testing::TempDir() + "/bulkhead-empty";
  std::ofstream(empty).close();
  std::string garbage = ::testing::TempDir() + "/bulkhead-garbage";
  std::ofstream(garbage) << std::string(10000, 'x');
  struct Case {
    std::vector<std::string> arguments;
    const char* mentions;
  } cases[] = {
      {{"run", "--kernel", "/nonexistent/kernel"}, "cannot read kernel"},
      {{"run", "--kernel", empty}, "empty"},
      {{"run", "--kernel", garbage}, "no Multiboot header"},
      {{"run", "--kernel", guestDir()}, "not a regular file"},
      {{"run", "--flat", empty, "--entry", "0x7c00", "--mode", "16"}, "empty"},
      {{"run", "--flat", garbage, "--entry", "0x20000", "--mode", "16"}, "below 0x10000"},
      {{"run", "--flat", garbage, "--entry", "0xa000", "--mode", "64"}, "page tables"},
      {{"run", "--flat", garbage, "--entry", "0x3fff000", "--mode", "32"}, "does not fit"},
      {{"run", "--kernel", guest("hello.elf"), "--serial", "file:/nonexistent/dir/x"},
       "cannot open"},
      {{"run", "--kernel", guest("hello.elf"), "--device", "no-such-device"},
       "cannot find the device server bulkhead-no-such-device"},
      {{"run", "--kernel", guest("hello.elf"), "--device", "debug-exit,iobase=0x10000"}, "iobase"},
      {{"run", "--kernel", guest("hello.elf"), "--device", "debug-exit,colour=red"}, "colour"},
  };
  for (const Case& c : cases) {
    RunResult run = runBulkhead(c.arguments);
    EXPECT_EQ(run.status, 2) << c.mentions << ": " << run.err;
    EXPECT_NE(run.err.find(c.mentions), std::string::npos) << run.err;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  }
}

}  // namespace
}  // namespace bulkhead::testing
