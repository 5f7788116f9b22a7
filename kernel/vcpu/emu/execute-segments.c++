// Far pointers, the flags image, descriptor tables (LGDT/LIDT/SGDT/SIDT), system segments
// (LLDT, LTR), and VERR/VERW/LAR/LSL.
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/executor.h"

namespace bulkhead::emu {

Executor::FarPointer Executor::farPointer(const Operand& o, unsigned size) {
  if (o.kind == OperandKind::PTR) return {o.selector, static_cast<uint64_t>(o.value)};
  uint64_t at = offset(o);
  uint64_t target = c.read(segmentOf(o), at, size);
  return {static_cast<uint16_t>(c.read(segmentOf(o), at + size, 2)), target};
}

void Executor::writeFlagsImage(uint64_t value, unsigned size) {
  uint64_t changeable = FLAGS_ARITH | FLAG_TF | FLAG_DF | FLAG_NT | FLAG_AC | FLAG_ID;
  unsigned iopl = (s.rflags & FLAG_IOPL) >> 12;
  if (!protectedMode() || c.cpl() <= iopl) changeable |= FLAG_IF;
  if (!protectedMode() || c.cpl() == 0) changeable |= FLAG_IOPL;
  changeable &= mask(size);
  s.rflags = (s.rflags & ~changeable) | (value & changeable) | 2;
}

void Executor::descriptorTable(bool load, bool interrupts) {
  uint64_t at = offset(in.op[0]);
  SegmentIndex segment = segmentOf(in.op[0]);
  uint64_t& base = interrupts ? s.idtBase : s.gdtBase;
  uint16_t& limit = interrupts ? s.idtLimit : s.gdtLimit;
  unsigned baseBytes = c.modeKey == 2 ? 8 : 4;
  if (load) {
    requireCpl0();
    uint16_t newLimit = static_cast<uint16_t>(c.read(segment, at, 2));
    uint64_t newBase = c.read(segment, at + 2, baseBytes);
    if (c.modeKey != 2 && osize() == 2) newBase &= 0xffffff;
    limit = newLimit;
    base = newBase;
  } else {
    c.write(segment, at, 2, limit);
    c.write(segment, at + 2, baseBytes, base);
  }
}

void Executor::loadSystemSegment(bool task) {
  requireCpl0();
  if (!protectedMode()) throw GuestFault{6, false, 0};
  uint16_t selector = static_cast<uint16_t>(get(in.op[0]));
  SegmentState& target = task ? s.tr : s.ldtr;
  if ((selector & ~3u) == 0) {
    if (task) throw GuestFault{13, true, 0};
    target = SegmentState{};
    return;
  }
  if (selector & 4) throw GuestFault{13, true, static_cast<uint32_t>(selector & ~3u)};
  uint64_t address;
  uint32_t high;
  SegmentState loaded = c.descriptorAt(selector, &address, &high);
  bool ok = loaded.system && (task ? (loaded.type == 9 || loaded.type == 1) : loaded.type == 2);
  if (!ok) throw GuestFault{13, true, static_cast<uint32_t>(selector & ~3u)};
  if (!loaded.present) throw GuestFault{11, true, static_cast<uint32_t>(selector & ~3u)};
  if (s.efer & EFER_LMA) loaded.base |= static_cast<uint64_t>(high) << 32;
  if (task) {
    loaded.type |= 2;  // busy
    uint64_t raw = c.readSystem(address, 8) | (2ull << 40);
    c.writeSystem(address, 8, raw);
  }
  target = loaded;
}

void Executor::verifySegment(bool write) {
  SegmentState found;
  uint64_t raw;
  inspectSelector(
      static_cast<uint16_t>(get(in.op[0])),
      [&](const SegmentState& d) {
        bool code = d.type & 8;
        if (d.system) return false;
        return write ? !code && (d.type & 2) : !code || (d.type & 2);
      },
      &found, &raw);
}

void Executor::segmentAccessOrLimit(bool limit) {
  SegmentState found;
  uint64_t raw;
  auto accepts = [&](const SegmentState& d) {
    if (!d.system) return true;
    bool longMode = s.efer & EFER_LMA;
    switch (d.type) {
      case 2:
      case 9:
      case 11:
        return true;  // LDT, TSS
      case 1:
      case 3:
        return !longMode;  // 16-bit TSS
      case 4:
      case 5:
        return !limit && !longMode;  // 16-bit call gate, task gate
      case 12:
        return !limit;  // call gate
      default:
        return false;
    }
  };
  if (!inspectSelector(static_cast<uint16_t>(get(in.op[1])), accepts, &found, &raw)) return;
  set(in.op[0], limit ? found.limit : (raw >> 32) & 0x00f0ff00);
}

}  // namespace bulkhead::emu
