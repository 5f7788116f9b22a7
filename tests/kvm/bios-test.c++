// BIOS guests: Debian's SeaBIOS, unmodified, boots guestlib's two-stage boot sector from a
// virtio-blk disk and from an IDE disk (stage 2 comes in through INT 13h); bad BIOS images get
// one clear line.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>
#include <vector>

#include "tests/kvm/run-bulkhead.h"

namespace bulkhead::testing {
namespace {

constexpr const char* SEABIOS = "/usr/share/seabios/bios-256k.bin";

std::string writeFile(const std::string& name, const std::vector<uint8_t>& bytes, size_t size = 0) {
  std::string path = ::testing::TempDir() + "bulkhead-" + name;
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  file.close();
  if (size > 0) {
    EXPECT_EQ(truncate(path.c_str(), size), 0);
  }
  return path;
}

std::vector<uint8_t> readFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(file)),
                              std::istreambuf_iterator<char>());
}

#define REQUIRE_SEABIOS()                                                           \
  do {                                                                              \
    if (access(SEABIOS, R_OK) != 0)                                                 \
      GTEST_SKIP() << SEABIOS                                                       \
                   << " is missing: install Debian's seabios package (tools/setup " \
                      "does)";                                                      \
  } while (0)

TEST(Bios, SeaBiosBootsTheBootSectorFromAVirtioDisk) {
  REQUIRE_KVM();
  REQUIRE_SEABIOS();
  std::vector<uint8_t> boot = readFile(guestDir() + "/mbr16.bin");
  ASSERT_EQ(boot.size(), 1024u);
  boot[0x3fe] = 42;  // stage 2's exit value: status (42 << 1) | 1
  std::string disk = writeFile("bios-boot.img", boot, 1 << 20);
  RunResult run = runBulkhead({"run", "--bios", "seabios", "--device", "debug-exit", "--disk",
                               "path=" + disk, "--device", "debugcon"},
                              120);
  EXPECT_EQ(run.status, 85) << run.out << run.err.substr(0, 3000);
  EXPECT_EQ(run.out, "mbr: stage 1\nmbr: stage 2 from INT 13h\n");
  // SeaBIOS's own log, through the debug console server.
  EXPECT_NE(run.err.find("SeaBIOS (version"), std::string::npos);
  // The memory map came from the fw_cfg server.
  EXPECT_NE(run.err.find("Found QEMU fw_cfg"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("qemu/e820: addr 0x0000000000100000 len 0x0000000003f00000 [RAM]"),
            std::string::npos);
  EXPECT_NE(run.err.find("found virtio-blk at 00:01.0"), std::string::npos);
  EXPECT_NE(run.err.find("Booting from Hard Disk"), std::string::npos);
}

TEST(Bios, SeaBiosBootsTheBootSectorFromAnIdeDisk) {
  REQUIRE_KVM();
  REQUIRE_SEABIOS();
  std::vector<uint8_t> boot = readFile(guestDir() + "/mbr16.bin");
  ASSERT_EQ(boot.size(), 1024u);
  boot[0x3fe] = 9;  // status 19
  std::string disk = writeFile("bios-ide.img", boot, 1 << 20);
  RunResult run = runBulkhead({"run", "--bios", "seabios", "--device", "debug-exit", "--disk",
                               "path=" + disk + ",if=ide,format=raw", "--device", "debugcon"},
                              120);
  EXPECT_EQ(run.status, 19) << run.out << run.err.substr(0, 3000);
  EXPECT_EQ(run.out, "mbr: stage 1\nmbr: stage 2 from INT 13h\n");
  EXPECT_NE(run.err.find("ata0-0: BULKHEAD IDE DISK ATA-6 Hard-Disk (1 MiBytes)"),
            std::string::npos)
      << run.err;
}

TEST(Bios, PlatformServersKilledDuringTheBootAreNotNoticed) {
  REQUIRE_KVM();
  REQUIRE_SEABIOS();
  std::vector<uint8_t> boot = readFile(guestDir() + "/mbr16.bin");
  boot[0x3fe] = 9;
  std::string disk = writeFile("bios-kill.img", boot, 1 << 20);
  Capture run = startCaptured({"run", "--bios", "seabios", "--device", "debug-exit", "--disk",
                               "path=" + disk + ",if=ide,restarts=100000/1s", "--device",
                               "debugcon,restarts=100000/1s"});
  std::thread reader([&run]() { run.wait(); });
  std::mt19937 random(26);
  // The software CPU boots SeaBIOS in about 0.3 s, KVM here in about 1.3 s.
  std::uniform_int_distribution<int> gap(testAccel() == "emu" ? 2 : 10,
                                         testAccel() == "emu" ? 10 : 50);
  const char* victims[] = {"bulkhead-ide", "bulkhead-cmos", "bulkhead-i8042", "bulkhead-fw-cfg",
                           "bulkhead-debugc"};  // comm: 15 chars at most
  int kills = 0;
  // At most 4 each: the platform servers the core starts keep the default policy (fenced after
  // 20 restarts in 10 s).
  while (processAlive(run.pid) && kills < 20) {
    std::this_thread::sleep_for(std::chrono::milliseconds(gap(random)));
    pid_t server = findChild(run.pid, victims[kills % 5]);
    if (server <= 0) continue;
    kill(server, SIGKILL);
    ++kills;
  }
  reader.join();
  EXPECT_GE(kills, 10);
  EXPECT_EQ(run.status, 19) << run.out << run.err.substr(0, 3000);
  EXPECT_EQ(run.out, "mbr: stage 1\nmbr: stage 2 from INT 13h\n");
  EXPECT_NE(run.err.find("restarting it"), std::string::npos);
  // SeaBIOS's log came through as it does undisturbed (it prints its banner twice, the second
  // time for the screen), with nothing lost or repeated however often debugcon died.
  auto count = [&run](const std::string& line) {
    size_t n = 0;
    for (size_t at = run.err.find(line); at != std::string::npos; at = run.err.find(line, at + 1))
      ++n;
    return n;
  };
  EXPECT_EQ(count("SeaBIOS (version"), 2u);
  EXPECT_EQ(count("ata0-0: BULKHEAD IDE DISK ATA-6 Hard-Disk (1 MiBytes)"), 1u);
  EXPECT_EQ(count("Booting from Hard Disk..."), 1u);
}

TEST(Bios, BadBiosImagesGetOneClearLine) {
  REQUIRE_KVM();
  std::vector<uint8_t> noJump(64 * 1024, 0x90);
  std::vector<uint8_t> truncated(100 * 1000, 0);
  struct Case {
    std::string bios;
    std::string says;
  } cases[] = {
      {"/nonexistent/bios.bin", "/nonexistent/bios.bin"},
      {writeFile("bios-empty.bin", {}), "the BIOS image is empty"},
      {writeFile("bios-truncated.bin", truncated), "in whole 64 KiB units; this one has 100000"},
      {writeFile("bios-nojump.bin", noJump), "not a BIOS image: no far jump at the reset vector"},
  };
  std::string disk = writeFile("bios-disk.img", std::vector<uint8_t>(512, 0));
  for (const Case& c : cases) {
    RunResult run = runBulkhead({"run", "--bios", c.bios, "--disk", "path=" + disk});
    EXPECT_EQ(run.status, 2) << c.bios << ": " << run.err;
    EXPECT_NE(run.err.find(c.says), std::string::npos) << run.err;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  }
}

}  // namespace
}  // namespace bulkhead::testing
