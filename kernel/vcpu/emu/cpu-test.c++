// Instruction-level tests of the software CPU, with no guest and no /dev/kvm: arithmetic flags
// against this host's own CPU (the same bytes run natively), string instructions, far control
// transfers, privilege changes through gates, page faults and their error codes, SSE.
#include "kernel/vcpu/emu/cpu.h"

#include <sys/mman.h>

#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {
namespace {

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
asm(R"(
  .text
  .globl runNativeCode
runNativeCode:
  push %rbx
  push %r12
  mov %rdi, %r12
  mov 0(%r12), %rax
  mov 8(%r12), %rbx
  mov 16(%r12), %rcx
  mov 24(%r12), %rdx
  pushq 32(%r12)
  popfq
  call *%rsi
  pushfq
  popq 32(%r12)
  mov %rax, 0(%r12)
  mov %rbx, 8(%r12)
  mov %rcx, 16(%r12)
  mov %rdx, 24(%r12)
  pop %r12
  pop %rbx
  ret
)");

struct AluCase {
  const char* name;
  std::vector<uint8_t> bytes;  // operates on rax/rbx/rcx/rdx at some width
  uint64_t definedFlags;       // flags the SDM defines for it (others are not compared)
};

std::vector<AluCase> aluCases() {
  const uint64_t all = FLAGS_ARITH;
  const uint64_t noAf = all & ~FLAG_AF;
  std::vector<AluCase> cases;
  struct Binary {
    const char* name;
    uint8_t opcode;  // the r/m, reg form for 16/32/64 bits; opcode-1 for 8 bits
  };
  for (Binary b : {Binary{"add", 0x01},
                   {"or", 0x09},
                   {"adc", 0x11},
                   {"sbb", 0x19},
                   {"and", 0x21},
                   {"sub", 0x29},
                   {"xor", 0x31},
                   {"cmp", 0x39},
                   {"test", 0x85}}) {
    bool logic = b.opcode == 0x09 || b.opcode == 0x21 || b.opcode == 0x31 || b.opcode == 0x85;
    uint64_t defined = logic ? noAf : all;
    cases.push_back({b.name, {static_cast<uint8_t>(b.opcode - 1), 0xd8}, defined});  // op al, bl
    cases.push_back({b.name, {0x66, b.opcode, 0xd8}, defined});
    cases.push_back({b.name, {b.opcode, 0xd8}, defined});
    cases.push_back({b.name, {0x48, b.opcode, 0xd8}, defined});
  }
  struct Unary {
    const char* name;
    uint8_t opcode, modrm;
    uint64_t defined;
  };
  for (Unary u : {Unary{"neg", 0xf7, 0xd8, all},
                  {"not", 0xf7, 0xd0, 0},
                  {"inc", 0xff, 0xc0, all & ~FLAG_CF},
                  {"dec", 0xff, 0xc8, all & ~FLAG_CF},
                  {"mul", 0xf7, 0xe3, FLAG_CF | FLAG_OF},
                  {"imul", 0xf7, 0xeb, FLAG_CF | FLAG_OF}}) {
    cases.push_back({u.name, {static_cast<uint8_t>(u.opcode - 1), u.modrm}, u.defined});
    cases.push_back({u.name, {0x66, u.opcode, u.modrm}, u.defined});
    cases.push_back({u.name, {u.opcode, u.modrm}, u.defined});
    cases.push_back({u.name, {0x48, u.opcode, u.modrm}, u.defined});
  }
  // Shifts and rotates by CL (masked to 1..7 by the test for the flags it compares).
  for (Unary u : {Unary{"rol", 0xd3, 0xc0, FLAG_CF},
                  {"ror", 0xd3, 0xc8, FLAG_CF},
                  {"rcl", 0xd3, 0xd0, FLAG_CF},
                  {"rcr", 0xd3, 0xd8, FLAG_CF},
                  {"shl", 0xd3, 0xe0, noAf & ~FLAG_OF},
                  {"shr", 0xd3, 0xe8, noAf & ~FLAG_OF},
                  {"sar", 0xd3, 0xf8, noAf & ~FLAG_OF}}) {
    cases.push_back({u.name, {static_cast<uint8_t>(u.opcode - 1), u.modrm}, u.defined});
    cases.push_back({u.name, {0x66, u.opcode, u.modrm}, u.defined});
    cases.push_back({u.name, {u.opcode, u.modrm}, u.defined});
    cases.push_back({u.name, {0x48, u.opcode, u.modrm}, u.defined});
  }
  // Shifts by one: OF is defined.
  cases.push_back({"shl1", {0x48, 0xd1, 0xe0}, noAf});
  cases.push_back({"shr1", {0x48, 0xd1, 0xe8}, noAf});
  cases.push_back({"sar1", {0xd1, 0xf8}, noAf});
  cases.push_back({"imul2", {0x48, 0x0f, 0xaf, 0xc3}, FLAG_CF | FLAG_OF});
  cases.push_back({"imul3", {0x69, 0xc3, 0x78, 0x56, 0x34, 0x92}, FLAG_CF | FLAG_OF});
  cases.push_back({"bt", {0x48, 0x0f, 0xa3, 0xd8}, FLAG_CF});
  cases.push_back({"bts", {0x0f, 0xab, 0xd8}, FLAG_CF});
  cases.push_back({"shld", {0x48, 0x0f, 0xa5, 0xd8}, FLAG_CF | FLAG_ZF | FLAG_SF | FLAG_PF});
  cases.push_back({"shrd", {0x0f, 0xad, 0xd8}, FLAG_CF | FLAG_ZF | FLAG_SF | FLAG_PF});
  cases.push_back({"bswap", {0x48, 0x0f, 0xc8}, 0});
  cases.push_back({"xadd", {0x48, 0x0f, 0xc1, 0xd8}, all});
  cases.push_back({"cmpxchg", {0x48, 0x0f, 0xb1, 0xd9}, all});
  cases.push_back({"cqo", {0x48, 0x99}, 0});
  cases.push_back({"movsx", {0x48, 0x0f, 0xbe, 0xc3}, 0});
  cases.push_back({"setcc", {0x0f, 0x9c, 0xc0}, 0});
  cases.push_back({"cmov", {0x48, 0x0f, 0x47, 0xc3}, 0});
  cases.push_back({"lea", {0x48, 0x8d, 0x44, 0x8b, 0x7f}, 0});
  return cases;
}

TEST(EmuAlu, FlagsAndResultsMatchThisHostsCpu) {
  void* page =
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  std::mt19937_64 random(20261127);
  uint64_t interesting[] = {0,
                            1,
                            0x7f,
                            0x80,
                            0xff,
                            0x7fff,
                            0x8000,
                            0xffff,
                            0x7fffffff,
                            0x80000000,
                            0xffffffff,
                            0x7fffffffffffffff,
                            0x8000000000000000,
                            ~0ull};
  auto pick = [&]() {
    return random() % 3 == 0 ? interesting[random() % std::size(interesting)] : random();
  };
  unsigned compared = 0;
  LongMode emu;  // one machine for every case: each sets the registers it uses
  for (const AluCase& c : aluCases()) {
    for (int round = 0; round < 300; ++round) {
      NativeRegisters in{pick(), pick(), pick() & 0xff, pick(), 0x2 | (random() & FLAGS_ARITH)};
      if (std::string(c.name) != "rcl" && std::string(c.name) != "rcr" && c.bytes.back() >= 0xc0 &&
          (c.bytes[c.bytes.size() - 2] & 0xfe) == 0xd2) {
        in.rcx = 1 + random() % 7;  // multi-bit shifts: OF undefined, CF defined for count < width
      }
      if (std::string(c.name) == "rcl" || std::string(c.name) == "rcr") in.rcx = 1 + random() % 7;
      NativeRegisters native = in;
      std::vector<uint8_t> code = c.bytes;
      code.push_back(0xc3);
      memcpy(page, code.data(), code.size());
      runNativeCode(&native, page);

      emu.reg(0) = in.rax;
      emu.reg(3) = in.rbx;
      emu.reg(1) = in.rcx;
      emu.reg(2) = in.rdx;
      emu.cpu.state().rflags = in.flags;
      ASSERT_TRUE(emu.run(c.bytes)) << c.name << ": " << emu.cpu.failure();
      const CpuState& s = emu.cpu.state();
      SCOPED_TRACE(::testing::Message() << c.name << " [" << std::hex << unsigned(c.bytes[0]) << " "
                                        << unsigned(c.bytes[1]) << "] rax=" << in.rax << " rbx="
                                        << in.rbx << " rcx=" << in.rcx << " flags=" << in.flags);
      EXPECT_EQ(s.gpr[0], native.rax);
      EXPECT_EQ(s.gpr[3], native.rbx);
      EXPECT_EQ(s.gpr[1], native.rcx);
      EXPECT_EQ(s.gpr[2], native.rdx);
      EXPECT_EQ(s.rflags & c.definedFlags, native.flags & c.definedFlags);
      ++compared;
      if (::testing::Test::HasFailure()) {
        munmap(page, 4096);
        return;
      }
    }
  }
  munmap(page, 4096);
  EXPECT_GT(compared, 30000u);
}

// The fast path (fast.c++) against the generic interpreter, on the forms the native comparison
// above does not reach: memory operands (through the TLB, and across a page), immediates,
// sign and zero extension, conditional moves and sets, branches, the stack.
TEST(EmuAlu, FastPathDoesWhatTheGenericInterpreterDoes) {
  const uint64_t all = FLAGS_ARITH, noAf = FLAGS_ARITH & ~FLAG_AF;
  const uint64_t shifted = FLAG_CF | FLAG_SF | FLAG_ZF | FLAG_PF;
  const std::vector<AluCase> cases = {
      {"mov m64,r", {0x48, 0x89, 0x46, 0x08}, all},
      {"mov r64,m", {0x48, 0x8b, 0x46, 0x08}, all},
      {"mov r32,m", {0x8b, 0x46, 0x08}, all},
      {"mov r16,m", {0x66, 0x8b, 0x46, 0x08}, all},
      {"mov r8,m", {0x8a, 0x46, 0x08}, all},
      {"mov m8,r", {0x88, 0x5e, 0x08}, all},
      {"mov m32,i", {0xc7, 0x46, 0x08, 0x78, 0x56, 0x34, 0x92}, all},
      {"mov m64,i", {0x48, 0xc7, 0x46, 0x08, 0x78, 0x56, 0x34, 0x92}, all},
      {"mov r64,i64", {0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 0x88}, all},
      {"mov r16,i", {0x66, 0xb8, 0x34, 0x12}, all},
      {"mov r8,i", {0xb0, 0x7f}, all},
      {"mov r32d,m", {0x44, 0x8b, 0x46, 0x08}, all},
      {"mov m64 across a page", {0x48, 0x89, 0x86, 0xfd, 0x0e, 0x00, 0x00}, all},
      {"mov r32 across a page", {0x8b, 0x86, 0xfe, 0x0e, 0x00, 0x00}, all},
      {"add m64,r", {0x48, 0x01, 0x5e, 0x08}, all},
      {"add r64,m", {0x48, 0x03, 0x5e, 0x08}, all},
      {"add eax,i32", {0x05, 0x78, 0x56, 0x34, 0x92}, all},
      {"add r64,i8", {0x48, 0x83, 0xc0, 0xf0}, all},
      {"add m16,i16", {0x66, 0x81, 0x46, 0x08, 0x34, 0x92}, all},
      {"add m8,i8", {0x80, 0x46, 0x08, 0x9c}, all},
      {"adc m32,r", {0x11, 0x5e, 0x08}, all},
      {"sbb r64,m", {0x48, 0x1b, 0x5e, 0x08}, all},
      {"sub m32,i8", {0x83, 0x6e, 0x08, 0x05}, all},
      {"and m16,r", {0x66, 0x21, 0x46, 0x08}, noAf},
      {"or r8,m", {0x0a, 0x5e, 0x08}, noAf},
      {"xor m64,i8", {0x48, 0x83, 0x76, 0x08, 0xff}, noAf},
      {"cmp m64,r", {0x48, 0x39, 0x4e, 0x08}, all},
      {"cmp m8,i", {0x80, 0x7e, 0x08, 0x40}, all},
      {"test m32,r", {0x85, 0x56, 0x08}, noAf},
      {"test al,i", {0xa8, 0x81}, noAf},
      {"inc m64", {0x48, 0xff, 0x46, 0x08}, all},
      {"dec m16", {0x66, 0xff, 0x4e, 0x08}, all},
      {"neg m32", {0xf7, 0x5e, 0x08}, all},
      {"not m8", {0xf6, 0x56, 0x08}, all},
      {"shl m64,cl", {0x48, 0xd3, 0x66, 0x08}, shifted},
      {"shr r32,i", {0xc1, 0xe8, 0x05}, shifted},
      {"sar m16,1", {0x66, 0xd1, 0x7e, 0x08}, noAf},
      {"rol r64,i", {0x48, 0xc1, 0xc3, 0x0d}, FLAG_CF},
      {"ror m32,cl", {0xd3, 0x4e, 0x08}, FLAG_CF},
      {"imul r64,m", {0x48, 0x0f, 0xaf, 0x5e, 0x08}, FLAG_CF | FLAG_OF},
      {"imul r16,m,i16", {0x66, 0x69, 0x46, 0x08, 0x34, 0x12}, FLAG_CF | FLAG_OF},
      {"imul r32,r,i8", {0x6b, 0xcb, 0x85}, FLAG_CF | FLAG_OF},
      {"movzx r32,m8", {0x0f, 0xb6, 0x46, 0x08}, all},
      {"movzx r64,m16", {0x48, 0x0f, 0xb7, 0x46, 0x08}, all},
      {"movsx r32,m8", {0x0f, 0xbe, 0x4e, 0x08}, all},
      {"movsx r64,m16", {0x48, 0x0f, 0xbf, 0x46, 0x08}, all},
      {"movsxd r64,m32", {0x48, 0x63, 0x56, 0x08}, all},
      {"movzx r16,r8", {0x66, 0x0f, 0xb6, 0xd8}, all},
      {"lea r32", {0x8d, 0x44, 0x9e, 0x10}, all},
      {"lea r16", {0x66, 0x8d, 0x04, 0x0b}, all},
      {"cmovz r32,m", {0x0f, 0x44, 0x46, 0x08}, all},
      {"cmovl r64,r", {0x48, 0x0f, 0x4c, 0xd9}, all},
      {"cmovbe r16,r", {0x66, 0x0f, 0x46, 0xc2}, all},
      {"setnbe m8", {0x0f, 0x97, 0x46, 0x08}, all},
      {"setl r8", {0x0f, 0x9c, 0xc3}, all},
      {"push m64; pop r64", {0xff, 0x76, 0x08, 0x58}, all},
      {"push i8; pop r64", {0x6a, 0xf0, 0x5b}, all},
      {"push r64; pop r64", {0x51, 0x5a}, all},
      {"call; pop", {0xe8, 0x00, 0x00, 0x00, 0x00, 0x58}, all},
      {"call; ret", {0xe8, 0x02, 0x00, 0x00, 0x00, 0xeb, 0x01, 0xc3}, all},
      {"jz", {0x74, 0x02, 0xb0, 0x01}, all},
      {"jl", {0x7c, 0x02, 0xb0, 0x01}, all},
      {"jbe", {0x76, 0x02, 0xb0, 0x01}, all},
      {"jp", {0x7a, 0x02, 0xb0, 0x01}, all},
      {"jo", {0x70, 0x02, 0xb0, 0x01}, all},
      // Flags from one instruction read by the next (the fast path keeps them lazily).
      {"add; adc", {0x48, 0x01, 0xd8, 0x48, 0x11, 0xca}, all},
      {"cmp; inc; setb", {0x48, 0x39, 0xd8, 0xff, 0xc1, 0x0f, 0x92, 0xc2}, all},
      {"sub; rol 1; cmovo", {0x48, 0x29, 0xd8, 0x48, 0xd1, 0xc1, 0x48, 0x0f, 0x40, 0xc3}, all},
      {"shl cl; jz", {0x48, 0xd3, 0xe0, 0x74, 0x02, 0xb0, 0x01}, shifted},
      {"test; sbb", {0x85, 0xd8, 0x19, 0xc9}, all},
  };
  std::mt19937_64 random(20261128);
  LongMode fast, generic;
  generic.cpu.setFastPath(false);
  constexpr uint64_t BASE = DATA + 0x100;  // rsi: memory operands are at [rsi+8], or across a page
  unsigned compared = 0;
  for (const AluCase& c : cases) {
    for (int round = 0; round < 200; ++round) {
      uint64_t registers[4] = {random(), random(), random() % 8, random()};  // rax rcx rdx rbx
      uint64_t flags = 0x2 | (random() & FLAGS_ARITH);
      uint8_t memory[0x1010];
      for (uint8_t& byte : memory) byte = static_cast<uint8_t>(random());
      for (LongMode* emu : {&fast, &generic}) {
        for (unsigned i = 0; i < 4; ++i) emu->reg(i) = registers[i];
        emu->reg(6) = BASE;
        emu->reg(4) = STACK_TOP;
        emu->cpu.state().rflags = flags;
        emu->bus.put(DATA, std::vector<uint8_t>(memory, memory + sizeof(memory)));
        ASSERT_TRUE(emu->run(c.bytes)) << c.name << ": " << emu->cpu.failure();
      }
      SCOPED_TRACE(::testing::Message() << c.name << " rax=" << std::hex << registers[0]
                                        << " rcx=" << registers[1] << " flags=" << flags);
      for (unsigned i = 0; i < 16; ++i) EXPECT_EQ(fast.reg(i), generic.reg(i)) << "register " << i;
      EXPECT_EQ(fast.cpu.state().rip, generic.cpu.state().rip);
      EXPECT_EQ(fast.cpu.state().rflags & c.definedFlags,
                generic.cpu.state().rflags & c.definedFlags);
      EXPECT_EQ(0,
                memcmp(fast.bus.ram.data() + DATA, generic.bus.ram.data() + DATA, sizeof(memory)));
      EXPECT_EQ(0, memcmp(fast.bus.ram.data() + STACK_TOP - 64,
                          generic.bus.ram.data() + STACK_TOP - 64, 64));
      ++compared;
      if (::testing::Test::HasFailure()) return;
    }
  }
  EXPECT_EQ(compared, cases.size() * 200);
}

// A loop whose body patches its own first instruction: the next pass, reached through the
// block's link to itself, runs the patched code.
TEST(EmuPaging, CodePatchedInsideALoopIsSeenOnTheNextPass) {
  LongMode emu;
  emu.reg(1) = 0;
  // top: mov eax, 7; inc ecx; mov [rip-12], cl (top+1); cmp ecx, 3; jb top. Each pass loads
  // what the one before stored: 7, 1, 2 (the last two stores take the TLB's direct path).
  ASSERT_TRUE(emu.run({0xb8, 0x07, 0x00, 0x00, 0x00, 0xff, 0xc1, 0x88, 0x0d, 0xf4, 0xff, 0xff, 0xff,
                       0x83, 0xf9, 0x03, 0x72, 0xee}));
  EXPECT_EQ(emu.reg(1), 3u);
  EXPECT_EQ(emu.reg(0), 2u);
}

TEST(EmuAlu, DivideByZeroAndOverflowRaiseDivideError) {
  LongMode emu;
  // IDT entry 0 -> handler at CODE + 0x100 which halts.
  emu.cpu.state().idtBase = DATA;
  emu.cpu.state().idtLimit = 0xfff;
  uint64_t handler = CODE + 0x100;
  emu.bus.store<uint64_t>(
      DATA, (handler & 0xffff) | (0x08ull << 16) | (0x8eull << 40) | ((handler >> 16) << 48));
  emu.bus.store<uint64_t>(DATA + 8, handler >> 32);
  emu.bus.put(handler, {0xf4});
  emu.reg(0) = 10;
  emu.reg(2) = 0;
  emu.reg(3) = 0;
  ASSERT_TRUE(emu.run({0x48, 0xf7, 0xf3}));  // div rbx
  EXPECT_EQ(emu.cpu.state().rip, handler + 1);
  // The faulting instruction's address was pushed.
  EXPECT_EQ(emu.bus.load<uint64_t>(STACK_TOP - 40), CODE);
}

// --- String instructions --------------------------------------------------------------------

TEST(EmuString, RepMovsStosAndScasFollowCountAndDirection) {
  LongMode emu;
  for (int i = 0; i < 64; ++i) emu.bus.ram[DATA + i] = static_cast<uint8_t>(i + 1);
  emu.reg(6) = DATA;           // rsi
  emu.reg(7) = DATA + 0x1000;  // rdi
  emu.reg(1) = 64;
  ASSERT_TRUE(emu.run({0xf3, 0xa4}));  // rep movsb
  EXPECT_EQ(memcmp(&emu.bus.ram[DATA], &emu.bus.ram[DATA + 0x1000], 64), 0);
  EXPECT_EQ(emu.reg(1), 0u);
  EXPECT_EQ(emu.reg(6), DATA + 64);

  emu.reg(0) = 0xdeadbeef;
  emu.reg(7) = DATA + 0x2000;
  emu.reg(1) = 4;
  ASSERT_TRUE(emu.run({0xf3, 0xab}));  // rep stosd
  for (int i = 0; i < 4; ++i) EXPECT_EQ(emu.bus.load<uint32_t>(DATA + 0x2000 + 4 * i), 0xdeadbeefu);
  EXPECT_EQ(emu.bus.load<uint32_t>(DATA + 0x2010), 0u);

  // repne scasb finds byte 10 (at index 9): RCX counts down to 64 - 10.
  emu.reg(0) = 10;
  emu.reg(7) = DATA;
  emu.reg(1) = 64;
  ASSERT_TRUE(emu.run({0xf2, 0xae}));
  EXPECT_EQ(emu.reg(7), DATA + 10);
  EXPECT_EQ(emu.reg(1), 54u);
  EXPECT_TRUE(emu.cpu.state().rflags & FLAG_ZF);

  // std; movsq copies backwards and decrements.
  emu.reg(6) = DATA + 8;
  emu.reg(7) = DATA + 0x3008;
  emu.reg(1) = 2;
  ASSERT_TRUE(emu.run({0xfd, 0xf3, 0x48, 0xa5, 0xfc}));
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 0x3000), emu.bus.load<uint64_t>(DATA));
  EXPECT_EQ(emu.reg(6), DATA - 8);
}

