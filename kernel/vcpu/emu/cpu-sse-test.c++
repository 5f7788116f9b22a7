// The software CPU's SSE and SSE2 instructions, against this host's own CPU where it has them.
#include "kernel/vcpu/emu/cpu-test-support.h"

namespace bulkhead::emu {
namespace {

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

}  // namespace
}  // namespace bulkhead::emu
