// What the software CPU's instruction tests share: a RAM-backed bus, 64-bit and 32-bit
// protected-mode machines, and a way to run the same bytes on this host's own CPU.
#pragma once

#include <sys/mman.h>

#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kernel/vcpu/emu/cpu.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

constexpr uint64_t CODE = 0x1000;
constexpr uint64_t PAGE_TABLES = 0x10000;  // PML4, PDPT, PD, PT
constexpr uint64_t DATA = 0x20000;
constexpr uint64_t GDT = 0x8000;
constexpr uint64_t STACK_TOP = 0x30000;
constexpr uint64_t RAM = 2 << 20;  // code runs at 1 MiB in the far-call test

class TestBus : public CpuBus {
 public:
  TestBus() : ram(RAM) {}
  uint8_t* page(uint64_t physical, bool) override {
    return physical < RAM ? ram.data() + (physical & ~0xfffull) : nullptr;
  }
  uint64_t mmioRead(uint64_t, unsigned) override { return ~0ull; }
  void mmioWrite(uint64_t, unsigned, uint64_t) override {}
  uint64_t portRead(uint16_t port, unsigned) override { return port == 0x60 ? 0x42 : 0xff; }
  void portWrite(uint16_t port, unsigned, uint64_t value) override {
    written.push_back({port, value});
    if (onPortWrite) onPortWrite(port);
  }
  int acknowledgeInterrupt() override { return std::exchange(pendingVector, -1); }
  uint64_t timestamp() override { return 1000; }

  int pendingVector = -1;  // what the interrupt controller answers next
  std::function<void(uint16_t)> onPortWrite;

  void put(uint64_t at, const std::vector<uint8_t>& bytes) {
    memcpy(ram.data() + at, bytes.data(), bytes.size());
  }
  template <typename T>
  void store(uint64_t at, T value) {
    memcpy(ram.data() + at, &value, sizeof(T));
  }
  template <typename T>
  T load(uint64_t at) {
    T value;
    memcpy(&value, ram.data() + at, sizeof(T));
    return value;
  }

  std::vector<uint8_t> ram;
  std::vector<std::pair<uint16_t, uint64_t>> written;
};

// A CPU in 64-bit mode: identity-mapped first 2 MiB with 4 KiB pages (so tests can unmap
// single pages), flat segments, the stack at STACK_TOP.
struct LongMode {
  TestBus bus;
  Cpu cpu{bus, emuSupportedCpuid()};
  LongMode() {
    bus.store<uint64_t>(PAGE_TABLES, (PAGE_TABLES + 0x1000) | 7);
    bus.store<uint64_t>(PAGE_TABLES + 0x1000, (PAGE_TABLES + 0x2000) | 7);
    bus.store<uint64_t>(PAGE_TABLES + 0x2000, (PAGE_TABLES + 0x3000) | 7);
    for (uint64_t i = 0; i < 512; ++i)
      bus.store<uint64_t>(PAGE_TABLES + 0x3000 + i * 8, (i << 12) | 7);
    bus.store<uint64_t>(GDT + 0x08, 0x00af9b000000ffff);  // 64-bit code
    bus.store<uint64_t>(GDT + 0x10, 0x00cf93000000ffff);  // data
    CpuState& s = cpu.state();
    s.gdtBase = GDT;
    s.gdtLimit = 0x17;
    s.cr0 = CR0_PE | CR0_ET | CR0_PG | CR0_WP;
    s.cr3 = PAGE_TABLES;
    s.cr4 = CR4_PAE | CR4_OSFXSR;
    s.efer = EFER_LME | EFER_LMA | EFER_NXE;
    for (SegmentState& segment : s.segment) segment = flatSegment(0x10, false, false, 0);
    s.segment[CS] = flatSegment(0x08, true, true, 0);
    s.gpr[4] = STACK_TOP;
    s.rip = CODE;
    cpu.stateChanged();
  }
  // Runs `code` (then HLT) from CODE; true when it reached the HLT.
  bool run(std::vector<uint8_t> code) {
    code.push_back(0xf4);
    bus.put(CODE, code);
    cpu.state().rip = CODE;
    cpu.state().halted = false;
    return cpu.run(100000) == StopReason::HALTED;
  }
  // An interrupt gate for `vector` (vectors 0 to 0x20) to `handler`.
  static constexpr uint64_t IDT = 0x9000;
  void handle(unsigned vector, uint64_t handler) {
    uint64_t gate =
        (handler & 0xffff) | (0x08ull << 16) | (0x8eull << 40) | ((handler >> 16 & 0xffff) << 48);
    bus.store<uint64_t>(IDT + vector * 16, gate);
    bus.store<uint64_t>(IDT + vector * 16 + 8, handler >> 32);
    cpu.state().idtBase = IDT;
    cpu.state().idtLimit = 0x21 * 16 - 1;
  }
  void unmap(uint64_t address) {
    bus.store<uint64_t>(PAGE_TABLES + 0x3000 + (address >> 12) * 8, 0);
  }
  void readOnly(uint64_t address) {
    bus.store<uint64_t>(PAGE_TABLES + 0x3000 + (address >> 12) * 8, address | 5);
  }
  uint64_t& reg(unsigned i) { return cpu.state().gpr[i]; }
};

