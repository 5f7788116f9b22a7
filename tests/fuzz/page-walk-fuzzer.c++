// libFuzzer target: the page walker (kernel/x86/page-walk), which the software CPU's TLB fill,
// the guest views and the crash reports run over tables the guest wrote. Any tables, any
// registers, any address: the walk must end (a bounded number of levels), say either where the
// page is or why not, agree with itself between a look and a CPU access, and never read
// outside guest RAM.
//
// Input: [cr0 cr3 cr4 efer: 4 x 8 bytes][linear: 8][access: 1][RAM image: the rest, at 0].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernel/x86/page-walk.h"

namespace {

class Tables final : public bulkhead::PageTables {
 public:
  explicit Tables(std::vector<uint8_t> ram) : ram(std::move(ram)) {}
  bool read(uint64_t address, unsigned bytes, uint64_t& entry) override {
    ++reads;
    if (bytes != 4 && bytes != 8) abort();  // entries are 4 or 8 bytes, nothing else
    if (address > ram.size() || ram.size() - address < bytes) return false;
    entry = 0;
    memcpy(&entry, ram.data() + address, bytes);
    return true;
  }
  void setBits(uint64_t address, unsigned bytes, uint64_t bits) override {
    if (address > ram.size() || ram.size() - address < bytes) abort();  // only entries it read
    uint64_t entry = 0;
    memcpy(&entry, ram.data() + address, bytes);
    entry |= bits;
    memcpy(ram.data() + address, &entry, bytes);
  }
  std::vector<uint8_t> ram;
  unsigned reads = 0;
};

void check(bool ok, const char* what) {
  if (ok) return;
  fprintf(stderr, "page-walk-fuzzer: %s\n", what);
  abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t HEADER = 4 * 8 + 8 + 1;
  if (size < HEADER) return 0;
  bulkhead::PagingRegisters registers;
  uint64_t words[5];
  memcpy(words, data, sizeof(words));
  registers.cr0 = words[0];
  registers.cr3 = words[1] & 0xfffff;  // the tables somewhere in the image's first MiB
  registers.cr4 = words[2];
  registers.efer = words[3];
  registers.maxPhysicalBits = 40;
  uint64_t linear = words[4];
  uint8_t kind = data[40];
  std::vector<uint8_t> ram(data + HEADER, data + size);
  Tables looked(ram), accessed(ram);

  bulkhead::PageWalk look = bulkhead::walkPageTables(registers, linear, looked, nullptr);
  bulkhead::PageAccess access{(kind & 1) != 0, (kind & 2) != 0, (kind & 4) != 0};
  bulkhead::PageWalk walk = bulkhead::walkPageTables(registers, linear, accessed, &access);

  check(looked.reads <= 5 && accessed.reads <= 5, "a walk read more than five levels");
  check(look.steps.size() <= 5, "a look recorded more than five levels");
  check(look.mapped == (look.fault == bulkhead::WalkFault::NONE), "mapped and a fault disagree");
  check(!walk.mapped || walk.fault == bulkhead::WalkFault::NONE,
        "a CPU access mapped with a fault");
  if (look.mapped && look.mode != bulkhead::PagingMode::NONE) {
    check(look.pageSize == 4096 || look.pageSize == (2 << 20) || look.pageSize == (4 << 20) ||
              look.pageSize == (1ull << 30),
          "a page size no x86 has");
  }
  // A CPU access finds the same page a look finds, unless the access itself is not allowed.
  if (walk.mapped) {
    check(look.mapped && look.physical == walk.physical, "a look and an access disagree");
  }
  std::string said = bulkhead::describeWalkFault(look, linear);
  check(look.mapped || !said.empty(), "a fault without a description");
  return 0;
}
