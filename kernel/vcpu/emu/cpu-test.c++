// Instruction-level tests of the software CPU, with no guest and no /dev/kvm: arithmetic flags
// against this host's own CPU (the same bytes run natively), string instructions, far control
// transfers, privilege changes through gates, page faults and their error codes, interrupts.
// SSE: cpu-sse-test.c++; x87 and MMX: cpu-x87-test.c++.
#include "kernel/vcpu/emu/cpu-test-support.h"

namespace bulkhead::emu {
namespace {

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
// Runs each case `rounds` times on random registers, flags and memory with the fast path on and
// off, and expects the same registers, RIP, defined flags, memory and stack.
void expectFastPathMatchesGeneric(const std::vector<AluCase>& cases, int rounds) {
  std::mt19937_64 random(20261128);
  LongMode fast, generic;
  generic.cpu.setFastPath(false);
  constexpr uint64_t BASE = DATA + 0x100;  // rsi: memory operands are at [rsi+8], or across a page
  unsigned compared = 0;
  for (const AluCase& c : cases) {
    for (int round = 0; round < rounds; ++round) {
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
  EXPECT_EQ(compared, cases.size() * rounds);
}

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
  expectFastPathMatchesGeneric(cases, 200);
}

// The fast path's flag computation (lazy, from the host's own flags: fast.c++) is held to the
// generic interpreter's (execute-alu.c++), which FlagsAndResultsMatchThisHostsCpu holds to the
// host CPU: every arithmetic, logic, unary, shift and rotate operation the fast path
// specialises, at every operand width, in register, memory and immediate forms.
TEST(EmuAlu, FastPathFlagsMatchForEveryOperationAndWidth) {
  const uint64_t all = FLAGS_ARITH, noAf = FLAGS_ARITH & ~FLAG_AF;
  const uint64_t shifted = FLAG_CF | FLAG_SF | FLAG_ZF | FLAG_PF;
  struct Width {
    unsigned bits;
    std::vector<uint8_t> prefix;
    uint8_t wide;  // added to the byte-form opcode
  };
  const Width widths[] = {{8, {}, 0}, {16, {0x66}, 1}, {32, {}, 1}, {64, {0x48}, 1}};
  const char* aluNames[] = {"add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"};
  std::vector<AluCase> cases;
  std::vector<std::string> names;
  names.reserve(512);
  auto add = [&](std::string name, const Width& w, std::vector<uint8_t> tail, uint64_t flags) {
    std::vector<uint8_t> bytes = w.prefix;
    bytes.insert(bytes.end(), tail.begin(), tail.end());
    cases.push_back({nullptr, bytes, flags});
    names.push_back(name + std::to_string(w.bits));
  };
  for (const Width& w : widths) {
    for (uint8_t op = 0; op < 8; ++op) {
      uint64_t flags = (op == 1 || op == 4 || op == 6) ? noAf : all;
      std::string n = aluNames[op];
      uint8_t base = static_cast<uint8_t>(op * 8 + w.wide);
      add(n + " r,r ", w, {base, 0xd8}, flags);                     // rax op= rbx
      add(n + " m,r ", w, {base, 0x5e, 0x08}, flags);               // [rsi+8] op= rbx
      add(n + " r,m ", w, {uint8_t(base + 2), 0x5e, 0x08}, flags);  // rbx op= [rsi+8]
      uint8_t group = w.bits == 8 ? 0x80 : 0x81;
      std::vector<uint8_t> imm = {0x9c, 0x7f, 0x01, 0x80};
      imm.resize(w.bits == 8 ? 1 : w.bits == 16 ? 2 : 4);
      std::vector<uint8_t> reg = {group, uint8_t(0xc0 | op << 3)},
                           mem = {group, uint8_t(0x46 | op << 3), 0x08};
      reg.insert(reg.end(), imm.begin(), imm.end());
      mem.insert(mem.end(), imm.begin(), imm.end());
      add(n + " r,i ", w, reg, flags);
      add(n + " m,i ", w, mem, flags);
      if (w.bits != 8) add(n + " r,i8 ", w, {0x83, uint8_t(0xc0 | op << 3), 0xf0}, flags);
    }
    add("test r,r ", w, {uint8_t(0x84 + w.wide), 0xd8}, noAf);
    add("test m,r ", w, {uint8_t(0x84 + w.wide), 0x5e, 0x08}, noAf);
    const uint8_t unary[][2] = {{0xfe, 0}, {0xfe, 1}, {0xf6, 2}, {0xf6, 3}};  // inc dec not neg
    const char* unaryNames[] = {"inc", "dec", "not", "neg"};
    for (unsigned i = 0; i < 4; ++i) {
      uint8_t opcode = static_cast<uint8_t>(unary[i][0] + w.wide), ext = unary[i][1];
      add(std::string(unaryNames[i]) + " r ", w, {opcode, uint8_t(0xc3 | ext << 3)}, all);
      add(std::string(unaryNames[i]) + " m ", w, {opcode, uint8_t(0x46 | ext << 3), 0x08}, all);
    }
    const uint8_t shifts[] = {0, 1, 4, 5, 7};  // rol ror shl shr sar
    const char* shiftNames[] = {"rol", "ror", "", "", "shl", "shr", "", "sar"};
    for (uint8_t ext : shifts) {
      uint64_t flags = ext < 2 ? FLAG_CF : shifted;
      std::string n = shiftNames[ext];
      add(n + " r,1 ", w, {uint8_t(0xd0 + w.wide), uint8_t(0xc3 | ext << 3)}, flags | FLAG_OF);
      add(n + " r,i ", w, {uint8_t(0xc0 + w.wide), uint8_t(0xc3 | ext << 3), 0x05}, flags);
      add(n + " m,cl ", w, {uint8_t(0xd2 + w.wide), uint8_t(0x46 | ext << 3), 0x08}, flags);
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) cases[i].name = names[i].c_str();
  ASSERT_EQ(cases.size(), 284u);  // 65 byte-wide forms, 73 each at 16, 32 and 64 bits
  expectFastPathMatchesGeneric(cases, 40);
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

// A handler that faults at once (#UD on an undecodable byte, through the IDT) is an endless loop
// of deliveries that retire nothing: run() still returns when its budget is spent (found by the
// cpu-fuzzer, which hung on one).
TEST(EmuCpu, AFaultLoopStillEndsTheRunAtItsBudget) {
  LongMode emu;
  emu.bus.put(CODE, {0x0f, 0x04});  // not an instruction: #UD
  emu.handle(6, CODE);              // whose handler is the same bytes
  emu.cpu.state().rip = CODE;
  EXPECT_EQ(emu.cpu.run(1000), StopReason::BUDGET) << emu.cpu.failure();
}

// --- Real mode ---------------------------------------------------------------------------------

// A real-mode IRET takes the flags image through the same mask as POPF: the reserved bits 3, 5
// and 15 stay clear and bit 1 set, whatever the stack held (found by the cpu-fuzzer).
TEST(EmuRealMode, IretKeepsTheReservedFlagsBits) {
  TestBus bus;
  Cpu cpu{bus, emuSupportedCpuid()};
  // At 0:0x1000: push 0x8429 (bits 15, 10 DF, 5, 3, 0 CF); push 0; push 0x1010; iret;
  // (0x1010:) hlt
  bus.put(0x1000, {0x68, 0x29, 0x84, 0x6a, 0x00, 0x68, 0x10, 0x10, 0xcf});
  bus.put(0x1010, {0xf4});
  cpu.state().segment[SS].base = 0;
  cpu.state().gpr[4] = 0x8000;
  cpu.state().rip = 0x1000;
  cpu.stateChanged();
  ASSERT_EQ(cpu.run(100), StopReason::HALTED) << cpu.failure();
  uint64_t flags = cpu.state().rflags;
  EXPECT_EQ(flags & (0x8 | 0x20 | 0x8000), 0u) << std::hex << flags;
  EXPECT_EQ(flags & 2, 2u);
  EXPECT_EQ(flags & (FLAG_DF | FLAG_CF), FLAG_DF | FLAG_CF) << "the image's other bits are taken";
}

}  // namespace
}  // namespace bulkhead::emu
