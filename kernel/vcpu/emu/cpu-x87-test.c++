// The software CPU's x87 and MMX instructions: known answers, exceptions, save formats, and
// every encoding on random state (the host's FPU must never see a guest's exception).
#include "kernel/vcpu/emu/cpu-test-support.h"

namespace bulkhead::emu {
namespace {

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
