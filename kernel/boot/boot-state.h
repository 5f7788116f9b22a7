// The CPU state a loader hands to the vCPU: which mode to start in, and the registers that
// carry the boot protocol's arguments.
#pragma once

#include <cstdint>

namespace bulkhead {

enum class CpuMode {
  REAL16,       // real mode, CS:IP = 0:rip
  PROTECTED32,  // flat 32-bit protected mode, paging off
  LONG64,       // 64-bit mode, identity-mapped paging set up by the loader
  RESET,        // as after power-on: real mode at the reset vector 0xfffffff0 (a BIOS)
};

struct BootState {
  CpuMode mode = CpuMode::REAL16;
  uint64_t rip = 0;
  uint64_t rsp = 0;
  uint64_t rax = 0;
  uint64_t rbx = 0;
  uint64_t rsi = 0;
  uint64_t cr3 = 0;  // LONG64 only
  uint64_t gdtBase = 0;
  uint16_t gdtLimit = 0;
};

}  // namespace bulkhead
