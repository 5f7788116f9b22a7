// BIOS guests: Debian's SeaBIOS, unmodified, boots guestlib's two-stage boot sector from a
// virtio-blk disk (stage 2 comes in through INT 13h); bad BIOS images get one clear line.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
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
  EXPECT_NE(run.err.find("RamSize: 0x04000000 [cmos]"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("found virtio-blk at 00:01.0"), std::string::npos);
  EXPECT_NE(run.err.find("Booting from Hard Disk"), std::string::npos);
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
  for (const Case& c : cases) {
    RunResult run = runBulkhead({"run", "--bios", c.bios});
    EXPECT_EQ(run.status, 2) << c.bios << ": " << run.err;
    EXPECT_NE(run.err.find(c.says), std::string::npos) << run.err;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  }
}

}  // namespace
}  // namespace bulkhead::testing
