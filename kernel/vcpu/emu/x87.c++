// Guest x87 instructions on the host's x87 unit (x87.h).
#include "kernel/vcpu/emu/x87.h"

#include <cstring>

#include "kernel/vcpu/emu/flags.h"

// One stub per opcode (D8-DF) and ModRM byte, 16 bytes each: load the guest's flags (FCMOVcc)
// and FPU state (FRSTOR from %rdi), run the instruction, save the state (FNSAVE: no wait, and
// the host FPU is initialised again) and return the flags (FCOMI). A memory form is called with
// ModRM.mod 0 and r/m 6: (%rsi). The other memory encodings in the table are never called.
asm(R"(
    .pushsection .text.bulkhead_x87, "ax", @progbits
    .balign 16
    .globl bulkheadX87Stubs
    .hidden bulkheadX87Stubs
bulkheadX87Stubs:
    .irp opcode, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf
    .set modrm, 0
    .rept 256
    .balign 16
    endbr64
    push %rdx
    popfq
    frstor (%rdi)
    .byte \opcode, modrm
    fnsave (%rdi)
    pushfq
    pop %rax
    ret
    .set modrm, modrm + 1
    .endr
    .endr
    .popsection
)");

// MMX instructions (0F 60-7F and 0F D0-FF, no prefix), the same way, 72 stubs per opcode: the
// 64 ModRM bytes of the register forms (C0-FF), then the memory forms of ModRM.reg 0-7, on
// (%rsi). Only those mmxHostRuns() accepts are called (not, say, the forms naming a general
// register, which would be the host's).
asm(R"(
    .pushsection .text.bulkhead_mmx, "ax", @progbits
    .balign 16
    .globl bulkheadMmxStubs
    .hidden bulkheadMmxStubs
bulkheadMmxStubs:
    .macro bulkhead_mmx_stub
    .balign 16
    endbr64
    frstor (%rdi)
    .byte 0x0f, opcode, modrm
    fnsave (%rdi)
    ret
    .endm
    .set opcode, 0x60
    .rept 0x20 + 0x30
    .set modrm, 0xc0
    .rept 64
    bulkhead_mmx_stub
    .set modrm, modrm + 1
    .endr
    .set modrm, 0x06
    .rept 8
    bulkhead_mmx_stub
    .set modrm, modrm + 8
    .endr
    .set opcode, opcode + 1
    .if opcode == 0x80
    .set opcode, 0xd0
    .endif
    .endr
    .popsection
)");

extern "C" const uint8_t bulkheadX87Stubs[];
extern "C" const uint8_t bulkheadMmxStubs[];

