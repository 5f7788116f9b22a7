// SSE and SSE2: moves, packed integer, scalar and packed floating point, conversions (MXCSR.RC),
// and FXSAVE/FXRSTOR.
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/executor.h"

namespace bulkhead::emu {

uint64_t Executor::toInteger(double value, unsigned size, bool truncate) const {
  if (!truncate) {
    switch ((s.mxcsr >> 13) & 3) {
      case 0:
        value = std::nearbyint(value);  // to nearest even: the host's own mode
        break;
      case 1:
        value = std::floor(value);
        break;
      case 2:
        value = std::ceil(value);
        break;
      default:
        value = std::trunc(value);
        break;
    }
  }
  double limit = size == 8 ? 9223372036854775808.0 : 2147483648.0;
  if (value != value || value >= limit || value < -limit) return signBit(size);
  return static_cast<uint64_t>(static_cast<int64_t>(value)) & mask(size);
}

Executor::Vec Executor::getVec(const Operand& o, unsigned bytes, bool aligned) {
  Vec v;
  if (isXmm(o)) {
    v.q[0] = s.xmm[o.reg - REG_XMM][0];
    v.q[1] = s.xmm[o.reg - REG_XMM][1];
    if (bytes < 16) v.q[1] = 0;
    if (bytes < 8) v.q[0] &= mask(bytes);
    return v;
  }
  if (o.kind == OperandKind::MEM) {
    uint64_t at = offset(o);
    if (aligned && (at & 15)) throw GuestFault{13, true, 0};
    v.q[0] = c.read(segmentOf(o), at, bytes < 8 ? bytes : 8);
    if (bytes == 16) v.q[1] = c.read(segmentOf(o), at + 8, 8);
    return v;
  }
  v.q[0] = get(o) & mask(bytes);
  return v;
}

void Executor::setVec(const Operand& o, Vec v, unsigned bytes, bool zeroUpper, bool aligned) {
  if (isXmm(o)) {
    uint64_t* x = s.xmm[o.reg - REG_XMM];
    if (bytes == 16 || zeroUpper) {
      x[0] = bytes < 8 ? v.q[0] & mask(bytes) : v.q[0];
      x[1] = bytes == 16 ? v.q[1] : 0;
    } else {
      x[0] = (x[0] & ~mask(bytes)) | (v.q[0] & mask(bytes));
    }
    return;
  }
  if (o.kind == OperandKind::MEM) {
    uint64_t at = offset(o);
    if (aligned && (at & 15)) throw GuestFault{13, true, 0};
    if (bytes == 16) {
      // Both halves must be writable before either is written.
      c.linearAddress(segmentOf(o), at, 16, true);
      c.write(segmentOf(o), at, 8, v.q[0]);
      c.write(segmentOf(o), at + 8, 8, v.q[1]);
    } else {
      c.write(segmentOf(o), at, bytes, v.q[0] & mask(bytes));
    }
    return;
  }
  set(o, v.q[0]);
}

bool Executor::sse(ZydisMnemonic m) {
  const Operand* op = in.op;
  auto arith = [&](unsigned bytes, bool packed, auto f32, auto f64) {
    Vec a = getVec(op[0], 16), b = getVec(op[1], packed ? 16 : bytes, packed);
    Vec r = a;
    unsigned count = packed ? 16 / bytes : 1;
    for (unsigned i = 0; i < count; ++i) {
      unsigned half = (i * bytes) / 8, shift = (i * bytes * 8) % 64;
      uint64_t x = (a.q[half] >> shift) & mask(bytes), y = (b.q[half] >> shift) & mask(bytes);
      uint64_t z = bytes == 4 ? floatOp<float>(x, y, f32) : floatOp<double>(x, y, f64);
      r.q[half] = (r.q[half] & ~(mask(bytes) << shift)) | ((z & mask(bytes)) << shift);
    }
    setVec(op[0], r, 16, false);
  };
  auto addF = [](auto x, auto y) { return x + y; };
  auto subF = [](auto x, auto y) { return x - y; };
  auto mulF = [](auto x, auto y) { return x * y; };
  auto divF = [](auto x, auto y) { return x / y; };
  switch (m) {
    case ZYDIS_MNEMONIC_MOVAPS:
    case ZYDIS_MNEMONIC_MOVAPD:
    case ZYDIS_MNEMONIC_MOVDQA:
    case ZYDIS_MNEMONIC_MOVNTDQ:
    case ZYDIS_MNEMONIC_MOVNTPS:
    case ZYDIS_MNEMONIC_MOVNTPD:
      setVec(op[0], getVec(op[1], 16, true), 16, true, true);
      return true;
    case ZYDIS_MNEMONIC_MOVUPS:
    case ZYDIS_MNEMONIC_MOVUPD:
    case ZYDIS_MNEMONIC_MOVDQU:
    case ZYDIS_MNEMONIC_LDDQU:
      setVec(op[0], getVec(op[1], 16), 16, true);
      return true;
    case ZYDIS_MNEMONIC_MOVD:
    case ZYDIS_MNEMONIC_MOVQ: {
      unsigned bytes = m == ZYDIS_MNEMONIC_MOVD ? 4 : 8;
      if (!isXmm(op[0]) && op[0].kind == OperandKind::REG) {
        setReg(op[0].reg, bytes, getVec(op[1], bytes).q[0]);
      } else {
        setVec(op[0], getVec(op[1], bytes), bytes, true);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_MOVSS:
    case ZYDIS_MNEMONIC_MOVSD: {
      unsigned bytes = m == ZYDIS_MNEMONIC_MOVSS ? 4 : 8;
      setVec(op[0], getVec(op[1], bytes), bytes, op[1].kind == OperandKind::MEM);
      return true;
    }
    case ZYDIS_MNEMONIC_PXOR:
    case ZYDIS_MNEMONIC_XORPS:
    case ZYDIS_MNEMONIC_XORPD:
    case ZYDIS_MNEMONIC_PAND:
    case ZYDIS_MNEMONIC_ANDPS:
    case ZYDIS_MNEMONIC_ANDPD:
    case ZYDIS_MNEMONIC_POR:
    case ZYDIS_MNEMONIC_ORPS:
    case ZYDIS_MNEMONIC_ORPD:
    case ZYDIS_MNEMONIC_PANDN:
    case ZYDIS_MNEMONIC_ANDNPS:
    case ZYDIS_MNEMONIC_ANDNPD: {
      Vec a = getVec(op[0], 16), b = getVec(op[1], 16, true), r;
      for (unsigned i = 0; i < 2; ++i) {
        bool isXor =
            m == ZYDIS_MNEMONIC_PXOR || m == ZYDIS_MNEMONIC_XORPS || m == ZYDIS_MNEMONIC_XORPD;
        bool isAnd =
            m == ZYDIS_MNEMONIC_PAND || m == ZYDIS_MNEMONIC_ANDPS || m == ZYDIS_MNEMONIC_ANDPD;
        bool isOr = m == ZYDIS_MNEMONIC_POR || m == ZYDIS_MNEMONIC_ORPS || m == ZYDIS_MNEMONIC_ORPD;
        r.q[i] = isXor   ? a.q[i] ^ b.q[i]
                 : isAnd ? a.q[i] & b.q[i]
                 : isOr  ? a.q[i] | b.q[i]
                         : ~a.q[i] & b.q[i];
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PADDB:
    case ZYDIS_MNEMONIC_PADDW:
    case ZYDIS_MNEMONIC_PADDD:
    case ZYDIS_MNEMONIC_PADDQ:
    case ZYDIS_MNEMONIC_PSUBB:
    case ZYDIS_MNEMONIC_PSUBW:
    case ZYDIS_MNEMONIC_PSUBD:
    case ZYDIS_MNEMONIC_PSUBQ:
    case ZYDIS_MNEMONIC_PCMPEQB:
    case ZYDIS_MNEMONIC_PCMPEQW:
    case ZYDIS_MNEMONIC_PCMPEQD: {
      unsigned lane =
          (m == ZYDIS_MNEMONIC_PADDB || m == ZYDIS_MNEMONIC_PSUBB || m == ZYDIS_MNEMONIC_PCMPEQB)
              ? 1
          : (m == ZYDIS_MNEMONIC_PADDW || m == ZYDIS_MNEMONIC_PSUBW || m == ZYDIS_MNEMONIC_PCMPEQW)
              ? 2
          : (m == ZYDIS_MNEMONIC_PADDQ || m == ZYDIS_MNEMONIC_PSUBQ) ? 8
                                                                     : 4;
      bool add = m == ZYDIS_MNEMONIC_PADDB || m == ZYDIS_MNEMONIC_PADDW ||
                 m == ZYDIS_MNEMONIC_PADDD || m == ZYDIS_MNEMONIC_PADDQ;
      bool compare =
          m == ZYDIS_MNEMONIC_PCMPEQB || m == ZYDIS_MNEMONIC_PCMPEQW || m == ZYDIS_MNEMONIC_PCMPEQD;
      Vec r = lanes(getVec(op[0], 16), getVec(op[1], 16, true), lane, [&](uint64_t x, uint64_t y) {
        return compare ? (x == y ? ~0ull : 0) : add ? x + y : x - y;
      });
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_MASKMOVDQU: {
      Vec data = getVec(op[0], 16), select = getVec(op[1], 16);
      maskedStore(data.q[0], select.q[0], data.q[1], select.q[1]);
      return true;
    }
    case ZYDIS_MNEMONIC_PMOVMSKB: {
      Vec v = getVec(op[1], 16);
      uint64_t bits = 0;
      for (unsigned i = 0; i < 16; ++i) bits |= ((v.q[i / 8] >> ((i % 8) * 8 + 7)) & 1) << i;
      setReg(op[0].reg, op[0].size, bits);
      return true;
    }
    case ZYDIS_MNEMONIC_ADDSS:
      arith(4, false, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_SUBSS:
      arith(4, false, subF, subF);
      return true;
    case ZYDIS_MNEMONIC_MULSS:
      arith(4, false, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_DIVSS:
      arith(4, false, divF, divF);
      return true;
    case ZYDIS_MNEMONIC_ADDSD:
      arith(8, false, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_SUBSD:
      arith(8, false, subF, subF);
      return true;
    case ZYDIS_MNEMONIC_MULSD:
      arith(8, false, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_DIVSD:
      arith(8, false, divF, divF);
      return true;
    case ZYDIS_MNEMONIC_ADDPS:
      arith(4, true, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_ADDPD:
      arith(8, true, addF, addF);
      return true;
    case ZYDIS_MNEMONIC_MULPS:
      arith(4, true, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_MULPD:
      arith(8, true, mulF, mulF);
      return true;
    case ZYDIS_MNEMONIC_CVTSI2SD:
    case ZYDIS_MNEMONIC_CVTSI2SS: {
      int64_t value = signExtend(get(op[1]), op[1].size);
      Vec r;
      if (m == ZYDIS_MNEMONIC_CVTSI2SD) {
        double d = static_cast<double>(value);
        memcpy(&r.q[0], &d, 8);
        setVec(op[0], r, 8, false);
      } else {
        float f = static_cast<float>(value);
        memcpy(&r.q[0], &f, 4);
        setVec(op[0], r, 4, false);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_CVTTSD2SI:
    case ZYDIS_MNEMONIC_CVTTSS2SI:
    case ZYDIS_MNEMONIC_CVTSD2SI:
    case ZYDIS_MNEMONIC_CVTSS2SI: {
      bool single = m == ZYDIS_MNEMONIC_CVTTSS2SI || m == ZYDIS_MNEMONIC_CVTSS2SI;
      bool truncate = m == ZYDIS_MNEMONIC_CVTTSD2SI || m == ZYDIS_MNEMONIC_CVTTSS2SI;
      double value = toDouble(getVec(op[1], single ? 4 : 8).q[0], single);
      setReg(op[0].reg, op[0].size, toInteger(value, op[0].size, truncate));
      return true;
    }
    case ZYDIS_MNEMONIC_LDMXCSR: {
      uint64_t value = get(op[0]);
      if (value & ~0xffffull) throw GuestFault{13, true, 0};
      s.mxcsr = static_cast<uint32_t>(value);
      return true;
    }
    case ZYDIS_MNEMONIC_STMXCSR:
      set(op[0], s.mxcsr);
      return true;
    default:
      return sse2(m);
  }
}

// Shuffles, unpacks, shifts, saturating and min/max integer lanes, comparisons and conversions:
// the rest of SSE and SSE2 that a kernel and glibc's baseline (x86-64 v1) code use.
bool Executor::sse2(ZydisMnemonic m) {
  const Operand* op = in.op;
  auto source = [&]() { return getVec(op[1], 16, true); };
  auto imm = [&](unsigned index) { return static_cast<unsigned>(get(op[index]) & 0xff); };
  // A lane-wise operation on `width`-byte lanes of destination and source.
  auto laneOp = [&](unsigned width, auto f) {
    setVec(op[0], lanes(getVec(op[0], 16), source(), width, f), 16, true);
  };
  auto signedLane = [](uint64_t x, unsigned width) { return signExtend(x, width); };
  auto saturate = [](int64_t x, int64_t low, int64_t high) {
    return static_cast<uint64_t>(x < low ? low : x > high ? high : x);
  };
  switch (m) {
    case ZYDIS_MNEMONIC_PUNPCKLBW:
    case ZYDIS_MNEMONIC_PUNPCKLWD:
    case ZYDIS_MNEMONIC_PUNPCKLDQ:
    case ZYDIS_MNEMONIC_PUNPCKLQDQ:
    case ZYDIS_MNEMONIC_PUNPCKHBW:
    case ZYDIS_MNEMONIC_PUNPCKHWD:
    case ZYDIS_MNEMONIC_PUNPCKHDQ:
    case ZYDIS_MNEMONIC_PUNPCKHQDQ:
    case ZYDIS_MNEMONIC_UNPCKLPS:
    case ZYDIS_MNEMONIC_UNPCKLPD:
    case ZYDIS_MNEMONIC_UNPCKHPS:
    case ZYDIS_MNEMONIC_UNPCKHPD: {
      unsigned width = (m == ZYDIS_MNEMONIC_PUNPCKLBW || m == ZYDIS_MNEMONIC_PUNPCKHBW)   ? 1
                       : (m == ZYDIS_MNEMONIC_PUNPCKLWD || m == ZYDIS_MNEMONIC_PUNPCKHWD) ? 2
                       : (m == ZYDIS_MNEMONIC_PUNPCKLDQ || m == ZYDIS_MNEMONIC_PUNPCKHDQ ||
                          m == ZYDIS_MNEMONIC_UNPCKLPS || m == ZYDIS_MNEMONIC_UNPCKHPS)
                           ? 4
                           : 8;
      bool high = m == ZYDIS_MNEMONIC_PUNPCKHBW || m == ZYDIS_MNEMONIC_PUNPCKHWD ||
                  m == ZYDIS_MNEMONIC_PUNPCKHDQ || m == ZYDIS_MNEMONIC_PUNPCKHQDQ ||
                  m == ZYDIS_MNEMONIC_UNPCKHPS || m == ZYDIS_MNEMONIC_UNPCKHPD;
      Vec a = getVec(op[0], 16), b = source(), r;
      unsigned half = 8 / width, base = high ? half : 0;
      for (unsigned i = 0; i < half; ++i) {
        setElement(r, 2 * i, width, element(a, base + i, width));
        setElement(r, 2 * i + 1, width, element(b, base + i, width));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PACKUSWB:
    case ZYDIS_MNEMONIC_PACKSSWB:
    case ZYDIS_MNEMONIC_PACKSSDW: {
      unsigned width = m == ZYDIS_MNEMONIC_PACKSSDW ? 4 : 2;
      int64_t low = m == ZYDIS_MNEMONIC_PACKUSWB ? 0 : m == ZYDIS_MNEMONIC_PACKSSWB ? -128 : -32768;
      int64_t high = m == ZYDIS_MNEMONIC_PACKUSWB   ? 255
                     : m == ZYDIS_MNEMONIC_PACKSSWB ? 127
                                                    : 32767;
      Vec in2[2] = {getVec(op[0], 16), source()}, r;
      unsigned count = 16 / width;
      for (unsigned i = 0; i < 2 * count; ++i) {
        int64_t x = signExtend(element(in2[i / count], i % count, width), width);
        setElement(r, i, width / 2, saturate(x, low, high));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSHUFD: {
      Vec b = source(), r;
      unsigned order = imm(2);
      for (unsigned i = 0; i < 4; ++i) setElement(r, i, 4, element(b, (order >> (2 * i)) & 3, 4));
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSHUFLW:
    case ZYDIS_MNEMONIC_PSHUFHW: {
      Vec b = source(), r = b;
      unsigned order = imm(2), base = m == ZYDIS_MNEMONIC_PSHUFHW ? 4 : 0;
      for (unsigned i = 0; i < 4; ++i) {
        setElement(r, base + i, 2, element(b, base + ((order >> (2 * i)) & 3), 2));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_SHUFPS: {
      Vec a = getVec(op[0], 16), b = source(), r;
      unsigned order = imm(2);
      for (unsigned i = 0; i < 4; ++i) {
        setElement(r, i, 4, element(i < 2 ? a : b, (order >> (2 * i)) & 3, 4));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_SHUFPD: {
      Vec a = getVec(op[0], 16), b = source(), r;
      unsigned order = imm(2);
      r.q[0] = a.q[order & 1];
      r.q[1] = b.q[(order >> 1) & 1];
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PMINUB:
      laneOp(1, [](uint64_t x, uint64_t y) { return x < y ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PMAXUB:
      laneOp(1, [](uint64_t x, uint64_t y) { return x > y ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PMINSW:
      laneOp(2,
             [&](uint64_t x, uint64_t y) { return signedLane(x, 2) < signedLane(y, 2) ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PMAXSW:
      laneOp(2,
             [&](uint64_t x, uint64_t y) { return signedLane(x, 2) > signedLane(y, 2) ? x : y; });
      return true;
    case ZYDIS_MNEMONIC_PCMPGTB:
    case ZYDIS_MNEMONIC_PCMPGTW:
    case ZYDIS_MNEMONIC_PCMPGTD: {
      unsigned width = m == ZYDIS_MNEMONIC_PCMPGTB ? 1 : m == ZYDIS_MNEMONIC_PCMPGTW ? 2 : 4;
      laneOp(width, [&](uint64_t x, uint64_t y) {
        return signedLane(x, width) > signedLane(y, width) ? ~0ull : 0;
      });
      return true;
    }
    case ZYDIS_MNEMONIC_PADDUSB:
    case ZYDIS_MNEMONIC_PADDUSW:
    case ZYDIS_MNEMONIC_PSUBUSB:
    case ZYDIS_MNEMONIC_PSUBUSW:
    case ZYDIS_MNEMONIC_PADDSB:
    case ZYDIS_MNEMONIC_PADDSW:
    case ZYDIS_MNEMONIC_PSUBSB:
    case ZYDIS_MNEMONIC_PSUBSW: {
      bool byte = m == ZYDIS_MNEMONIC_PADDUSB || m == ZYDIS_MNEMONIC_PSUBUSB ||
                  m == ZYDIS_MNEMONIC_PADDSB || m == ZYDIS_MNEMONIC_PSUBSB;
      bool add = m == ZYDIS_MNEMONIC_PADDUSB || m == ZYDIS_MNEMONIC_PADDUSW ||
                 m == ZYDIS_MNEMONIC_PADDSB || m == ZYDIS_MNEMONIC_PADDSW;
      bool isSigned = m == ZYDIS_MNEMONIC_PADDSB || m == ZYDIS_MNEMONIC_PADDSW ||
                      m == ZYDIS_MNEMONIC_PSUBSB || m == ZYDIS_MNEMONIC_PSUBSW;
      unsigned width = byte ? 1 : 2;
      int64_t low = isSigned ? -static_cast<int64_t>(signBit(width)) : 0;
      int64_t high = isSigned ? static_cast<int64_t>(signBit(width)) - 1 : mask(width);
      laneOp(width, [&](uint64_t x, uint64_t y) {
        int64_t a = isSigned ? signExtend(x, width) : static_cast<int64_t>(x);
        int64_t b = isSigned ? signExtend(y, width) : static_cast<int64_t>(y);
        return saturate(add ? a + b : a - b, low, high);
      });
      return true;
    }
    case ZYDIS_MNEMONIC_PAVGB:
      laneOp(1, [](uint64_t x, uint64_t y) { return (x + y + 1) >> 1; });
      return true;
    case ZYDIS_MNEMONIC_PAVGW:
      laneOp(2, [](uint64_t x, uint64_t y) { return (x + y + 1) >> 1; });
      return true;
    case ZYDIS_MNEMONIC_PMULLW:
      laneOp(2, [](uint64_t x, uint64_t y) { return x * y; });
      return true;
    case ZYDIS_MNEMONIC_PMULHW:
      laneOp(2, [&](uint64_t x, uint64_t y) {
        return static_cast<uint64_t>(signedLane(x, 2) * signedLane(y, 2)) >> 16;
      });
      return true;
    case ZYDIS_MNEMONIC_PMULHUW:
      laneOp(2, [](uint64_t x, uint64_t y) { return (x * y) >> 16; });
      return true;
    case ZYDIS_MNEMONIC_PMULUDQ: {
      Vec a = getVec(op[0], 16), b = source(), r;
      for (unsigned i = 0; i < 2; ++i) r.q[i] = (a.q[i] & 0xffffffff) * (b.q[i] & 0xffffffff);
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSADBW: {
      Vec a = getVec(op[0], 16), b = source(), r;
      for (unsigned i = 0; i < 16; ++i) {
        uint64_t x = element(a, i, 1), y = element(b, i, 1);
        r.q[i / 8] += x > y ? x - y : y - x;
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSLLW:
    case ZYDIS_MNEMONIC_PSLLD:
    case ZYDIS_MNEMONIC_PSLLQ:
    case ZYDIS_MNEMONIC_PSRLW:
    case ZYDIS_MNEMONIC_PSRLD:
    case ZYDIS_MNEMONIC_PSRLQ:
    case ZYDIS_MNEMONIC_PSRAW:
    case ZYDIS_MNEMONIC_PSRAD: {
      unsigned width =
          (m == ZYDIS_MNEMONIC_PSLLW || m == ZYDIS_MNEMONIC_PSRLW || m == ZYDIS_MNEMONIC_PSRAW) ? 2
          : (m == ZYDIS_MNEMONIC_PSLLQ || m == ZYDIS_MNEMONIC_PSRLQ)                            ? 8
                                                                                                : 4;
      bool left =
          m == ZYDIS_MNEMONIC_PSLLW || m == ZYDIS_MNEMONIC_PSLLD || m == ZYDIS_MNEMONIC_PSLLQ;
      bool arithmetic = m == ZYDIS_MNEMONIC_PSRAW || m == ZYDIS_MNEMONIC_PSRAD;
      uint64_t count = op[1].kind == OperandKind::IMM ? imm(1) : source().q[0];
      unsigned bits = width * 8;
      Vec a = getVec(op[0], 16), r;
      for (unsigned i = 0; i < 16 / width; ++i) {
        uint64_t x = element(a, i, width);
        uint64_t y =
            arithmetic
                ? static_cast<uint64_t>(signExtend(x, width) >> (count >= bits ? bits - 1 : count))
            : count >= bits ? 0
            : left          ? x << count
                            : x >> count;
        setElement(r, i, width, y);
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PSLLDQ:
    case ZYDIS_MNEMONIC_PSRLDQ: {
      unsigned count = imm(1);
      Vec a = getVec(op[0], 16), r;
      for (unsigned i = 0; i < 16; ++i) {
        int from = m == ZYDIS_MNEMONIC_PSLLDQ ? static_cast<int>(i) - static_cast<int>(count)
                                              : static_cast<int>(i + count);
        if (count < 16 && from >= 0 && from < 16) setElement(r, i, 1, element(a, from, 1));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_PEXTRW:
      setReg(op[0].reg, op[0].size, element(getVec(op[1], 16), imm(2) & 7, 2));
      return true;
    case ZYDIS_MNEMONIC_PINSRW: {
      Vec a = getVec(op[0], 16);
      setElement(a, imm(2) & 7, 2, get(op[1]));
      setVec(op[0], a, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_MOVHLPS:
    case ZYDIS_MNEMONIC_MOVLHPS: {
      Vec a = getVec(op[0], 16), b = getVec(op[1], 16);
      if (m == ZYDIS_MNEMONIC_MOVHLPS) {
        a.q[0] = b.q[1];
      } else {
        a.q[1] = b.q[0];
      }
      setVec(op[0], a, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_MOVHPS:
    case ZYDIS_MNEMONIC_MOVHPD:
    case ZYDIS_MNEMONIC_MOVLPS:
    case ZYDIS_MNEMONIC_MOVLPD: {
      bool high = m == ZYDIS_MNEMONIC_MOVHPS || m == ZYDIS_MNEMONIC_MOVHPD;
      if (isXmm(op[0])) {
        Vec a = getVec(op[0], 16);
        a.q[high ? 1 : 0] = getVec(op[1], 8).q[0];
        setVec(op[0], a, 16, true);
      } else {
        Vec r;
        r.q[0] = getVec(op[1], 16).q[high ? 1 : 0];
        setVec(op[0], r, 8, false);
      }
      return true;
    }
    case ZYDIS_MNEMONIC_MOVMSKPS:
    case ZYDIS_MNEMONIC_MOVMSKPD: {
      unsigned width = m == ZYDIS_MNEMONIC_MOVMSKPS ? 4 : 8;
      Vec v = getVec(op[1], 16);
      uint64_t bits = 0;
      for (unsigned i = 0; i < 16 / width; ++i)
        bits |= (element(v, i, width) >> (width * 8 - 1)) << i;
      setReg(op[0].reg, op[0].size, bits);
      return true;
    }
    case ZYDIS_MNEMONIC_UCOMISS:
    case ZYDIS_MNEMONIC_COMISS:
    case ZYDIS_MNEMONIC_UCOMISD:
    case ZYDIS_MNEMONIC_COMISD: {
      bool single = m == ZYDIS_MNEMONIC_UCOMISS || m == ZYDIS_MNEMONIC_COMISS;
      unsigned width = single ? 4 : 8;
      double x = toDouble(getVec(op[0], width).q[0], single);
      double y = toDouble(getVec(op[1], width).q[0], single);
      uint64_t f = x != x || y != y ? FLAG_ZF | FLAG_PF | FLAG_CF
                   : x < y          ? FLAG_CF
                   : x == y         ? FLAG_ZF
                                    : 0;
      setFlags(f, FLAGS_ARITH);
      return true;
    }
    case ZYDIS_MNEMONIC_MINSS:
    case ZYDIS_MNEMONIC_MINSD:
    case ZYDIS_MNEMONIC_MINPS:
    case ZYDIS_MNEMONIC_MINPD:
    case ZYDIS_MNEMONIC_MAXSS:
    case ZYDIS_MNEMONIC_MAXSD:
    case ZYDIS_MNEMONIC_MAXPS:
    case ZYDIS_MNEMONIC_MAXPD:
    case ZYDIS_MNEMONIC_SQRTSS:
    case ZYDIS_MNEMONIC_SQRTSD:
    case ZYDIS_MNEMONIC_SQRTPS:
    case ZYDIS_MNEMONIC_SQRTPD:
    case ZYDIS_MNEMONIC_SUBPS:
    case ZYDIS_MNEMONIC_SUBPD:
    case ZYDIS_MNEMONIC_DIVPS:
    case ZYDIS_MNEMONIC_DIVPD:
    case ZYDIS_MNEMONIC_CMPSS:
    case ZYDIS_MNEMONIC_CMPSD:
    case ZYDIS_MNEMONIC_CMPPS:
    case ZYDIS_MNEMONIC_CMPPD:
      return floatLanes(m);
    case ZYDIS_MNEMONIC_CVTSS2SD:
    case ZYDIS_MNEMONIC_CVTSD2SS: {
      bool widen = m == ZYDIS_MNEMONIC_CVTSS2SD;
      double value = toDouble(getVec(op[1], widen ? 4 : 8).q[0], widen);
      Vec r;
      r.q[0] = fromDouble(value, !widen);
      setVec(op[0], r, widen ? 8 : 4, false);
      return true;
    }
    case ZYDIS_MNEMONIC_CVTDQ2PD:
    case ZYDIS_MNEMONIC_CVTDQ2PS: {
      bool toPd = m == ZYDIS_MNEMONIC_CVTDQ2PD;
      Vec b = getVec(op[1], toPd ? 8 : 16), r;
      for (unsigned i = 0; i < (toPd ? 2u : 4u); ++i) {
        double value = static_cast<double>(signExtend(element(b, i, 4), 4));
        setElement(r, i, toPd ? 8 : 4, fromDouble(value, !toPd));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    case ZYDIS_MNEMONIC_CVTPS2DQ:
    case ZYDIS_MNEMONIC_CVTTPS2DQ:
    case ZYDIS_MNEMONIC_CVTPD2DQ:
    case ZYDIS_MNEMONIC_CVTTPD2DQ: {
      bool single = m == ZYDIS_MNEMONIC_CVTPS2DQ || m == ZYDIS_MNEMONIC_CVTTPS2DQ;
      bool truncate = m == ZYDIS_MNEMONIC_CVTTPS2DQ || m == ZYDIS_MNEMONIC_CVTTPD2DQ;
      Vec b = getVec(op[1], 16, true), r;
      for (unsigned i = 0; i < (single ? 4u : 2u); ++i) {
        double value = toDouble(element(b, i, single ? 4 : 8), single);
        setElement(r, i, 4, toInteger(value, 4, truncate));
      }
      setVec(op[0], r, 16, true);  // the PD forms zero the upper half
      return true;
    }
    case ZYDIS_MNEMONIC_CVTPS2PD:
    case ZYDIS_MNEMONIC_CVTPD2PS: {
      bool widen = m == ZYDIS_MNEMONIC_CVTPS2PD;
      Vec b = getVec(op[1], widen ? 8 : 16, !widen), r;
      for (unsigned i = 0; i < 2; ++i) {
        double value = toDouble(element(b, i, widen ? 4 : 8), widen);
        setElement(r, i, widen ? 8 : 4, fromDouble(value, !widen));
      }
      setVec(op[0], r, 16, true);
      return true;
    }
    default:
      return false;
  }
}

// Scalar and packed min, max, square root, subtract, divide and compare (the SDM's rules for
// NaN and zero operands: MIN and MAX return the second operand; CMP's eight predicates).
bool Executor::floatLanes(ZydisMnemonic m) {
  const Operand* op = in.op;
  const char* name = ZydisMnemonicGetString(m);
  size_t length = strlen(name);
  bool packed = name[length - 2] == 'p';
  bool single = name[length - 1] == 's';
  unsigned width = single ? 4 : 8;
  Vec a = getVec(op[0], 16), b = getVec(op[1], packed ? 16 : width, packed), r = a;
  unsigned predicate = m == ZYDIS_MNEMONIC_CMPSS || m == ZYDIS_MNEMONIC_CMPSD ||
                               m == ZYDIS_MNEMONIC_CMPPS || m == ZYDIS_MNEMONIC_CMPPD
                           ? static_cast<unsigned>(get(op[2]) & 7)
                           : 0;
  for (unsigned i = 0; i < (packed ? 16 / width : 1); ++i) {
    double x = toDouble(element(a, i, width), single), y = toDouble(element(b, i, width), single);
    uint64_t bx = element(a, i, width), by = element(b, i, width);
    bool unordered = x != x || y != y;
    uint64_t out;
    switch (m) {
      case ZYDIS_MNEMONIC_MINSS:
      case ZYDIS_MNEMONIC_MINSD:
      case ZYDIS_MNEMONIC_MINPS:
      case ZYDIS_MNEMONIC_MINPD:
        out = x < y ? bx : by;
        break;
      case ZYDIS_MNEMONIC_MAXSS:
      case ZYDIS_MNEMONIC_MAXSD:
      case ZYDIS_MNEMONIC_MAXPS:
      case ZYDIS_MNEMONIC_MAXPD:
        out = x > y ? bx : by;
        break;
      case ZYDIS_MNEMONIC_SQRTSS:
      case ZYDIS_MNEMONIC_SQRTSD:
      case ZYDIS_MNEMONIC_SQRTPS:
      case ZYDIS_MNEMONIC_SQRTPD:
        out = fromDouble(single ? std::sqrt(static_cast<float>(y)) : std::sqrt(y), single);
        break;
      case ZYDIS_MNEMONIC_SUBPS:
      case ZYDIS_MNEMONIC_SUBPD:
        out = fromDouble(single ? static_cast<float>(x) - static_cast<float>(y) : x - y, single);
        break;
      case ZYDIS_MNEMONIC_DIVPS:
      case ZYDIS_MNEMONIC_DIVPD:
        out = fromDouble(single ? static_cast<float>(x) / static_cast<float>(y) : x / y, single);
        break;
      default: {  // CMPxx: EQ, LT, LE, UNORD, NEQ, NLT, NLE, ORD
        bool results[8] = {
            !unordered && x == y, !unordered && x < y,   !unordered && x <= y,   unordered,
            unordered || x != y,  unordered || !(x < y), unordered || !(x <= y), !unordered};
        out = results[predicate] ? ~0ull : 0;
        break;
      }
    }
    setElement(r, i, width, out);
  }
  setVec(op[0], r, 16, true);
  return true;
}

void Executor::fxsave(bool restore) {
  // The FXSAVE area (SDM Vol. 1, 10.5.1): x87 state, MXCSR, ST(0)-ST(7), XMM0-15. FXSAVE64
  // keeps 64-bit x87 instruction and data pointers where FXSAVE keeps offset and selector.
  SegmentIndex segment = segmentOf(in.op[0]);
  uint64_t at = offset(in.op[0]);
  if (at & 15) throw GuestFault{13, true, 0};
  c.linearAddress(segment, at, 512, !restore);
  unsigned registers = c.modeKey == 2 ? 16 : 8;
  bool wide = in.mnemonic == ZYDIS_MNEMONIC_FXSAVE64 || in.mnemonic == ZYDIS_MNEMONIC_FXRSTOR64;
  X87State& x = s.x87;
  if (restore) {
    uint32_t mxcsr = static_cast<uint32_t>(c.read(segment, at + 24, 4));
    if (mxcsr & ~0xffffu) throw GuestFault{13, true, 0};
    X87State next;
    next.control = static_cast<uint16_t>(c.read(segment, at, 2));
    next.status = static_cast<uint16_t>(c.read(segment, at + 2, 2));
    next.opcode = static_cast<uint16_t>(c.read(segment, at + 6, 2)) & 0x7ff;
    next.ip = c.read(segment, at + 8, wide ? 8 : 4);
    next.dp = c.read(segment, at + 16, wide ? 8 : 4);
    if (!wide) {
      next.cs = static_cast<uint16_t>(c.read(segment, at + 12, 2));
      next.ds = static_cast<uint16_t>(c.read(segment, at + 20, 2));
    }
    for (unsigned i = 0; i < 8; ++i) {
      X87State::Register& r = next.st(i);
      r.significand = c.read(segment, at + 32 + i * 16, 8);
      r.signExponent = static_cast<uint16_t>(c.read(segment, at + 40 + i * 16, 2));
    }
    next.tag = x87TagFromAbridged(next, static_cast<uint8_t>(c.read(segment, at + 4, 1)));
    next.summarise();
    x = next;
    s.mxcsr = mxcsr;
    for (unsigned i = 0; i < registers; ++i) {
      s.xmm[i][0] = c.read(segment, at + 160 + i * 16, 8);
      s.xmm[i][1] = c.read(segment, at + 168 + i * 16, 8);
    }
    return;
  }
  c.write(segment, at, 2, x.control);
  c.write(segment, at + 2, 2, x.status);
  c.write(segment, at + 4, 2, x87AbridgedTag(x.tag));
  c.write(segment, at + 6, 2, x.opcode);
  if (wide) {
    c.write(segment, at + 8, 8, x.ip);
    c.write(segment, at + 16, 8, x.dp);
  } else {
    c.write(segment, at + 8, 8, (x.ip & 0xffffffff) | uint64_t{x.cs} << 32);
    c.write(segment, at + 16, 8, (x.dp & 0xffffffff) | uint64_t{x.ds} << 32);
  }
  c.write(segment, at + 24, 4, s.mxcsr);
  c.write(segment, at + 28, 4, 0xffff);  // MXCSR_MASK
  for (unsigned i = 0; i < 8; ++i) {
    const X87State::Register& r = x.st(i);
    c.write(segment, at + 32 + i * 16, 8, r.significand);
    c.write(segment, at + 40 + i * 16, 8, r.signExponent);
  }
  for (unsigned i = 0; i < registers; ++i) {
    c.write(segment, at + 160 + i * 16, 8, s.xmm[i][0]);
    c.write(segment, at + 168 + i * 16, 8, s.xmm[i][1]);
  }
}

}  // namespace bulkhead::emu