TEST(EmuString, PortStringsAndInOut) {
  LongMode emu;
  emu.reg(2) = 0x60;
  ASSERT_TRUE(emu.run(
      {0xec, 0x88, 0xc3, 0xb0, 0x55, 0xee}));  // in al,dx; mov bl,al; mov al,0x55; out dx,al
  EXPECT_EQ(emu.reg(3) & 0xff, 0x42u);
  ASSERT_EQ(emu.bus.written.size(), 1u);
  EXPECT_EQ(emu.bus.written[0], (std::pair<uint16_t, uint64_t>{0x60, 0x55}));
}

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

TEST(EmuProtected, FarJumpCallAndReturnChangeCodeSegments) {
  ProtectedMode pm;
  // At 0x100000 (selector 0x30, base 1 MiB): mov eax,1; retf.
  pm.bus.put(0x100000, {0xb8, 0x01, 0x00, 0x00, 0x00, 0xcb});
  // call far 0x30:0; hlt
  ASSERT_EQ(pm.run(CODE, {0x9a, 0x00, 0x00, 0x00, 0x00, 0x30, 0x00, 0xf4}), StopReason::HALTED);
  EXPECT_EQ(pm.cpu.state().gpr[0], 1u);
  EXPECT_EQ(pm.cpu.state().segment[CS].selector, 0x08);
  EXPECT_EQ(pm.cpu.state().rip, CODE + 8);
  // jmp far to a data segment: #GP(selector), delivered through gate 13.
  pm.gate(13, CODE + 0x200, 0x8e);
  pm.bus.put(CODE + 0x200, {0xf4});
  ASSERT_EQ(pm.run(CODE, {0xea, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00}), StopReason::HALTED);
  EXPECT_EQ(pm.cpu.state().rip, CODE + 0x201);
  EXPECT_EQ(pm.bus.load<uint32_t>(pm.cpu.state().gpr[4]), 0x10u);  // the error code
}

