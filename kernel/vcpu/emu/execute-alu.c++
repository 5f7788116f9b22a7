// Arithmetic, logic, shifts and rotates, multiply and divide, bit tests: results and flags
// (SDM Vol. 1, 3.4.3; Vol. 2 for each instruction).
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/executor.h"

namespace bulkhead::emu {

uint64_t Executor::add(uint64_t a, uint64_t b, uint64_t carry, unsigned size, bool keepCarry) {
  uint64_t m = mask(size);
  a &= m;
  b &= m;
  uint64_t r = (a + b + carry) & m;
  uint64_t f = szp(r, size);
  bool cf = size == 8 ? (r < a || (carry && r == a)) : ((a + b + carry) >> (size * 8)) & 1;
  if (cf) f |= FLAG_CF;
  if (((a ^ r) & (b ^ r)) & signBit(size)) f |= FLAG_OF;
  if ((a ^ b ^ r) & 0x10) f |= FLAG_AF;
  setFlags(f, keepCarry ? FLAGS_ARITH & ~FLAG_CF : FLAGS_ARITH);
  return r;
}

uint64_t Executor::sub(uint64_t a, uint64_t b, uint64_t borrow, unsigned size, bool keepCarry) {
  uint64_t m = mask(size);
  a &= m;
  b &= m;
  uint64_t r = (a - b - borrow) & m;
  uint64_t f = szp(r, size);
  if (a < b || (borrow && a == b)) f |= FLAG_CF;
  if (((a ^ b) & (a ^ r)) & signBit(size)) f |= FLAG_OF;
  if ((a ^ b ^ r) & 0x10) f |= FLAG_AF;
  setFlags(f, keepCarry ? FLAGS_ARITH & ~FLAG_CF : FLAGS_ARITH);
  return r;
}

uint64_t Executor::logic(uint64_t r, unsigned size) {
  setFlags(szp(r, size), FLAGS_ARITH);
  return r & mask(size);
}

void Executor::shift(ZydisMnemonic m) {
  unsigned size = in.op[0].size;
  unsigned bits = size * 8;
  uint64_t count = (in.operandCount > 1 ? get(in.op[1]) : 1) & (size == 8 ? 63 : 31);
  uint64_t value = get(in.op[0]);
  if (count == 0) {
    if (size == 4) set(in.op[0], value);  // a 32-bit destination is still zero-extended
    return;
  }
  uint64_t m_ = mask(size);
  uint64_t r = 0, f = s.rflags;
  switch (m) {
    case ZYDIS_MNEMONIC_SHL: {
      r = count >= bits ? 0 : (value << count) & m_;
      bool cf = count <= bits && ((value >> (bits - count)) & 1);
      f = szp(r, size) | (cf ? FLAG_CF : 0);
      if (((r & signBit(size)) != 0) != cf) f |= FLAG_OF;
      break;
    }
    case ZYDIS_MNEMONIC_SHR: {
      r = count >= bits ? 0 : value >> count;
      bool cf = (value >> (count - 1)) & 1;
      f = szp(r, size) | (cf ? FLAG_CF : 0);
      if (value & signBit(size)) f |= count == 1 ? FLAG_OF : 0;
      break;
    }
    case ZYDIS_MNEMONIC_SAR: {
      int64_t v = signExtend(value, size);
      r = static_cast<uint64_t>(v >> (count >= bits ? bits - 1 : count)) & m_;
      bool cf = (v >> (count - 1 >= bits ? bits - 1 : count - 1)) & 1;
      f = szp(r, size) | (cf ? FLAG_CF : 0);
      break;
    }
    case ZYDIS_MNEMONIC_ROL: {
      unsigned n = count % bits;
      r = n == 0 ? value : ((value << n) | (value >> (bits - n))) & m_;
      f = s.rflags & ~(FLAG_CF | FLAG_OF);
      if (r & 1) f |= FLAG_CF;
      if (((r >> (bits - 1)) & 1) != (r & 1)) f |= FLAG_OF;
      setFlags(f, FLAG_CF | FLAG_OF);
      set(in.op[0], r);
      return;
    }
    case ZYDIS_MNEMONIC_ROR: {
      unsigned n = count % bits;
      r = n == 0 ? value : ((value >> n) | (value << (bits - n))) & m_;
      f = 0;
      if (r & signBit(size)) f |= FLAG_CF;
      if (((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1) f |= FLAG_OF;
      setFlags(f, FLAG_CF | FLAG_OF);
      set(in.op[0], r);
      return;
    }
    case ZYDIS_MNEMONIC_RCL:
    case ZYDIS_MNEMONIC_RCR: {
      unsigned n = count % (bits + 1);
      uint64_t carry = s.rflags & FLAG_CF ? 1 : 0;
      r = value;
      for (unsigned i = 0; i < n; ++i) {
        if (m == ZYDIS_MNEMONIC_RCL) {
          uint64_t out = (r >> (bits - 1)) & 1;
          r = ((r << 1) | carry) & m_;
          carry = out;
        } else {
          uint64_t out = r & 1;
          r = (r >> 1) | (carry << (bits - 1));
          carry = out;
        }
      }
      f = carry ? FLAG_CF : 0;
      if (m == ZYDIS_MNEMONIC_RCL) {
        if (((r >> (bits - 1)) & 1) != carry) f |= FLAG_OF;
      } else if (((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1) {
        f |= FLAG_OF;
      }
      setFlags(f, FLAG_CF | FLAG_OF);
      set(in.op[0], r);
      return;
    }
    default:
      break;
  }
  setFlags(f, FLAGS_ARITH);
  set(in.op[0], r);
}

void Executor::doubleShift(bool left) {
  unsigned size = in.op[0].size;
  unsigned bits = size * 8;
  uint64_t count = get(in.op[2]) & (size == 8 ? 63 : 31);
  if (count == 0) {
    if (size == 4) set(in.op[0], get(in.op[0]));  // still zero-extended
    return;
  }
  uint64_t dest = get(in.op[0]), source = get(in.op[1]);
  unsigned __int128 wide;
  uint64_t r;
  bool cf;
  if (left) {
    wide = (static_cast<unsigned __int128>(dest) << bits) | source;
    r = static_cast<uint64_t>(wide >> (bits - count)) & mask(size);
    cf = (dest >> (bits - count)) & 1;
  } else {
    wide = (static_cast<unsigned __int128>(source) << bits) | dest;
    r = static_cast<uint64_t>(wide >> count) & mask(size);
    cf = (dest >> (count - 1)) & 1;
  }
  uint64_t f = szp(r, size) | (cf ? FLAG_CF : 0);
  if ((r ^ dest) & signBit(size)) f |= FLAG_OF;
  setFlags(f, FLAGS_ARITH);
  set(in.op[0], r);
}

void Executor::multiply(bool isSigned) {
  unsigned size = in.op[0].size;
  if (in.operandCount >= 2 && isSigned) {  // IMUL r, r/m[, imm]
    const Operand& a = in.operandCount == 3 ? in.op[1] : in.op[0];
    const Operand& b = in.operandCount == 3 ? in.op[2] : in.op[1];
    __int128 product =
        static_cast<__int128>(signExtend(get(a), size)) * signExtend(get(b) & mask(size), size);
    uint64_t r = static_cast<uint64_t>(product) & mask(size);
    bool overflow = product != signExtend(r, size);
    setFlags(szp(r, size) | (overflow ? FLAG_CF | FLAG_OF : 0), FLAGS_ARITH);
    set(in.op[0], r);
    return;
  }
  uint64_t a = s.gpr[0] & mask(size), b = get(in.op[0]);
  unsigned __int128 product;
  bool overflow;
  if (isSigned) {
    __int128 p = static_cast<__int128>(signExtend(a, size)) * signExtend(b, size);
    product = static_cast<unsigned __int128>(p);
    overflow = p != signExtend(static_cast<uint64_t>(p) & mask(size), size);
  } else {
    product = static_cast<unsigned __int128>(a) * b;
    overflow = (product >> (size * 8)) != 0;
  }
  uint64_t low = static_cast<uint64_t>(product) & mask(size);
  uint64_t high = static_cast<uint64_t>(product >> (size * 8)) & mask(size);
  if (size == 1) {
    setReg(0, 2, static_cast<uint64_t>(product) & 0xffff);
  } else {
    setReg(0, size, low);
    setReg(2, size, high);
  }
  setFlags(szp(low, size) | (overflow ? FLAG_CF | FLAG_OF : 0), FLAGS_ARITH);
}

void Executor::divide(bool isSigned) {
  unsigned size = in.op[0].size;
  // Only the operand's own bytes divide (a memory operand may come back with more).
  uint64_t divisor = get(in.op[0]) & mask(size);
  if (divisor == 0) throw GuestFault{0, false, 0};  // #DE
  unsigned __int128 dividend;
  if (size == 1) {
    dividend = s.gpr[0] & 0xffff;
  } else {
    dividend = (static_cast<unsigned __int128>(s.gpr[2] & mask(size)) << (size * 8)) |
               (s.gpr[0] & mask(size));
  }
  uint64_t quotient, remainder;
  if (isSigned) {
    unsigned bits = size * 16;
    __int128 n = static_cast<__int128>(dividend << (128 - bits)) >> (128 - bits);
    __int128 d = signExtend(divisor, size);
    __int128 q = n / d;
    __int128 r = n % d;
    __int128 limit = static_cast<__int128>(1) << (size * 8 - 1);
    if (q >= limit || q < -limit) throw GuestFault{0, false, 0};
    quotient = static_cast<uint64_t>(q) & mask(size);
    remainder = static_cast<uint64_t>(r) & mask(size);
  } else {
    unsigned __int128 q = dividend / divisor;
    if (q >> (size * 8)) throw GuestFault{0, false, 0};
    quotient = static_cast<uint64_t>(q);
    remainder = static_cast<uint64_t>(dividend % divisor);
  }
  if (size == 1) {
    setReg(0, 2, (remainder << 8) | quotient);
  } else {
    setReg(0, size, quotient);
    setReg(2, size, remainder);
  }
}

void Executor::bitTest(ZydisMnemonic m) {
  unsigned size = in.op[0].size;
  uint64_t bit = get(in.op[1]);
  uint64_t value;
  Operand target = in.op[0];
  if (target.kind == OperandKind::MEM && in.op[1].kind == OperandKind::REG) {
    // A register bit offset reaches beyond the operand (SDM Vol. 2, BT).
    int64_t offsetBits = signExtend(bit, in.op[1].size);
    int64_t step = (offsetBits >> (size == 8 ? 6 : size == 4 ? 5 : 4)) * size;
    target.value += step;
    bit = static_cast<uint64_t>(offsetBits) & (size * 8 - 1);
  } else {
    bit &= size * 8 - 1;
  }
  value = get(target);
  bool was = (value >> bit) & 1;
  setFlags(was ? FLAG_CF : 0, FLAG_CF);
  if (m == ZYDIS_MNEMONIC_BT) return;
  if (m == ZYDIS_MNEMONIC_BTS) value |= 1ull << bit;
  if (m == ZYDIS_MNEMONIC_BTR) value &= ~(1ull << bit);
  if (m == ZYDIS_MNEMONIC_BTC) value ^= 1ull << bit;
  set(target, value);
}

}  // namespace bulkhead::emu
