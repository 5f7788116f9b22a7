// Decodes guest instructions with Zydis for reports (emulation failures, traces, debugging).
#pragma once

#include <cstdint>
#include <string>

#include <kj/common.h>

namespace bulkhead {

enum class CodeWidth { BITS16, BITS32, BITS64 };

struct Disassembly {
  bool valid = false;
  unsigned length = 0;
  std::string text;  // Intel syntax, or "(undecodable)" with the bytes
};

Disassembly disassemble(CodeWidth width, uint64_t address, kj::ArrayPtr<const uint8_t> bytes);

// "0f c7 0e" style hex of the first `count` bytes.
std::string hexBytes(kj::ArrayPtr<const uint8_t> bytes);

}  // namespace bulkhead
