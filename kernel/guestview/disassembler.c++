#include "kernel/guestview/disassembler.h"

#include <Zydis/Zydis.h>
#include <absl/strings/str_format.h>

namespace bulkhead {

std::string hexBytes(kj::ArrayPtr<const uint8_t> bytes) {
  std::string out;
  for (uint8_t byte : bytes) absl::StrAppendFormat(&out, out.empty() ? "%02x" : " %02x", byte);
  return out;
}

Disassembly disassemble(CodeWidth width, uint64_t address, kj::ArrayPtr<const uint8_t> bytes) {
  ZydisMachineMode mode = width == CodeWidth::BITS64   ? ZYDIS_MACHINE_MODE_LONG_64
                          : width == CodeWidth::BITS32 ? ZYDIS_MACHINE_MODE_LONG_COMPAT_32
                                                       : ZYDIS_MACHINE_MODE_LEGACY_16;
  ZydisDisassembledInstruction instruction;
  Disassembly result;
  if (ZYAN_SUCCESS(
          ZydisDisassembleIntel(mode, address, bytes.begin(), bytes.size(), &instruction))) {
    result.valid = true;
    result.length = instruction.info.length;
    result.text = instruction.text;
  } else {
    result.text = "(undecodable)";
  }
  return result;
}

}  // namespace bulkhead