TEST(EmuProtected, InterruptFromRingThreeSwitchesToTheTssStack) {
  ProtectedMode pm;
  pm.gate(0x80, CODE + 0x300, 0xee);  // DPL 3 interrupt gate
  pm.gate(0x81, CODE + 0x300, 0x8e);  // DPL 0: int 0x81 from ring 3 is #GP
  pm.gate(13, CODE + 0x400, 0x8e);
  pm.bus.put(CODE + 0x300, {0xf4});
  pm.bus.put(CODE + 0x400, {0xf4});
  CpuState& s = pm.cpu.state();
  s.segment[CS] = flatSegment(0x1b, true, false, 3);
  s.segment[SS] = flatSegment(0x23, false, false, 3);
  s.gpr[4] = 0x5000;
  s.tr = SegmentState{0x28, ProtectedMode::TSS, 0x67, 0xb, true, true, false, false, 0};
  s.rflags = 2 | FLAG_IF;
  pm.cpu.stateChanged();
  ASSERT_EQ(pm.run(CODE, {0xcd, 0x80}), StopReason::HALTED);
  EXPECT_EQ(pm.cpu.cpl(), 0u);
  EXPECT_EQ(s.segment[SS].selector, 0x10);
  EXPECT_EQ(s.gpr[4], 0x7000u - 20);
  // Pushed: EIP, CS, EFLAGS, ESP, SS of ring 3.
  EXPECT_EQ(pm.bus.load<uint32_t>(0x7000 - 20), CODE + 2);
  EXPECT_EQ(pm.bus.load<uint32_t>(0x7000 - 16), 0x1bu);
  EXPECT_EQ(pm.bus.load<uint32_t>(0x7000 - 12) & FLAG_IF, FLAG_IF);
  EXPECT_EQ(pm.bus.load<uint32_t>(0x7000 - 8), 0x5000u);
  EXPECT_EQ(pm.bus.load<uint32_t>(0x7000 - 4), 0x23u);
  EXPECT_FALSE(s.rflags & FLAG_IF);  // an interrupt gate clears IF
  // IRET goes back to ring 3 and its stack (where a jmp $ spins: the ring-0 data segments
  // became unusable).
  pm.bus.put(CODE + 2, {0xeb, 0xfe});
  ASSERT_EQ(pm.run(CODE + 0x300, {0xcf}), StopReason::BUDGET);
  EXPECT_EQ(s.rip, CODE + 2);
  EXPECT_FALSE(s.segment[DS].present);
  EXPECT_EQ(pm.cpu.cpl(), 3u);
  EXPECT_EQ(s.gpr[4], 0x5000u);
  EXPECT_TRUE(s.rflags & FLAG_IF);
  // From ring 3, a gate of DPL 0 is a #GP with the IDT error code (vector * 8 + 2).
  ASSERT_EQ(pm.run(CODE, {0xcd, 0x81}), StopReason::HALTED);
  EXPECT_EQ(s.rip, CODE + 0x401);
  EXPECT_EQ(pm.bus.load<uint32_t>(s.gpr[4]), 0x81u * 8 + 2);
  // Privileged instructions at ring 3: HLT is #GP(0) too.
  s.segment[CS] = flatSegment(0x1b, true, false, 3);
  s.segment[SS] = flatSegment(0x23, false, false, 3);
  s.gpr[4] = 0x5000;
  pm.cpu.stateChanged();
  ASSERT_EQ(pm.run(CODE, {0xfa}), StopReason::HALTED) << "cli at IOPL 0 from ring 3";
  EXPECT_EQ(s.rip, CODE + 0x401);
  EXPECT_EQ(pm.bus.load<uint32_t>(s.gpr[4] + 4), CODE) << "the faulting instruction";
}

// --- Paging ----------------------------------------------------------------------------------