namespace bulkhead::emu {

namespace {

// FNSAVE's image in the host's (32-bit protected mode) format: the environment, then ST(0)-ST(7).
constexpr unsigned IMAGE_SIZE = 108, IMAGE_REGISTERS = 28;

template <typename T>
void put(uint8_t* at, T value) {
  memcpy(at, &value, sizeof value);
}
template <typename T>
T take(const uint8_t* at) {
  T value;
  memcpy(&value, at, sizeof value);
  return value;
}

unsigned tagOf(const X87State::Register& r) {
  unsigned exponent = r.signExponent & 0x7fff;
  if (exponent == 0x7fff) return 2;                      // infinity, NaN
  if (exponent == 0) return r.significand == 0 ? 1 : 2;  // zero, denormal
  return (r.significand >> 63) ? 0 : 2;                  // valid, unnormal
}

}  // namespace

uint16_t x87TagWord(const X87State& x87) {
  uint16_t tag = 0;
  for (unsigned i = 0; i < 8; ++i) {
    unsigned bits = ((x87.tag >> (2 * i)) & 3) == 3 ? 3 : tagOf(x87.r[i]);
    tag |= bits << (2 * i);
  }
  return tag;
}

uint8_t x87AbridgedTag(uint16_t tag) {
  uint8_t abridged = 0;
  for (unsigned i = 0; i < 8; ++i) {
    if (((tag >> (2 * i)) & 3) != 3) abridged |= 1 << i;
  }
  return abridged;
}

uint16_t x87TagFromAbridged(const X87State& x87, uint8_t abridged) {
  uint16_t tag = 0;
  for (unsigned i = 0; i < 8; ++i) {
    unsigned bits = (abridged >> i) & 1 ? tagOf(x87.r[i]) : 3;
    tag |= bits << (2 * i);
  }
  return tag;
}

bool x87HostRuns(uint8_t opcode, uint8_t modrm) {
  unsigned reg = (modrm >> 3) & 7;
  if ((modrm >> 6) != 3) {
    switch (opcode) {
      case 0xd9:
        return reg == 0 || reg == 2 || reg == 3;  // FLD FST FSTP m32fp
      case 0xdb:
        return reg != 4 && reg != 6;  // FILD FISTTP FIST FISTP m32int, FLD FSTP m80fp
      case 0xdd:
        return reg <= 3;  // FLD FISTTP FST FSTP m64
      default:
        return opcode >= 0xd8 && opcode <= 0xdf;  // arithmetic, compares, FILD/FIST/FBLD/FBSTP
    }
  }
  // Register forms that exist (SDM Vol. 2, Table A-7 to A-22) and are not control instructions.
  switch (opcode) {
    case 0xd8:
    case 0xdc:
      return true;
    case 0xd9:
      return modrm <= 0xd0 || (modrm >= 0xd8 && modrm <= 0xe1) || modrm == 0xe4 || modrm == 0xe5 ||
             (modrm >= 0xe8 && modrm <= 0xee) || modrm >= 0xf0;
    case 0xda:
      return modrm <= 0xdf || modrm == 0xe9;
    case 0xdb:
      return modrm <= 0xdf || (modrm >= 0xe8 && modrm <= 0xf7);  // FCMOVNcc, FUCOMI, FCOMI
    case 0xdd:
      return modrm <= 0xef;
    case 0xde:
      return modrm != 0xd8 && (modrm < 0xda || modrm > 0xdf);
    case 0xdf:
      return modrm <= 0xdf || (modrm >= 0xe8 && modrm <= 0xf7);
    default:
      return false;
  }
}

namespace {

struct StubResult {
  uint64_t flags;
  uint16_t raised;  // unmasked exceptions
};

// Runs `stub` on `x87` (see the stub tables above).
StubResult runStub(X87State& x87, const uint8_t* stub, uint8_t* memory, uint64_t flags) {
  // The guest's unmasked exception flags would make the host's instruction trap (#MF): the
  // caller took them as an exception already, or ignores them (CR0.NE clear). They are kept
  // out of the host's status and put back after.
  uint16_t pending = x87.status & ~x87.control & 0x3f;
  uint8_t image[IMAGE_SIZE] = {};
  put<uint16_t>(image, x87.control);
  put<uint16_t>(image + 4, x87.status & ~(pending | X87_ES | X87_BUSY));
  put<uint16_t>(image + 8, x87.tag);
  for (unsigned i = 0; i < 8; ++i) {
    const X87State::Register& r = x87.st(i);
    put(image + IMAGE_REGISTERS + 10 * i, r.significand);
    put(image + IMAGE_REGISTERS + 10 * i + 8, r.signExponent);
  }

  using Stub = uint64_t (*)(uint8_t * image, uint8_t * memory, uint64_t flags);
  uint16_t hostControl;
  asm volatile("fnstcw %0" : "=m"(hostControl));
  uint64_t hostFlags = reinterpret_cast<Stub>(const_cast<uint8_t*>(stub))(image, memory, flags);
  asm volatile("fldcw %0" : : "m"(hostControl));

  uint16_t status = take<uint16_t>(image + 4);
  StubResult result{hostFlags, static_cast<uint16_t>(status & ~x87.control & 0x3f)};
  x87.status = status | pending;
  x87.summarise();
  x87.tag = take<uint16_t>(image + 8);
  for (unsigned i = 0; i < 8; ++i) {
    X87State::Register& r = x87.st(i);
    r.significand = take<uint64_t>(image + IMAGE_REGISTERS + 10 * i);
    r.signExponent = take<uint16_t>(image + IMAGE_REGISTERS + 10 * i + 8);
  }
  return result;
}

}  // namespace

X87HostResult runOnHost(X87State& x87, uint8_t opcode, uint8_t modrm, uint8_t* memory,
                        uint64_t rflags) {
  uint8_t stubModrm = (modrm >> 6) == 3 ? modrm : static_cast<uint8_t>((modrm & 0x38) | 6);
  const uint8_t* stub = bulkheadX87Stubs + (((opcode & 7u) << 8) | stubModrm) * 16;
  StubResult result = runStub(x87, stub, memory, (rflags & FLAGS_ARITH) | 2);
  return {(rflags & ~FLAGS_ARITH) | (result.flags & FLAGS_ARITH), result.raised};
}

bool mmxHostRuns(uint8_t opcode, uint8_t modrm) {
  bool registerForm = (modrm >> 6) == 3;
  switch (opcode) {
    case 0x6e:  // MOVD mm, r/m32 and MOVD r/m32, mm: the caller gives the memory form
    case 0x7e:
    case 0xe7:  // MOVNTQ m64, mm
      return !registerForm;
    case 0x6f:
    case 0x7f:
      return true;
    default:
      return (opcode >= 0x60 && opcode <= 0x6b) || (opcode >= 0x74 && opcode <= 0x76) ||
             (opcode >= 0xd1 && opcode <= 0xd5) || (opcode >= 0xd8 && opcode <= 0xe5) ||
             (opcode >= 0xe8 && opcode <= 0xef) || (opcode >= 0xf1 && opcode <= 0xf6) ||
             (opcode >= 0xf8 && opcode <= 0xfe);
  }
}

void runMmxOnHost(X87State& x87, uint8_t opcode, uint8_t modrm, uint8_t* memory) {
  unsigned column = (modrm >> 6) == 3 ? modrm - 0xc0u : 64 + ((modrm >> 3) & 7u);
  unsigned row = opcode < 0x80 ? opcode - 0x60u : opcode - 0xd0u + 0x20;
  runStub(x87, bulkheadMmxStubs + (row * 72 + column) * 16, memory, 2);
}

}  // namespace bulkhead::emu