// --- Arithmetic flags: the emulator against this host's CPU --------------------------------

struct NativeRegisters {
  uint64_t rax, rbx, rcx, rdx, flags;
};

extern "C" void runNativeCode(NativeRegisters* registers, void* code);
// --- Protected mode: far transfers, gates, privilege ------------------------------------------

// A 32-bit protected-mode machine with ring-0 and ring-3 segments, a TSS and an IDT.
struct ProtectedMode {
  static constexpr uint64_t GDT = 0x8000, IDT = 0x9000, TSS = 0xa000;
  TestBus bus;
  Cpu cpu{bus, emuSupportedCpuid()};
  static uint64_t descriptor(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags) {
    return (limit & 0xffff) | (static_cast<uint64_t>(base & 0xffffff) << 16) |
           (static_cast<uint64_t>(access) << 40) |
           (static_cast<uint64_t>((limit >> 16) & 0xf) << 48) |
           (static_cast<uint64_t>(flags) << 52) | (static_cast<uint64_t>(base >> 24) << 56);
  }
  ProtectedMode() {
    bus.store<uint64_t>(GDT + 0x08, descriptor(0, 0xfffff, 0x9a, 0xc));       // ring-0 code
    bus.store<uint64_t>(GDT + 0x10, descriptor(0, 0xfffff, 0x92, 0xc));       // ring-0 data
    bus.store<uint64_t>(GDT + 0x18, descriptor(0, 0xfffff, 0xfa, 0xc));       // ring-3 code
    bus.store<uint64_t>(GDT + 0x20, descriptor(0, 0xfffff, 0xf2, 0xc));       // ring-3 data
    bus.store<uint64_t>(GDT + 0x28, descriptor(TSS, 0x67, 0x89, 0));          // 32-bit TSS
    bus.store<uint64_t>(GDT + 0x30, descriptor(0x100000, 0xfff, 0x9a, 0x4));  // code at 1 MiB
    bus.store<uint32_t>(TSS + 4, 0x7000);                                     // ESP0
    bus.store<uint32_t>(TSS + 8, 0x10);                                       // SS0
    CpuState& s = cpu.state();
    s.gdtBase = GDT;
    s.gdtLimit = 0x37;
    s.idtBase = IDT;
    s.idtLimit = 0x7ff;
    s.cr0 = CR0_PE | CR0_ET;
    for (SegmentState& segment : s.segment) segment = flatSegment(0x10, false, false, 0);
    s.segment[CS] = flatSegment(0x08, true, false, 0);
    s.gpr[4] = 0x6000;
    cpu.stateChanged();
  }
  void gate(uint8_t vector, uint32_t handler, uint8_t access) {
    bus.store<uint64_t>(IDT + vector * 8, (handler & 0xffff) | (0x08ull << 16) |
                                              (static_cast<uint64_t>(access) << 40) |
                                              (static_cast<uint64_t>(handler >> 16) << 48));
  }
  StopReason run(uint64_t at, const std::vector<uint8_t>& code) {
    bus.put(at, code);
    cpu.state().rip = at;
    cpu.state().halted = false;
    return cpu.run(1000);
  }
};

}  // namespace bulkhead::emu