TEST(EmuPaging, FaultsCarryTheSdmErrorCodeAndCr2) {
  LongMode emu;
  emu.cpu.state().idtBase = DATA;
  emu.cpu.state().idtLimit = 0xfff;
  uint64_t handler = CODE + 0x100;
  emu.bus.store<uint64_t>(DATA + 14 * 16, (handler & 0xffff) | (0x08ull << 16) | (0x8eull << 40));
  emu.bus.put(handler, {0xf4});
  struct Case {
    const char* what;
    std::vector<uint8_t> code;
    uint32_t error;
  };
  uint64_t target = 0x50000;
  for (const Case& c : {Case{"read of a not-present page", {0x48, 0x8b, 0x03}, 0},  // mov rax,[rbx]
                        Case{"write to a not-present page", {0x48, 0x89, 0x03}, 2},
                        Case{"write to a read-only page", {0x48, 0x89, 0x03}, 3}}) {
    SCOPED_TRACE(c.what);
    LongMode fresh;
    fresh.cpu.state().idtBase = DATA;
    fresh.cpu.state().idtLimit = 0xfff;
    fresh.bus.store<uint64_t>(DATA + 14 * 16,
                              (handler & 0xffff) | (0x08ull << 16) | (0x8eull << 40));
    fresh.bus.put(handler, {0xf4});
    if (c.error & 1) {
      fresh.readOnly(target);
    } else {
      fresh.unmap(target);
    }
    fresh.reg(3) = target + 0x18;
    ASSERT_TRUE(fresh.run(c.code));
    EXPECT_EQ(fresh.cpu.state().rip, handler + 1);
    EXPECT_EQ(fresh.cpu.state().cr2, target + 0x18);
    EXPECT_EQ(fresh.bus.load<uint64_t>(fresh.cpu.state().gpr[4]), c.error);
    EXPECT_EQ(fresh.bus.load<uint64_t>(fresh.cpu.state().gpr[4] + 8), CODE);
  }
  // A walk sets the Accessed bit, a write also Dirty.
  emu.reg(3) = DATA + 0x800;
  ASSERT_TRUE(emu.run({0x48, 0x89, 0x03})) << emu.cpu.failure() << " rip " << emu.cpu.state().rip;
  uint64_t pte = emu.bus.load<uint64_t>(PAGE_TABLES + 0x3000 + ((DATA + 0x800) >> 12) * 8);
  EXPECT_EQ(pte & 0x60, 0x60u);
  // INVLPG: a page unmapped after use still translates until its TLB entry is dropped.
  uint64_t page = DATA + 0x2000;
  emu.reg(3) = page + 0x10;
  ASSERT_TRUE(emu.run({0x48, 0x8b, 0x03}));  // mov rax,[rbx]: fills the TLB
  emu.unmap(page);
  ASSERT_TRUE(emu.run({0x48, 0x8b, 0x03}));
  EXPECT_EQ(emu.cpu.state().rip, CODE + 4) << "the stale translation is still used";
  ASSERT_TRUE(emu.run({0x0f, 0x01, 0x3b, 0x48, 0x8b, 0x03}));  // invlpg [rbx]; mov rax,[rbx]
  EXPECT_EQ(emu.cpu.state().rip, handler + 1);
  EXPECT_EQ(emu.cpu.state().cr2, page + 0x10);
}

TEST(EmuPaging, ChangedCodeIsSeen) {
  LongMode emu;
  ASSERT_TRUE(emu.run({0xb8, 0x01, 0x00, 0x00, 0x00}));  // mov eax, 1
  EXPECT_EQ(emu.reg(0), 1u);
  emu.bus.ram[CODE + 1] = 2;  // as a device's DMA would
  ASSERT_TRUE(emu.run({0xb8, 0x02, 0x00, 0x00, 0x00}));
  EXPECT_EQ(emu.reg(0), 2u);
  // Code that rewrites its own next block: mov byte [rip+N], 3; jmp next; next: mov eax, 1.
  ASSERT_TRUE(emu.run(
      {0xc6, 0x05, 0x03, 0x00, 0x00, 0x00, 0x03, 0xeb, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00}));
  EXPECT_EQ(emu.reg(0), 3u);
}

// --- SSE -------------------------------------------------------------------------------------

TEST(EmuSse, MovesAndArithmetic) {
  LongMode emu;
  for (int i = 0; i < 16; ++i) emu.bus.ram[DATA + i] = static_cast<uint8_t>(i);
  double a = 1.5, b = 2.25;
  emu.bus.store(DATA + 16, a);
  emu.bus.store(DATA + 24, b);
  emu.reg(3) = DATA;
  // movdqu xmm0,[rbx]; movdqa [rbx+0x40],xmm0; movsd xmm1,[rbx+16]; addsd xmm1,[rbx+24];
  // mulsd xmm1,xmm1; movq rax,xmm1; pxor xmm2,xmm2; pcmpeqb xmm2,xmm0; pmovmskb ecx,xmm2
  ASSERT_TRUE(
      emu.run({0xf3, 0x0f, 0x6f, 0x03, 0x66, 0x0f, 0x7f, 0x43, 0x40, 0xf2, 0x0f, 0x10, 0x4b, 0x10,
               0xf2, 0x0f, 0x58, 0x4b, 0x18, 0xf2, 0x0f, 0x59, 0xc9, 0x66, 0x48, 0x0f, 0x7e, 0xc8,
               0x66, 0x0f, 0xef, 0xd2, 0x66, 0x0f, 0x74, 0xd0, 0x66, 0x0f, 0xd7, 0xca}))
      << emu.cpu.failure();
  EXPECT_EQ(memcmp(&emu.bus.ram[DATA], &emu.bus.ram[DATA + 0x40], 16), 0);
  double result;
  memcpy(&result, &emu.reg(0), 8);
  EXPECT_EQ(result, (1.5 + 2.25) * (1.5 + 2.25));
  EXPECT_EQ(emu.reg(1), 1u) << "only byte 0 of xmm0 is zero";
  // movdqa from a misaligned address is #GP (no IDT here: a triple fault ends the run).
  emu.reg(3) = DATA + 8;
  emu.bus.put(CODE, {0x66, 0x0f, 0x6f, 0x03});
  emu.cpu.state().rip = CODE;
  emu.cpu.state().halted = false;
  EXPECT_EQ(emu.cpu.run(10), StopReason::SHUTDOWN);
}

