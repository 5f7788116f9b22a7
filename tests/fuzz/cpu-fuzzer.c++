// libFuzzer target: the software CPU (the core's interpreter of guest code) running arbitrary
// bytes. A guest controls every byte the decoder and the executor see, so whatever they are,
// the core must neither crash nor touch memory outside the guest's (ASan and UBSan watch), and
// the architectural state must keep the invariants the interpreter promises.
//
// Input: [mode (1 byte)][code...]. Mode bits 0-1 pick real mode, 32-bit protected mode or
// 64-bit long mode (with 4-level identity paging); bit 2 sets an IDT whose handlers return,
// so faults are delivered and execution goes on. The code is copied to 0x1000 and over the
// whole first 64 KiB (repeated), so jumps land in fuzzer-made code too.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernel/vcpu/emu/cpu.h"

namespace bulkhead::emu {
namespace {

constexpr uint64_t RAM = 1 << 20;
constexpr uint64_t CODE = 0x1000, GDT = 0x80000, IDT = 0x81000, TABLES = 0x90000;
constexpr uint64_t HANDLER = 0x82000;  // IRET (or IRETQ)

class FuzzBus final : public CpuBus {
 public:
  FuzzBus() : ram(RAM) {}
  uint8_t* page(uint64_t physical, bool) override {
    return physical < RAM ? ram.data() + (physical & ~0xfffull) : nullptr;
  }
  uint64_t mmioRead(uint64_t address, unsigned) override { return address * 0x9e3779b1; }
  void mmioWrite(uint64_t, unsigned, uint64_t) override {}
  uint64_t portRead(uint16_t port, unsigned) override { return port * 31u; }
  void portWrite(uint16_t, unsigned, uint64_t) override {}
  int acknowledgeInterrupt() override { return -1; }
  uint64_t timestamp() override { return ++ticks; }
  template <typename T>
  void store(uint64_t at, T value) {
    memcpy(ram.data() + at, &value, sizeof(T));
  }
  std::vector<uint8_t> ram;
  uint64_t ticks = 0;
};

uint64_t descriptor(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags) {
  return (limit & 0xffff) | (static_cast<uint64_t>(base & 0xffffff) << 16) |
         (static_cast<uint64_t>(access) << 40) |
         (static_cast<uint64_t>((limit >> 16) & 0xf) << 48) | (static_cast<uint64_t>(flags) << 52) |
         (static_cast<uint64_t>(base >> 24) << 56);
}

// The invariant that failed is named on stderr before the abort, for whoever reads the crash.
void check(bool ok, const char* what) {
  if (ok) return;
  fprintf(stderr, "cpu-fuzzer: %s\n", what);
  abort();
}

}  // namespace
}  // namespace bulkhead::emu

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulkhead;
  using namespace bulkhead::emu;
  if (size < 2) return 0;
  unsigned mode = data[0] % 3;
  bool idt = data[0] & 4;
  FuzzBus bus;
  for (uint64_t at = 0; at < 0x10000; at += size - 1) {
    memcpy(bus.ram.data() + at, data + 1, std::min<uint64_t>(size - 1, 0x10000 - at));
  }
  memcpy(bus.ram.data() + CODE, data + 1, size - 1);
  Cpu cpu(bus, emuSupportedCpuid());
  CpuState& s = cpu.state();
  if (mode == 0) {
    s.rip = CODE;
    s.segment[CS].selector = 0;
    s.segment[CS].base = 0;
  } else {
    bus.store<uint64_t>(GDT + 0x08, descriptor(0, 0xfffff, 0x9a, mode == 2 ? 0xa : 0xc));
    bus.store<uint64_t>(GDT + 0x10, descriptor(0, 0xfffff, 0x92, 0xc));
    bus.store<uint64_t>(GDT + 0x18, descriptor(0, 0xfffff, 0xfa, 0xc));  // ring-3 code
    bus.store<uint64_t>(GDT + 0x20, descriptor(0, 0xfffff, 0xf2, 0xc));  // ring-3 data
    s.gdtBase = GDT;
    s.gdtLimit = 0x27;
    s.cr0 = CR0_PE | CR0_ET;
    for (SegmentState& segment : s.segment) segment = flatSegment(0x10, false, false, 0);
    s.segment[CS] = flatSegment(0x08, true, mode == 2, 0);
    if (mode == 2) {
      bus.store<uint64_t>(TABLES, (TABLES + 0x1000) | 7);
      bus.store<uint64_t>(TABLES + 0x1000, (TABLES + 0x2000) | 7);
      bus.store<uint64_t>(TABLES + 0x2000, 0x87);  // one 2 MiB page: the first 2 MiB
      s.cr0 |= CR0_PG | CR0_WP;
      s.cr3 = TABLES;
      s.cr4 = CR4_PAE | CR4_OSFXSR;
      s.efer = EFER_LME | EFER_LMA | EFER_NXE;
    }
    s.gpr[4] = 0x70000;
    s.rip = CODE;
  }
  if (idt) {
    bus.ram[HANDLER] = 0x48;  // REX.W IRETQ in 64-bit mode; a harmless DEC EAX before IRET else
    bus.ram[HANDLER + 1] = 0xcf;
    for (unsigned vector = 0; vector < 256; ++vector) {
      if (mode == 0) {
        bus.store<uint32_t>(vector * 4, HANDLER + 1);  // segment 0, offset
      } else if (mode == 1) {
        uint64_t gate = (HANDLER & 0xffff) | (0x08ull << 16) | (0x8eull << 40) |
                        ((HANDLER >> 16 & 0xffff) << 48);
        bus.store<uint64_t>(IDT + vector * 8, gate);
      } else {
        uint64_t gate = (HANDLER & 0xffff) | (0x08ull << 16) | (0x8eull << 40) |
                        ((HANDLER >> 16 & 0xffff) << 48);
        bus.store<uint64_t>(IDT + vector * 16, gate);
        bus.store<uint64_t>(IDT + vector * 16 + 8, 0);
      }
    }
    if (mode != 0) {
      s.idtBase = IDT;
      s.idtLimit = mode == 1 ? 256 * 8 - 1 : 256 * 16 - 1;
    }
  }
  cpu.stateChanged();
  uint64_t budget = 1000;
  for (int round = 0; round < 2; ++round) {
    uint64_t before = cpu.instructions();
    StopReason stop = cpu.run(budget);
    // A run looks at its budget between chains: it retires at most the budget plus one chain
    // (Cpu::CHAINED_BLOCKS = 64 blocks of at most 64 instructions).
    check(cpu.instructions() - before <= budget + 64 * 64, "ran past its budget");
    // EFLAGS bit 1 is always set; bits 3, 5 and 15 and 22-63 always clear (SDM Vol. 1, 3.4.3).
    if (!((s.rflags & 2) && !(s.rflags & (8 | 0x20 | 0x8000 | ~0x3fffffull)))) {
      fprintf(stderr, "cpu-fuzzer: RFLAGS %#llx at RIP %#llx\n",
              static_cast<unsigned long long>(s.rflags), static_cast<unsigned long long>(s.rip));
    }
    check((s.rflags & 2) && !(s.rflags & (8 | 0x20 | 0x8000 | ~0x3fffffull)),
          "RFLAGS has a reserved bit wrong");
    check(cpu.cpl() <= 3, "CPL above 3");
    check(cpu.codeCacheBytes() <= Cpu::CODE_CACHE_BYTES, "the code cache passed its bound");
    if (stop == StopReason::FAILED) check(!cpu.failure().empty(), "a failure without a reason");
    if (stop != StopReason::BUDGET) break;
  }
  return 0;
}
