// Segment and system descriptors as the CPU reads them (SDM Vol. 3, 3.4.5): the one decoding of
// base, limit and attributes that the software CPU and the guest views share.
#pragma once

#include <cstdint>

#include "kernel/x86/arch-state.h"

namespace bulkhead::x86 {

// The 32-bit base of an 8-byte descriptor (a 16-byte IA-32e system descriptor adds its second
// quadword's low 32 bits above it).
constexpr uint64_t descriptorBase(uint64_t d) {
  return ((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000);
}

// The limit in bytes: the 20-bit field, in 4 KiB units when G is set.
constexpr uint32_t descriptorLimit(uint64_t d) {
  uint32_t limit = (d & 0xffff) | ((d >> 32) & 0xf0000);
  return (d & (uint64_t{1} << 55)) ? (limit << 12) | 0xfff : limit;
}

// What loading `selector` with descriptor `d` puts in a segment register.
constexpr SegmentState segmentFromDescriptor(uint16_t selector, uint64_t d) {
  SegmentState segment;
  segment.selector = selector;
  segment.base = descriptorBase(d);
  segment.limit = descriptorLimit(d);
  segment.type = (d >> 40) & 0xf;
  segment.system = !((d >> 44) & 1);
  segment.dpl = (d >> 45) & 3;
  segment.present = (d >> 47) & 1;
  segment.longMode = (d >> 53) & 1;
  segment.big = (d >> 54) & 1;
  return segment;
}

}  // namespace bulkhead::x86