// Every SSE/SSE2 shuffle, unpack, pack, shift, saturating, min/max, compare and conversion the
// interpreter has, on xmm0 and xmm1 with random and edge-case inputs, run on this host's CPU
// and in the interpreter: xmm0 and (for COMIS/UCOMIS) the flags must match bit for bit.
TEST(EmuSse, ShufflesShiftsComparesAndConversionsMatchThisHostsCpu) {
  struct SseCase {
    const char* name;
    std::vector<uint8_t> bytes;  // the instruction, on xmm0 and xmm1 (ModRM 0xc1)
    bool floats = false;         // feed floating-point edge cases
  };
  std::vector<SseCase> cases = {
      {"punpcklbw", {0x66, 0x0f, 0x60, 0xc1}},
      {"punpcklwd", {0x66, 0x0f, 0x61, 0xc1}},
      {"punpckldq", {0x66, 0x0f, 0x62, 0xc1}},
      {"punpcklqdq", {0x66, 0x0f, 0x6c, 0xc1}},
      {"punpckhbw", {0x66, 0x0f, 0x68, 0xc1}},
      {"punpckhwd", {0x66, 0x0f, 0x69, 0xc1}},
      {"punpckhdq", {0x66, 0x0f, 0x6a, 0xc1}},
      {"punpckhqdq", {0x66, 0x0f, 0x6d, 0xc1}},
      {"unpcklps", {0x0f, 0x14, 0xc1}},
      {"unpckhpd", {0x66, 0x0f, 0x15, 0xc1}},
      {"packsswb", {0x66, 0x0f, 0x63, 0xc1}},
      {"packuswb", {0x66, 0x0f, 0x67, 0xc1}},
      {"packssdw", {0x66, 0x0f, 0x6b, 0xc1}},
      {"pcmpgtb", {0x66, 0x0f, 0x64, 0xc1}},
      {"pcmpgtw", {0x66, 0x0f, 0x65, 0xc1}},
      {"pcmpgtd", {0x66, 0x0f, 0x66, 0xc1}},
      {"pshufd", {0x66, 0x0f, 0x70, 0xc1, 0x1b}},
      {"pshuflw", {0xf2, 0x0f, 0x70, 0xc1, 0x9c}},
      {"pshufhw", {0xf3, 0x0f, 0x70, 0xc1, 0x4e}},
      {"shufps", {0x0f, 0xc6, 0xc1, 0xb1}},
      {"shufpd", {0x66, 0x0f, 0xc6, 0xc1, 0x02}},
      {"pminub", {0x66, 0x0f, 0xda, 0xc1}},
      {"pmaxub", {0x66, 0x0f, 0xde, 0xc1}},
      {"pminsw", {0x66, 0x0f, 0xea, 0xc1}},
      {"pmaxsw", {0x66, 0x0f, 0xee, 0xc1}},
      {"paddusb", {0x66, 0x0f, 0xdc, 0xc1}},
      {"paddusw", {0x66, 0x0f, 0xdd, 0xc1}},
      {"psubusb", {0x66, 0x0f, 0xd8, 0xc1}},
      {"psubusw", {0x66, 0x0f, 0xd9, 0xc1}},
      {"paddsb", {0x66, 0x0f, 0xec, 0xc1}},
      {"paddsw", {0x66, 0x0f, 0xed, 0xc1}},
      {"psubsb", {0x66, 0x0f, 0xe8, 0xc1}},
      {"psubsw", {0x66, 0x0f, 0xe9, 0xc1}},
      {"pavgb", {0x66, 0x0f, 0xe0, 0xc1}},
      {"pavgw", {0x66, 0x0f, 0xe3, 0xc1}},
      {"pmullw", {0x66, 0x0f, 0xd5, 0xc1}},
      {"pmulhw", {0x66, 0x0f, 0xe5, 0xc1}},
      {"pmulhuw", {0x66, 0x0f, 0xe4, 0xc1}},
      {"pmuludq", {0x66, 0x0f, 0xf4, 0xc1}},
      {"psadbw", {0x66, 0x0f, 0xf6, 0xc1}},
      {"psllw", {0x66, 0x0f, 0xf1, 0xc1}},
      {"psrld", {0x66, 0x0f, 0xd2, 0xc1}},
      {"psraw", {0x66, 0x0f, 0xe1, 0xc1}},
      {"psrlw 3", {0x66, 0x0f, 0x71, 0xd0, 3}},
      {"psraw 9", {0x66, 0x0f, 0x71, 0xe0, 9}},
      {"psrad 40", {0x66, 0x0f, 0x72, 0xe0, 40}},
      {"pslld 5", {0x66, 0x0f, 0x72, 0xf0, 5}},
      {"psllq 33", {0x66, 0x0f, 0x73, 0xf0, 33}},
      {"psrlq 1", {0x66, 0x0f, 0x73, 0xd0, 1}},
      {"psrldq 5", {0x66, 0x0f, 0x73, 0xd8, 5}},
      {"pslldq 11", {0x66, 0x0f, 0x73, 0xf8, 11}},
      {"pslldq 16", {0x66, 0x0f, 0x73, 0xf8, 16}},
      {"movhlps", {0x0f, 0x12, 0xc1}},
      {"movlhps", {0x0f, 0x16, 0xc1}},
      {"minsd", {0xf2, 0x0f, 0x5d, 0xc1}, true},
      {"maxsd", {0xf2, 0x0f, 0x5f, 0xc1}, true},
      {"minps", {0x0f, 0x5d, 0xc1}, true},
      {"maxpd", {0x66, 0x0f, 0x5f, 0xc1}, true},
      {"sqrtsd", {0xf2, 0x0f, 0x51, 0xc1}, true},
      {"sqrtps", {0x0f, 0x51, 0xc1}, true},
      {"subps", {0x0f, 0x5c, 0xc1}, true},
      {"divpd", {0x66, 0x0f, 0x5e, 0xc1}, true},
      {"cmpltps", {0x0f, 0xc2, 0xc1, 1}, true},
      {"cmpunordsd", {0xf2, 0x0f, 0xc2, 0xc1, 3}, true},
      {"cmpnlepd", {0x66, 0x0f, 0xc2, 0xc1, 6}, true},
      {"cmpneqss", {0xf3, 0x0f, 0xc2, 0xc1, 4}, true},
      {"cvtss2sd", {0xf3, 0x0f, 0x5a, 0xc1}, true},
      {"cvtsd2ss", {0xf2, 0x0f, 0x5a, 0xc1}, true},
      {"cvtdq2pd", {0xf3, 0x0f, 0xe6, 0xc1}},
      {"cvtdq2ps", {0x0f, 0x5b, 0xc1}},
      {"cvtps2pd", {0x0f, 0x5a, 0xc1}, true},
      {"cvtpd2ps", {0x66, 0x0f, 0x5a, 0xc1}, true},
      {"cvtps2dq", {0x66, 0x0f, 0x5b, 0xc1}, true},
      {"cvttps2dq", {0xf3, 0x0f, 0x5b, 0xc1}, true},
      {"cvtpd2dq", {0xf2, 0x0f, 0xe6, 0xc1}, true},
      {"cvttpd2dq", {0x66, 0x0f, 0xe6, 0xc1}, true},
      {"ucomisd", {0x66, 0x0f, 0x2e, 0xc1}, true},
      {"comisd", {0x66, 0x0f, 0x2f, 0xc1}, true},
      {"ucomiss", {0x0f, 0x2e, 0xc1}, true},
      {"comiss", {0x0f, 0x2f, 0xc1}, true},
  };
  // movdqu xmm0,[rdi]; movdqu xmm1,[rdi+16]; <instruction>; movdqu [rdi],xmm0; pushfq; pop rax
  auto program = [](const std::vector<uint8_t>& instruction, uint8_t end) {
    std::vector<uint8_t> code;
    code.reserve(32);
    for (uint8_t byte : {0xf3, 0x0f, 0x6f, 0x07, 0xf3, 0x0f, 0x6f, 0x4f, 0x10})
      code.push_back(byte);
    for (uint8_t byte : instruction) code.push_back(byte);
    for (uint8_t byte : {0xf3, 0x0f, 0x7f, 0x07, 0x9c, 0x58}) code.push_back(byte);
    code.push_back(end);
    return code;
  };
  void* page =
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  std::mt19937_64 random(20261128);
  double doubles[] = {0.0,
                      -0.0,
                      1.0,
                      -2.5,
                      1e300,
                      -1e-300,
                      3.0e38,
                      1e-40,
                      __builtin_inf(),
                      -__builtin_inf(),
                      __builtin_nan(""),
                      7.25};
  float singles[] = {0.0f,
                     -0.0f,
                     1.0f,
                     -2.5f,
                     3.0e38f,
                     1e-40f,
                     16.0f,
                     __builtin_inff(),
                     -__builtin_inff(),
                     __builtin_nanf(""),
                     0.1f};
  unsigned compared = 0;
  LongMode emu;
  for (const SseCase& c : cases) {
    std::vector<uint8_t> native = program(c.bytes, 0xc3);
    memcpy(page, native.data(), native.size());
    for (int round = 0; round < 200; ++round) {
      alignas(16) uint8_t data[32];
      for (uint8_t& byte : data) byte = static_cast<uint8_t>(random());
      if (c.floats && round % 2 == 0) {
        for (int i = 0; i < 4; ++i) {
          memcpy(data + i * 8, &doubles[random() % std::size(doubles)], 8);
        }
      } else if (c.floats && round % 4 == 1) {
        for (int i = 0; i < 8; ++i)
          memcpy(data + i * 4, &singles[random() % std::size(singles)], 4);
      }
      for (int i = 0; i < 32; ++i) emu.bus.ram[DATA + i] = data[i];
      alignas(16) uint8_t expected[32];
      memcpy(expected, data, 32);
      uint64_t nativeFlags =
          reinterpret_cast<uint64_t (*)(uint8_t*)>(page)(expected);  // rdi = expected
      emu.reg(7) = DATA;
      ASSERT_TRUE(emu.run(program(c.bytes, 0x90))) << c.name << ": " << emu.cpu.failure();
      EXPECT_EQ(memcmp(&emu.bus.ram[DATA], expected, 16), 0) << c.name << " round " << round;
      if (strstr(c.name, "comis") != nullptr) {  // only these set flags
        EXPECT_EQ(emu.reg(0) & FLAGS_ARITH, nativeFlags & FLAGS_ARITH) << c.name;
      }
      ++compared;
    }
  }
  munmap(page, 4096);
  EXPECT_EQ(compared, cases.size() * 200);
}

// The kernel's idle loop: interrupts off, an interrupt arrives, then STI; HLT. The interrupt must
// be taken once the HLT has run (the STI shadow covers only the HLT), not left pending while the
// CPU sleeps: its wake-up was already spent, so nothing else would ever deliver it.
TEST(EmuCpu, AnInterruptRaisedBeforeStiHltIsTakenAfterTheHlt) {
  LongMode emu;
  constexpr uint64_t HANDLER = 0x3000;
  emu.handle(0x20, HANDLER);
  emu.bus.put(HANDLER, {0xb8, 0x77, 0, 0, 0, 0xf4});  // mov eax, 0x77; hlt
  emu.reg(0) = 0;
  emu.bus.pendingVector = 0x20;
  emu.cpu.interruptRaised();                 // while IF is clear
  ASSERT_TRUE(emu.run({0xfa, 0x90, 0xfb}));  // cli; nop; sti; (hlt)
  EXPECT_EQ(emu.reg(0), 0x77u) << "the interrupt was left pending in HLT";
  EXPECT_EQ(emu.bus.pendingVector, -1);
}

// An NMI is taken with interrupts off, even in HLT, and the next one waits for the handler's
// IRET (SDM Vol. 3, 6.7.1) instead of nesting.
TEST(EmuCpu, NmisAreTakenWithInterruptsOffAndDoNotNest) {
  LongMode emu;
  constexpr uint64_t HANDLER = 0x3000;
  emu.handle(2, HANDLER);
  // inc ebx; out 0x99, al (raises the next NMI); jmp +0 (a block boundary);
  // mov [rbx*8 + DATA], rsp; iretq
  emu.bus.put(HANDLER, {0xff, 0xc3, 0xe6, 0x99, 0xeb, 0x00, 0x48, 0x89, 0x24, 0xdd, 0x00, 0x00,
                        0x02, 0x00, 0x48, 0xcf});
  int raised = 0;
  emu.bus.onPortWrite = [&](uint16_t port) {
    if (port == 0x99 && raised++ < 2) emu.cpu.nmiRaised();
  };
  emu.reg(3) = 0;
  // cli; out 0x99, al; hlt; (hlt): the first NMI wakes the HLT with IF clear.
  ASSERT_TRUE(emu.run({0xfa, 0xe6, 0x99, 0xf4}));
  EXPECT_EQ(emu.reg(3), 2u) << "both NMIs ran";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 8), emu.bus.load<uint64_t>(DATA + 16))
      << "the second NMI ran inside the first handler, on its stack";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 8), STACK_TOP - 40);
  EXPECT_FALSE(emu.cpu.state().rflags & FLAG_IF);
}

