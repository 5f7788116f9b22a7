// Decodes the guest's descriptor tables (GDT, LDT, IDT) from their raw bytes: segment
// descriptors (SDM Vol. 3, 3.4.5), system descriptors and gates (3.5, 5.8.3, 6.11), and their
// 16-byte IA-32e forms (6.14.1, 7.2.3). For diagnostics: nothing here is trusted or acted on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bulkhead {

struct Descriptor {
  uint32_t index = 0;
  uint16_t selector = 0;  // index * 8 (GDT/LDT) or the vector (IDT)
  unsigned bytes = 8;     // 16 for IA-32e system descriptors and gates
  uint64_t raw[2] = {0, 0};
  bool present = false;
  unsigned dpl = 0;
  bool system = false;  // S clear
  unsigned type = 0;    // the 4-bit type field
  std::string kind;     // "code", "data", "tss", "ldt", "call gate", "interrupt gate", ...
  unsigned width = 0;   // 16, 32 or 64 (segments: operand size; gates and TSS: their form)
  // Segments, TSS and LDT.
  uint64_t base = 0;
  uint64_t limit = 0;      // in bytes, after granularity
  std::string attributes;  // "execute/read, accessed", "read/write, expand-down", "busy"
  // Gates.
  uint16_t targetSelector = 0;
  uint64_t offset = 0;
  unsigned ist = 0;         // IA-32e interrupt and trap gates
  unsigned parameters = 0;  // 32-bit call gates
};

// Reads `bytes` bytes at a guest linear address; false when unmapped or not RAM.
using LinearReader = std::function<bool(uint64_t address, unsigned bytes, uint8_t* out)>;

enum class TableKind { GDT, LDT, IDT };

// The table at linear `base` with byte limit `limit` (as in GDTR/IDTR); `ia32e` when the CPU
// is in IA-32e mode (EFER.LMA), which widens system descriptors and gates to 16 bytes. An entry
// that cannot be read ends the list.
std::vector<Descriptor> decodeTable(TableKind table, uint64_t base, uint32_t limit, bool ia32e,
                                    const LinearReader& read);

// One entry in one line, e.g. "0x08 code 64-bit execute/read, accessed DPL 0 present".
std::string describe(TableKind table, const Descriptor& descriptor);

}  // namespace bulkhead
