// Prescan: which instructions of a guest kernel defeat trap-and-emulate on x86.
//
// From the entry point, follow the code by recursive descent over direct branches (a path ends
// at an indirect transfer, at a return or halt-like end, at an instruction that would cross a
// page boundary, at code already scanned, beyond a depth limit, or outside the image) and put
// every instruction reached in one of three classes:
//
// - privileged: faults (#GP) when executed at CPL > 0, so a deprivileged guest kernel traps
//   and a monitor can emulate it (SDM Vol. 3, 2.8 and 5.9; I/O-sensitive instructions trap
//   when CPL > IOPL, Vol. 1, 19.5.1; SWAPGS and SYSRET, Vol. 2);
// - sensitive but unprivileged: reads or changes privileged state, or behaves differently,
//   at CPL > 0 without trapping (Robin and Irvine, USENIX Security 2000; SDM Vol. 3, 2.8 for
//   SGDT/SIDT/SLDT/SMSW/STR, which only UMIP makes fault, 2.7; Vol. 2 for POPF's silent IF/IOPL
//   handling, LAR/LSL/VERR/VERW's DPL checks, and MOV from a segment register, which reveals the
//   RPL): these are what a deprivileged monitor must find and patch, e.g. with INT3;
// - unprivileged: everything else.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <kj/common.h>

namespace bulkhead {

enum class InstructionClass { UNPRIVILEGED, PRIVILEGED, SENSITIVE };

struct ScannedInstruction {
  uint64_t address;
  unsigned length;
  InstructionClass kind;
  std::string text;
};

// The image as the CPU sees it: bytes at linear addresses (possibly several pieces).
class CodeImage {
 public:
  void add(uint64_t address, kj::ArrayPtr<const uint8_t> bytes);
  // Up to `max` bytes at `address`, stopping where the image ends.
  kj::ArrayPtr<const uint8_t> at(uint64_t address, size_t max) const;

 private:
  std::map<uint64_t, std::vector<uint8_t>> pieces;  // by start address
};

struct PrescanOptions {
  unsigned bits = 32;       // 16, 32 or 64
  unsigned maxDepth = 256;  // nested direct branches followed from the entry
};

struct PrescanResult {
  std::vector<ScannedInstruction> instructions;  // by address
  size_t counts[3] = {0, 0, 0};                  // by InstructionClass
};

PrescanResult prescan(const CodeImage& image, uint64_t entry, const PrescanOptions& options);

const char* className(InstructionClass kind);

}  // namespace bulkhead