TEST(EmuCpu, UnimplementedInstructionsAreReportedNotGuessed) {
  LongMode emu;
  emu.bus.put(CODE, {0x0f, 0x0b});  // ud2: a guest #UD, delivered (no IDT: triple fault)
  emu.cpu.state().rip = CODE;
  EXPECT_EQ(emu.cpu.run(10), StopReason::SHUTDOWN);
  LongMode other;
  other.bus.put(CODE, {0x0f, 0x01, 0xd4});  // vmfunc: no VMX here
  other.cpu.state().rip = CODE;
  EXPECT_EQ(other.cpu.run(10), StopReason::FAILED);
  EXPECT_NE(other.cpu.failure().find("vmfunc"), std::string::npos) << other.cpu.failure();
}

// --- x87 -------------------------------------------------------------------------------------

// Loads, arithmetic through memory and registers, stores and integer conversions, with results
// known exactly; precision and rounding control.
TEST(EmuX87, ArithmeticLoadsAndStores) {
  LongMode emu;
  emu.bus.store(DATA, 1.75);
  emu.bus.store(DATA + 8, 3.5);
  emu.bus.store<int32_t>(DATA + 24, 7);
  emu.bus.store<uint64_t>(DATA + 32, ~0ull);
  emu.bus.store<int64_t>(DATA + 40, -5000000000);
  emu.reg(3) = DATA;
  // fld qword [rbx]; fld qword [rbx+8]; fdiv st0, st1; fild dword [rbx+24]; fmulp st1, st0;
  // fsub st0, st1; fstp qword [rbx+16]; fistp dword [rbx+32]; fild qword [rbx+40];
  // fchs; fistp qword [rbx+48]
  ASSERT_TRUE(
      emu.run({0xdd, 0x03, 0xdd, 0x43, 0x08, 0xd8, 0xf1, 0xdb, 0x43, 0x18, 0xde, 0xc9, 0xd8, 0xe1,
               0xdd, 0x5b, 0x10, 0xdb, 0x5b, 0x20, 0xdf, 0x6b, 0x28, 0xd9, 0xe0, 0xdf, 0x7b, 0x30}))
      << emu.cpu.failure();
  EXPECT_EQ(emu.bus.load<double>(DATA + 16), 3.5 / 1.75 * 7 - 1.75);
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 32), 0xffffffff00000002u) << "1.75 rounds to 2; 32 bits";
  EXPECT_EQ(emu.bus.load<int64_t>(DATA + 48), 5000000000);
  const X87State& x = emu.cpu.state().x87;
  EXPECT_EQ(x.tag, 0xffff) << "every load was popped";
  EXPECT_EQ(x.top(), 0u);

  // fld1; fild dword [rbx+56] (3); fdivp st1, st0; fstp tbyte [rbx+64]
  emu.bus.store<int32_t>(DATA + 56, 3);
  ASSERT_TRUE(emu.run({0xd9, 0xe8, 0xdb, 0x43, 0x38, 0xde, 0xf9, 0xdb, 0x7b, 0x40}));
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 64), 0xaaaaaaaaaaaaaaabu) << "1/3, 64-bit significand";
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 72), 0x3ffd);
  // fild qword [rbx+40] (-5e9); fbstp tbyte [rbx+96]; fld1; fld1; fpatan; fstp qword [rbx+112]
  ASSERT_TRUE(emu.run(
      {0xdf, 0x6b, 0x28, 0xdf, 0x73, 0x60, 0xd9, 0xe8, 0xd9, 0xe8, 0xd9, 0xf3, 0xdd, 0x5b, 0x70}));
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 96), 0x0000005000000000u) << "packed BCD digits";
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 104), 0x8000) << "and the sign";
  EXPECT_EQ(emu.bus.load<double>(DATA + 112), 0.7853981633974483) << "atan2(1, 1) = pi/4";
  // Precision control single (control word 0x007f), rounding toward zero (0x0f7f).
  for (uint16_t control : {0x007f, 0x0f7f}) {
    emu.bus.store<uint16_t>(DATA + 80, control);
    // fldcw [rbx+80]; fld1; fild dword [rbx+56]; fdivp st1, st0; fstp tbyte [rbx+64]
    ASSERT_TRUE(
        emu.run({0xd9, 0x6b, 0x50, 0xd9, 0xe8, 0xdb, 0x43, 0x38, 0xde, 0xf9, 0xdb, 0x7b, 0x40}));
    EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 64),
              control == 0x007f ? 0xaaaaab0000000000u : 0xaaaaaaaaaaaaaaaau)
        << std::hex << control;
  }
}

// FCOMI sets ZF, PF and CF; FCOM sets C0, C2 and C3 in the status word; FCMOVcc reads RFLAGS.
TEST(EmuX87, ComparesSetFlagsAndConditionCodes) {
  LongMode emu;
  emu.bus.store(DATA, 2.0);
  emu.bus.store(DATA + 8, std::numeric_limits<double>::quiet_NaN());
  emu.reg(3) = DATA;
  // fld qword [rbx] (2); fld1; fcom st1; fnstsw ax; mov ecx, eax; fcomi st0, st1
  ASSERT_TRUE(emu.run({0xdd, 0x03, 0xd9, 0xe8, 0xd8, 0xd1, 0xdf, 0xe0, 0x89, 0xc1, 0xdb, 0xf1}));
  EXPECT_EQ(emu.reg(1) & 0x4500, 0x0100u) << "1 < 2: C0 only";
  EXPECT_EQ(emu.cpu.state().rflags & (FLAG_CF | FLAG_ZF | FLAG_PF), FLAG_CF);
  // fld qword [rbx+8] (NaN); fucomip st0, st1 (pops it); fld st0; fcomip st0, st1
  ASSERT_TRUE(emu.run({0xdd, 0x43, 0x08, 0xdf, 0xe9, 0xd9, 0xc0, 0xdf, 0xf1}));
  EXPECT_EQ(emu.cpu.state().rflags & (FLAG_CF | FLAG_ZF | FLAG_PF), FLAG_ZF)
      << "1 == 1 after the unordered compare";
  // fld qword [rbx+8] (NaN); fucomi st0, st1: unordered, then fcmovu st0, st1 (taken)
  ASSERT_TRUE(emu.run({0xdd, 0x43, 0x08, 0xdb, 0xe9, 0xda, 0xd9}));
  EXPECT_EQ(emu.cpu.state().rflags & (FLAG_CF | FLAG_ZF | FLAG_PF), FLAG_CF | FLAG_ZF | FLAG_PF);
  EXPECT_EQ(emu.cpu.state().x87.st(0).significand, 1ull << 63) << "FCMOVU moved ST(1) (1.0)";
}

// A ninth push overflows the stack: IE, SF and C1 flagged and, masked, the indefinite QNaN.
TEST(EmuX87, StackOverflowGivesTheMaskedResponse) {
  LongMode emu;
  std::vector<uint8_t> code;
  for (int i = 0; i < 9; ++i) code.insert(code.end(), {0xd9, 0xe8});  // fld1
  code.insert(code.end(), {0xdf, 0xe0});                              // fnstsw ax
  ASSERT_TRUE(emu.run(code)) << emu.cpu.failure();
  EXPECT_EQ(emu.reg(0) & 0x0241, 0x0241u) << std::hex << emu.reg(0);
  EXPECT_EQ(emu.cpu.state().x87.st(0).signExponent, 0xffff);
  EXPECT_EQ(emu.cpu.state().x87.st(0).significand, 0xc000000000000000u);
}

// An unmasked exception is flagged and raised (#MF, vector 16, with CR0.NE) by the next waiting
// x87 instruction; a store it made invalid does not happen; FNSTENV points at the instruction.
TEST(EmuX87, UnmaskedExceptionsRaiseMathFaultAtTheNextWaitingInstruction) {
  LongMode emu;
  constexpr uint64_t HANDLER = 0x3000;
  emu.handle(16, HANDLER);
  emu.bus.put(HANDLER, {0xb8, 0x10, 0, 0, 0, 0xf4});  // mov eax, 16; hlt
  emu.cpu.state().cr0 |= CR0_NE;
  emu.bus.store<uint16_t>(DATA, 0x037e);  // invalid operation unmasked
  emu.bus.store(DATA + 8, 1e10);
  emu.bus.store<uint32_t>(DATA + 16, 0x12345678);
  emu.reg(3) = DATA;
  emu.reg(0) = 0;
  // fldcw [rbx]; fld qword [rbx+8]; fist dword [rbx+16] (1e10 does not fit); mov ecx, 1; fwait
  ASSERT_TRUE(emu.run({0xd9, 0x2b, 0xdd, 0x43, 0x08, 0xdb, 0x53, 0x10, 0xb9, 1, 0, 0, 0, 0x9b}));
  EXPECT_EQ(emu.reg(0), 16u) << "#MF";
  EXPECT_EQ(emu.reg(1), 1u) << "raised at the FWAIT, not at the FIST";
  EXPECT_EQ(emu.bus.load<uint32_t>(DATA + 16), 0x12345678u) << "the invalid store was dropped";
  const X87State& x = emu.cpu.state().x87;
  EXPECT_EQ(x.status & (X87_ES | 1), X87_ES | 1);
  EXPECT_EQ(x.ip, CODE + 5) << "the FIST";
  EXPECT_EQ(x.opcode, 0x353) << "DB 53";
  EXPECT_EQ(x.dp, DATA + 16);

  // fnclex; fnstenv [rbx+32]: non-waiting, so no #MF; the environment names the FIST.
  emu.reg(0) = 0;
  ASSERT_TRUE(emu.run({0xdb, 0xe2, 0xd9, 0x73, 0x20}));
  EXPECT_EQ(emu.reg(0), 0u);
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 32), 0x037e);
  EXPECT_EQ(emu.cpu.state().x87.control, 0x037f) << "FNSTENV then masks every exception";
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 36) & 0x3f, 0) << "FNCLEX cleared the flags";
  EXPECT_EQ(emu.bus.load<uint32_t>(DATA + 44), CODE + 5);
  EXPECT_EQ(emu.bus.load<uint32_t>(DATA + 48), 0x03530008u) << "opcode and CS";
  EXPECT_EQ(emu.bus.load<uint32_t>(DATA + 52), DATA + 16);
}

