// The host-backend openers without a VM: what they open, what they refuse and how they say it,
// and that they never delete or truncate a file they were not asked to.
#include "kernel/machine/host-backends.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace bulkhead {
namespace {

std::string scratch(const std::string& name) {
  std::string path = ::testing::TempDir() + "/bulkhead-backends-" + name;
  unlink(path.c_str());
  return path;
}

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string readFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

TEST(HostBackends, ADiskImageIsOpenedAndItsKeysTaken) {
  std::string path = scratch("disk.img");
  writeFile(path, std::string(4096, '\0'));
  DeviceOptions options = {{"path", path}, {"serial", "d1"}};
  absl::StatusOr<HostSide> side = openHostSide(HostBackend::DISK, options, true);
  ASSERT_TRUE(side.ok()) << side.status();
  EXPECT_EQ(side->backends.size(), 1u);
  // path= is the core's; the rest is the server's.
  EXPECT_EQ(options, (DeviceOptions{{"serial", "d1"}}));
}

TEST(HostBackends, ADiskThatIsMissingSmallOrNotAFileIsRefusedInOneLine) {
  DeviceOptions none;
  EXPECT_EQ(openHostSide(HostBackend::DISK, none, true).status().message(),
            "needs path=IMAGE (a raw disk image)");
  std::string missing = scratch("missing.img");
  absl::Status status = openDiskImage(missing, false).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("cannot open disk image " + missing + " for writing"),
            std::string::npos)
      << status;
  std::string tiny = scratch("tiny.img");
  writeFile(tiny, "abc");
  EXPECT_NE(openDiskImage(tiny, false).status().message().find("less than one 512-byte sector"),
            std::string::npos);
  EXPECT_NE(openDiskImage(::testing::TempDir(), true).status().message().find("not a regular"),
            std::string::npos);
}

TEST(HostBackends, AFileBackendAppendsAndNeverTruncates) {
  std::string path = scratch("post.log");
  writeFile(path, "kept\n");
  DeviceOptions options = {{"file", path}, {"iobase", "0x80"}};
  absl::StatusOr<HostSide> side = openHostSide(HostBackend::FILE, options, true);
  ASSERT_TRUE(side.ok()) << side.status();
  ASSERT_TRUE(side->output.get() >= 0);
  ASSERT_EQ(write(side->output.get(), "new\n", 4), 4);
  EXPECT_EQ(readFile(path), "kept\nnew\n");
  EXPECT_EQ(options, (DeviceOptions{{"iobase", "0x80"}}));
  DeviceOptions without;
  EXPECT_EQ(openHostSide(HostBackend::FILE, without, true).status().message(), "needs file=PATH");
}

TEST(HostBackends, ASocketBackendListensAndReplacesOnlyAStaleSocket) {
  std::string path = scratch("net.sock");
  DeviceOptions options = {{"socket", path}, {"listen", "on"}};
  absl::StatusOr<HostSide> side = openHostSide(HostBackend::NET, options, true);
  ASSERT_TRUE(side.ok()) << side.status();
  struct stat info;
  ASSERT_EQ(stat(path.c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  // A regular file at the path is left alone and refused.
  std::string file = scratch("not-a-socket");
  writeFile(file, "user data");
  DeviceOptions onFile = {{"socket", file}, {"listen", "on"}};
  EXPECT_FALSE(openHostSide(HostBackend::NET, onFile, true).ok());
  EXPECT_EQ(readFile(file), "user data");
}

TEST(HostBackends, NetNeedsOneOfSocketAndTap) {
  DeviceOptions both = {{"socket", "/tmp/x"}, {"tap", "tap0"}};
  EXPECT_EQ(openHostSide(HostBackend::NET, both, true).status().message(),
            "give socket=PATH or tap=NAME, not both");
  DeviceOptions listeningTap = {{"tap", "tap0"}, {"listen", "on"}};
  EXPECT_EQ(openHostSide(HostBackend::NET, listeningTap, true).status().message(),
            "listen applies to socket=PATH only");
}

TEST(HostBackends, AnImageLargerThanAllowedOrNotAFileIsRefused) {
  EXPECT_NE(readImage(::testing::TempDir(), "kernel").status().message().find("not a regular"),
            std::string::npos);
  std::string path = scratch("kernel.bin");
  writeFile(path,
            "\x7f"
            "ELF");
  absl::StatusOr<std::vector<uint8_t>> image = readImage(path, "kernel");
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->size(), 4u);
}

TEST(HostBackends, AListeningPathMayOnlyBeNothingOrAStaleSocket) {
  std::string nothing = scratch("nothing.sock");
  EXPECT_TRUE(checkListeningPath(nothing).ok());
  std::string file = scratch("file");
  writeFile(file, "data");
  EXPECT_NE(checkListeningPath(file).message().find("exists and is not a socket"),
            std::string::npos);
  EXPECT_EQ(readFile(file), "data");
  // A socket whose listener is gone is stale: it may be replaced.
  std::string stale = scratch("stale.sock");
  {
    DeviceOptions options = {{"socket", stale}, {"listen", "on"}};
    absl::StatusOr<HostSide> side = openHostSide(HostBackend::NET, options, true);
    ASSERT_TRUE(side.ok()) << side.status();
    // While it listens, nobody may take its path.
    EXPECT_NE(checkListeningPath(stale).message().find("another process listens"),
              std::string::npos);
  }
  EXPECT_TRUE(checkListeningPath(stale).ok());
}

TEST(HostBackends, ListeningPlacesAreCheckedBeforeAnythingStarts) {
  EXPECT_EQ(checkListeningPath("/nonexistent/folder/vm.sock").message(),
            "/nonexistent/folder/vm.sock: the folder /nonexistent/folder does not exist");
  // A TCP port some program listens on is refused (--gdb), in the project's words.
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  uint16_t port = ntohs(address.sin_port);
  EXPECT_NE(checkLocalTcpPort(port).message().find("is in use by another program"),
            std::string::npos);
  close(listener);
  EXPECT_TRUE(checkLocalTcpPort(port).ok());
}

}  // namespace
}  // namespace bulkhead
