// bulkhead-prescan: classifies the instructions a guest kernel can reach (prescan.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernel/boot/elf.h"
#include "tools/prescan/prescan.h"

namespace {

const char* const USAGE =
    R"(bulkhead-prescan: which instructions of a guest kernel defeat trap-and-emulate

usage: bulkhead-prescan IMAGE [--entry ADDR] [--mode 16|32|64] [--base ADDR] [--depth N]
                              [--patch-sites] [--all]

IMAGE is an ELF kernel (32- or 64-bit, Multiboot kernels included: its loadable segments at
their virtual addresses, its entry point and width) or a flat binary (then --entry and --mode
are needed, and --base says where it is loaded, by default at the entry).

Prints how many reachable instructions are unprivileged, privileged (trap at CPL > 0) and
sensitive but unprivileged (misbehave at CPL > 0 without trapping), and where the sensitive
ones are. --patch-sites lists every privileged and sensitive address, the sites a
deprivileged monitor would patch with INT3; --all lists every instruction reached.
)";

int fail(const std::string& message) {
  fprintf(stderr, "bulkhead-prescan: %s\n", message.c_str());
  return 2;
}

bool number(const char* text, uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  out = strtoull(text, &end, 0);
  return *text != '\0' && errno == 0 && *end == '\0';
}

// Loads an ELF's PT_LOAD segments at their virtual addresses; "" or what is wrong.
std::string loadElf(const std::vector<uint8_t>& file, bulkhead::CodeImage& image, uint64_t& entry,
                    unsigned& bits) {
  auto bytes = kj::arrayPtr(file.data(), file.size());
  absl::StatusOr<bulkhead::ElfFile> elf = bulkhead::readElf(bytes);
  if (!elf.ok()) return std::string(elf.status().message());
  for (const bulkhead::ElfSegment& segment : elf->segments) {
    if (segment.type != bulkhead::PT_LOAD) continue;
    image.add(segment.virtualAddress,
              bytes.slice(segment.offset, segment.offset + segment.fileSize));
  }
  entry = elf->entry;
  bits = elf->is64 ? 64 : 32;
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    fputs(USAGE, stderr);
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h") {
    fputs(USAGE, stdout);
    return 0;
  }
  std::string path;
  uint64_t entry = 0, base = 0, depth = 256;
  bool entryGiven = false, baseGiven = false, patchSites = false, all = false;
  unsigned bits = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](uint64_t& out) {
      return i + 1 < args.size() && number(args[++i].c_str(), out);
    };
    if (a == "--entry") {
      if (!value(entry)) return fail("--entry needs an address");
      entryGiven = true;
    } else if (a == "--base") {
      if (!value(base)) return fail("--base needs an address");
      baseGiven = true;
    } else if (a == "--depth") {
      if (!value(depth) || depth == 0) return fail("--depth needs a positive number");
    } else if (a == "--mode") {
      uint64_t mode = 0;
      if (!value(mode) || (mode != 16 && mode != 32 && mode != 64)) {
        return fail("--mode is 16, 32 or 64");
      }
      bits = mode;
    } else if (a == "--patch-sites") {
      patchSites = true;
    } else if (a == "--all") {
      all = true;
    } else if (a.rfind("--", 0) == 0) {
      return fail("unknown option " + a + "; see bulkhead-prescan --help");
    } else if (path.empty()) {
      path = a;
    } else {
      return fail("one image at a time");
    }
  }
  if (path.empty()) return fail("no image given; see bulkhead-prescan --help");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat info;
  if (fd < 0 || fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    return fail("cannot read " + path + (fd < 0 ? std::string(": ") + strerror(errno) : ""));
  }
  std::vector<uint8_t> file(info.st_size);
  if (read(fd, file.data(), file.size()) != static_cast<ssize_t>(file.size())) {
    return fail("cannot read " + path);
  }
  close(fd);

  bulkhead::CodeImage image;
  if (file.size() >= 16 && memcmp(file.data(),
                                  "\x7f"
                                  "ELF",
                                  4) == 0) {
    unsigned elfBits = 0;
    uint64_t elfEntry = 0;
    std::string error = loadElf(file, image, elfEntry, elfBits);
    if (!error.empty()) return fail(path + ": " + error);
    if (!entryGiven) entry = elfEntry;
    if (bits == 0) bits = elfBits;
  } else {
    if (!entryGiven || bits == 0) return fail(path + " is not ELF: give --entry ADDR and --mode");
    image.add(baseGiven ? base : entry, kj::arrayPtr(file.data(), file.size()));
  }
  bulkhead::PrescanResult result =
      bulkhead::prescan(image, entry, {bits, static_cast<unsigned>(depth)});
  size_t total = result.instructions.size();
  printf("%s: entry %#llx, %u-bit, %zu instructions reached\n", path.c_str(),
         (unsigned long long)entry, bits, total);
  printf("  unprivileged             %zu\n", result.counts[0]);
  printf("  privileged (trap)        %zu\n", result.counts[1]);
  printf("  sensitive, unprivileged  %zu\n", result.counts[2]);
  for (const auto& i : result.instructions) {
    bool show = all || (patchSites ? i.kind != bulkhead::InstructionClass::UNPRIVILEGED
                                   : i.kind == bulkhead::InstructionClass::SENSITIVE);
    if (show) {
      printf("%#llx  %-12s  %s\n", (unsigned long long)i.address, bulkhead::className(i.kind),
             i.text.c_str());
    }
  }
  return 0;
}