// FNSAVE writes the environment and ST(0)-ST(7) and initialises; FRSTOR brings it back, and
// FXSAVE shows the same registers with an abridged tag.
TEST(EmuX87, SaveRestoreAndFxsaveAgree) {
  LongMode emu;
  emu.reg(3) = DATA;
  // fld1; fldpi; fnsave [rbx]; fnstsw ax; frstor [rbx]; fxsave [rbx+0x200]
  ASSERT_TRUE(emu.run({0xd9, 0xe8, 0xd9, 0xeb, 0xdd, 0x33, 0xdf, 0xe0, 0xdd, 0x23, 0x0f, 0xae, 0x83,
                       0x00, 0x02, 0x00, 0x00}))
      << emu.cpu.failure();
  EXPECT_EQ(emu.reg(0) & 0xffff, 0u) << "FNSAVE initialised the FPU";
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA), 0x037f);
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 4) >> 11 & 7, 6) << "TOP after two pushes";
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 8), 0x0fff) << "R6 and R7 valid, the rest empty";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 28), 0xc90fdaa22168c235u) << "ST(0): pi";
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 36), 0x4000);
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 38), 1ull << 63) << "ST(1): 1";
  EXPECT_EQ(emu.bus.load<uint16_t>(DATA + 46), 0x3fff);
  EXPECT_EQ(emu.cpu.state().x87.top(), 6u) << "FRSTOR";
  EXPECT_EQ(emu.bus.load<uint8_t>(DATA + 0x204), 0xc0) << "abridged tag: R6, R7";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 0x220), 0xc90fdaa22168c235u) << "FXSAVE ST(0)";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 0x230), 1ull << 63) << "FXSAVE ST(1)";
  // fninit; fxrstor [rbx+0x200]; fmulp st1, st0; fstp qword [rbx+0x100]
  ASSERT_TRUE(emu.run({0xdb, 0xe3, 0x0f, 0xae, 0x8b, 0x00, 0x02, 0x00, 0x00, 0xde, 0xc9, 0xdd, 0x9b,
                       0x00, 0x01, 0x00, 0x00}))
      << emu.cpu.failure();
  EXPECT_EQ(emu.bus.load<double>(DATA + 0x100), 3.141592653589793);
}

// In real mode FNSTENV keeps linear pointers split around the opcode, in 14 bytes at 16-bit
// operand size and 28 at 32-bit (SDM Vol. 1, Figures 8-11 and 8-12).
TEST(EmuX87, RealModeEnvironment) {
  TestBus bus;
  Cpu cpu{bus, emuSupportedCpuid()};
  cpu.state().segment[CS].selector = 0x100;
  cpu.state().segment[CS].base = 0x1000;
  // At 0x100:0x10: fld1; fnstenv [0x2000]; o32 fnstenv [0x2100]; hlt
  bus.put(0x1010, {0xd9, 0xe8, 0xd9, 0x36, 0x00, 0x20, 0x66, 0xd9, 0x36, 0x00, 0x21, 0xf4});
  cpu.state().rip = 0x10;
  cpu.stateChanged();
  ASSERT_EQ(cpu.run(100), StopReason::HALTED) << cpu.failure();
  EXPECT_EQ(bus.load<uint16_t>(0x2000), 0x037f);
  EXPECT_EQ(bus.load<uint16_t>(0x2002), 0x3800) << "TOP 7";
  EXPECT_EQ(bus.load<uint16_t>(0x2004), 0x3fff) << "R7 valid";
  EXPECT_EQ(bus.load<uint16_t>(0x2006), 0x1010) << "FLD1's linear address, low 16 bits";
  EXPECT_EQ(bus.load<uint16_t>(0x2008), 0x01e8) << "its bits 16-19, then FOP D9 E8";
  EXPECT_EQ(bus.load<uint16_t>(0x2100 + 4), 0x3800);
  EXPECT_EQ(bus.load<uint32_t>(0x2100 + 12), 0x1010u);
  EXPECT_EQ(bus.load<uint32_t>(0x2100 + 16), 0x01e8u);
}

// MMX: the registers are the x87 registers' significands; arithmetic, shifts by an immediate,
// moves to and from general registers and memory, shuffles and extracts, with known results.
TEST(EmuMmx, ArithmeticMovesAndTheX87State) {
  LongMode emu;
  uint64_t a = 0x7f80ff0102030405, b = 0x0101010101010101;
  emu.bus.store(DATA, a);
  emu.bus.store(DATA + 8, b);
  emu.reg(3) = DATA;
  emu.reg(2) = 0x1122334455667788;
  emu.reg(7) = 0xbeef;
  // movq mm0, [rbx]; movq mm1, [rbx+8]; paddb mm0, mm1; movq [rbx+16], mm0;
  // psrlw mm1, 4; psllq mm1, 8; movd eax, mm0; movq rcx, mm1; movd mm2, edx; movq mm3, rdx;
  // pshufw mm4, mm0, 0x1b; pextrw esi, mm4, 2; pinsrw mm4, edi, 0; pmovmskb ebp, mm0;
  // movq [rbx+24], mm4; movq [rbx+32], mm2; movq [rbx+40], mm3
  ASSERT_TRUE(emu.run({0x0f, 0x6f, 0x03, 0x0f, 0x6f, 0x4b, 0x08, 0x0f, 0xfc, 0xc1, 0x0f, 0x7f, 0x43,
                       0x10, 0x0f, 0x71, 0xd1, 0x04, 0x0f, 0x73, 0xf1, 0x08, 0x0f, 0x7e, 0xc0, 0x48,
                       0x0f, 0x7e, 0xc9, 0x0f, 0x6e, 0xd2, 0x48, 0x0f, 0x6e, 0xda, 0x0f, 0x70, 0xe0,
                       0x1b, 0x0f, 0xc5, 0xf4, 0x02, 0x0f, 0xc4, 0xe7, 0x00, 0x0f, 0xd7, 0xe8, 0x0f,
                       0x7f, 0x63, 0x18, 0x0f, 0x7f, 0x53, 0x20, 0x0f, 0x7f, 0x5b, 0x28}))
      << emu.cpu.failure();
  uint64_t sum = 0x8081000203040506;  // bytewise, wrapping
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 16), sum);
  EXPECT_EQ(emu.reg(0), sum & 0xffffffff) << "MOVD zero-extends";
  EXPECT_EQ(emu.reg(1), 0x0010001000100010ull << 8) << "word shifts right by 4, then << 8";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 32), 0x55667788u) << "MOVD mm2, edx";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 40), 0x1122334455667788u) << "MOVQ mm3, rdx";
  uint64_t reversed = 0x0506030400028081;  // the words of `sum` in reverse order
  EXPECT_EQ(emu.reg(6), (reversed >> 32) & 0xffff) << "PEXTRW word 2";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 24), (reversed & ~0xffffull) | 0xbeef);
  EXPECT_EQ(emu.reg(5), 0xc0u) << "PMOVMSKB: bytes 6 and 7 have their top bit set";
  const X87State& x = emu.cpu.state().x87;
  EXPECT_EQ(x.top(), 0u);
  EXPECT_EQ(x87AbridgedTag(x.tag), 0xff) << "no register empty";
  EXPECT_EQ(x.r[0].significand, sum);
  EXPECT_EQ(x.r[0].signExponent, 0xffff);
  ASSERT_TRUE(emu.run({0x0f, 0x77}));  // emms
  EXPECT_EQ(emu.cpu.state().x87.tag, 0xffff);
}

// A hostile guest: every x87 and MMX encoding (register forms, and memory forms on a scratch
// page), on random register contents, control words that unmask exceptions and status words
// with exceptions pending, must end in a guest outcome (a halt, a fault, a named failure),
// never trap on the host (the test process would die of SIGFPE or SIGILL).
TEST(EmuX87, EveryEncodingWithRandomStateIsSafeForTheHost) {
  LongMode emu;
  std::mt19937_64 random(5);
  emu.reg(3) = DATA;  // memory forms: [rbx]
  unsigned halted = 0, cases = 0;
  auto tryCode = [&](std::vector<uint8_t> code) {
    CpuState& s = emu.cpu.state();
    for (X87State::Register& r : s.x87.r) {
      r.significand = random();
      r.signExponent = static_cast<uint16_t>(random());
    }
    s.x87.control = static_cast<uint16_t>(random()) & 0x0f3f;
    s.x87.status = static_cast<uint16_t>(random());
    s.x87.tag = static_cast<uint16_t>(random());
    s.cr0 = (s.cr0 & ~CR0_NE) | (random() % 4 == 0 ? CR0_NE : 0);  // NE: pending ones fault
    for (unsigned i = 0; i < 16; ++i) emu.bus.store<uint64_t>(DATA + i * 8, random());
    emu.reg(3) = DATA;
    emu.reg(4) = STACK_TOP;
    s.rflags = 2;
    code.push_back(0xf4);
    emu.bus.put(CODE, code);
    s.rip = CODE;
    s.halted = false;
    StopReason reason = emu.cpu.run(10);
    ++cases;
    if (reason == StopReason::HALTED) ++halted;
    EXPECT_TRUE(reason == StopReason::HALTED || reason == StopReason::SHUTDOWN ||
                (reason == StopReason::FAILED && !emu.cpu.failure().empty()))
        << std::hex << int(code[0]) << " " << int(code[1]) << " " << int(code[2]) << " "
        << static_cast<int>(reason);
  };
  for (unsigned opcode = 0xd8; opcode <= 0xdf; ++opcode) {
    for (unsigned modrm = 0; modrm < 256; ++modrm) {
      if ((modrm >> 6) != 3 && (modrm & 7) != 3) continue;  // memory forms: mod 0-2 on [rbx]
      if ((modrm >> 6) == 1) {
        tryCode({static_cast<uint8_t>(opcode), static_cast<uint8_t>(modrm), 8});
      } else if ((modrm >> 6) == 2) {
        tryCode({static_cast<uint8_t>(opcode), static_cast<uint8_t>(modrm), 16, 0, 0, 0});
      } else {
        tryCode({static_cast<uint8_t>(opcode), static_cast<uint8_t>(modrm)});
      }
    }
  }
  for (unsigned opcode = 0x60; opcode <= 0xff; ++opcode) {
    if (opcode == 0x80) opcode = 0xd0;
    if (opcode == 0x77) continue;  // EMMS has no ModRM byte
    for (unsigned modrm = 0xc0; modrm < 0x100; ++modrm) {
      tryCode({0x0f, static_cast<uint8_t>(opcode), static_cast<uint8_t>(modrm)});
    }
    for (unsigned reg = 0; reg < 8; ++reg) {
      tryCode({0x0f, static_cast<uint8_t>(opcode), static_cast<uint8_t>(reg << 3 | 3)});
    }
  }
  EXPECT_GT(halted, cases / 2) << "most encodings ran to the HLT: " << halted << " of " << cases;
}

// Float-to-integer conversions round as MXCSR.RC says (CVTT* truncate whatever it says).
TEST(EmuSse, ConversionsFollowTheMxcsrRoundingControl) {
  LongMode emu;
  emu.reg(3) = DATA;
  float values[4] = {-2.5f, 2.5f, 1.75f, -0.25f};
  memcpy(&emu.bus.ram[DATA + 16], values, 16);
  struct Mode {
    uint32_t mxcsr;
    int32_t expected[4];
  };
  for (const Mode& mode : {Mode{0x1f80, {-2, 2, 2, 0}}, Mode{0x3f80, {-3, 2, 1, -1}},
                           Mode{0x5f80, {-2, 3, 2, 0}}, Mode{0x7f80, {-2, 2, 1, 0}}}) {
    emu.bus.store<uint32_t>(DATA, mode.mxcsr);
    // ldmxcsr [rbx]; cvtps2dq xmm0, [rbx+16]; movdqu [rbx+32], xmm0; cvttps2dq xmm1, [rbx+16];
    // movdqu [rbx+48], xmm1; cvtss2si eax, [rbx+16]
    ASSERT_TRUE(emu.run({0x0f, 0xae, 0x13, 0x66, 0x0f, 0x5b, 0x43, 0x10, 0xf3, 0x0f,
                         0x7f, 0x43, 0x20, 0xf3, 0x0f, 0x5b, 0x4b, 0x10, 0xf3, 0x0f,
                         0x7f, 0x4b, 0x30, 0xf3, 0x0f, 0x2d, 0x43, 0x10}))
        << emu.cpu.failure();
    for (unsigned i = 0; i < 4; ++i) {
      EXPECT_EQ(emu.bus.load<int32_t>(DATA + 32 + 4 * i), mode.expected[i])
          << std::hex << mode.mxcsr << " lane " << i;
      EXPECT_EQ(emu.bus.load<int32_t>(DATA + 48 + 4 * i), static_cast<int32_t>(values[i]));
    }
    EXPECT_EQ(static_cast<int32_t>(emu.reg(0)), mode.expected[0]);
  }
}

// The conversions between MMX and XMM registers.
TEST(EmuMmx, ConversionsToAndFromXmm) {
  LongMode emu;
  emu.reg(3) = DATA;
  emu.bus.store<uint64_t>(DATA, (uint64_t{static_cast<uint32_t>(-7)} << 32) | 3);
  // movq mm0, [rbx]; cvtpi2ps xmm0, mm0; cvtpi2pd xmm2, mm0; cvttps2pi mm1, xmm0;
  // movq2dq xmm1, mm1; movdq2q mm3, xmm2; movdqu [rbx+16], xmm0; movdqu [rbx+32], xmm1;
  // movq [rbx+48], mm3; movdqu [rbx+64], xmm2
  ASSERT_TRUE(
      emu.run({0x0f, 0x6f, 0x03, 0x0f, 0x2a, 0xc0, 0x66, 0x0f, 0x2a, 0xd0, 0x0f, 0x2c, 0xc8, 0xf3,
               0x0f, 0xd6, 0xc9, 0xf2, 0x0f, 0xd6, 0xda, 0xf3, 0x0f, 0x7f, 0x43, 0x10, 0xf3, 0x0f,
               0x7f, 0x4b, 0x20, 0x0f, 0x7f, 0x5b, 0x30, 0xf3, 0x0f, 0x7f, 0x53, 0x40}))
      << emu.cpu.failure();
  EXPECT_EQ(emu.bus.load<float>(DATA + 16), 3.0f);
  EXPECT_EQ(emu.bus.load<float>(DATA + 20), -7.0f);
  EXPECT_EQ(emu.bus.load<double>(DATA + 64), 3.0);
  EXPECT_EQ(emu.bus.load<double>(DATA + 72), -7.0);
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 32), emu.bus.load<uint64_t>(DATA)) << "round trip";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 40), 0u) << "MOVQ2DQ zeroes the upper half";
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 48), 0x4008000000000000u) << "MOVDQ2Q: 3.0";
}

// MASKMOVQ and MASKMOVDQU store the bytes their mask selects to [rDI], segment override and all.
TEST(EmuMmx, MaskedStoresWriteOnlyTheSelectedBytes) {
  LongMode emu;
  emu.reg(3) = DATA;
  emu.reg(7) = 0x100;  // with FS base DATA + 0x100: DATA + 0x200
  emu.cpu.state().segment[FS].base = DATA + 0x100;
  emu.bus.store<uint64_t>(DATA, 0x8877665544332211);
  emu.bus.store<uint64_t>(DATA + 8, 0x0080008000800080);   // bytes 0, 2, 4, 6
  emu.bus.store<uint64_t>(DATA + 16, 0xff00000000000000);  // and 15, for MASKMOVDQU
  for (unsigned i = 0; i < 32; ++i) emu.bus.ram[DATA + 0x200 + i] = 0xee;
  // movq mm0, [rbx]; movq mm1, [rbx+8]; maskmovq fs:[rdi], mm0, mm1 (fs: 0x64);
  // movdqu xmm0, [rbx]; movdqu xmm1, [rbx+8]; add edi, 16; maskmovdqu fs:[rdi], xmm0, xmm1
  ASSERT_TRUE(
      emu.run({0x0f, 0x6f, 0x03, 0x0f, 0x6f, 0x4b, 0x08, 0x64, 0x0f, 0xf7, 0xc1, 0xf3, 0x0f, 0x6f,
               0x03, 0xf3, 0x0f, 0x6f, 0x4b, 0x08, 0x83, 0xc7, 0x10, 0x64, 0x66, 0x0f, 0xf7, 0xc1}))
      << emu.cpu.failure();
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 0x200), 0xee77ee55ee33ee11u);
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 0x210), 0xee77ee55ee33ee11u);
  // xmm0's byte 15 is DATA + 15: 0x00 (bytes 8-15 of xmm0 are the mask qword 0x0080...).
  EXPECT_EQ(emu.bus.load<uint64_t>(DATA + 0x218), 0x00eeeeeeeeeeeeeeu);
}

// An MMX instruction with CR0.EM raises #UD, with CR0.TS #NM (SDM Vol. 3, Table 2-2).
TEST(EmuMmx, EmulationIsUndefinedAndTaskSwitchedIsNotAvailable) {
  for (auto [bits, vector] : {std::pair{CR0_EM, 6u}, std::pair{CR0_TS, 7u}}) {
    LongMode emu;
    emu.handle(vector, 0x3000);
    emu.bus.put(0x3000, {0xb8, static_cast<uint8_t>(vector), 0, 0, 0, 0xf4});  // mov eax, v; hlt
    emu.cpu.state().cr0 |= bits;
    emu.reg(0) = 0;
    ASSERT_TRUE(emu.run({0x0f, 0xfc, 0xc1}));  // paddb mm0, mm1
    EXPECT_EQ(emu.reg(0), vector);
  }
}

// CR0.EM or CR0.TS: x87 instructions raise #NM (vector 7); FWAIT only with TS and MP.
TEST(EmuX87, DeviceNotAvailable) {
  for (uint64_t bits : {CR0_TS, CR0_EM, CR0_TS | CR0_MP}) {
    for (bool wait : {false, true}) {
      LongMode emu;
      emu.handle(7, 0x3000);
      emu.bus.put(0x3000, {0xb8, 7, 0, 0, 0, 0xf4});  // mov eax, 7; hlt
      emu.cpu.state().cr0 |= bits;
      emu.reg(0) = 0;
      ASSERT_TRUE(emu.run(wait ? std::vector<uint8_t>{0x9b} : std::vector<uint8_t>{0xd9, 0xe8}));
      bool expected = !wait || bits == (CR0_TS | CR0_MP);
      EXPECT_EQ(emu.reg(0), expected ? 7u : 0u) << std::hex << bits << (wait ? " fwait" : " fld1");
    }
  }
}

}  // namespace
}  // namespace bulkhead::emu
