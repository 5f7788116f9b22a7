#include "kernel/guestview/descriptors.h"

#include "kernel/x86/descriptor.h"

#include <cstring>

#include <absl/strings/str_format.h>

namespace bulkhead {

namespace {

uint64_t field(uint64_t value, unsigned low, unsigned count) {
  return (value >> low) & ((uint64_t{1} << count) - 1);
}

void decodeSegment(Descriptor& d) {
  uint64_t low = d.raw[0];
  d.base = x86::descriptorBase(low);
  d.limit = x86::descriptorLimit(low);
  bool code = d.type & 8;
  bool longMode = field(low, 53, 1);
  bool big = field(low, 54, 1);
  d.kind = code ? "code" : "data";
  d.width = code && longMode ? 64 : big ? 32 : 16;
  if (code) {
    d.attributes = (d.type & 2) ? "execute/read" : "execute-only";
    if (d.type & 4) d.attributes += ", conforming";
  } else {
    d.attributes = (d.type & 2) ? "read/write" : "read-only";
    if (d.type & 4) d.attributes += ", expand-down";
  }
  if (d.type & 1) d.attributes += ", accessed";
}

void decodeSystem(Descriptor& d, bool ia32e) {
  uint64_t low = d.raw[0];
  d.base = x86::descriptorBase(low);
  if (ia32e) d.base |= field(d.raw[1], 0, 32) << 32;
  d.limit = x86::descriptorLimit(low);
}

void decodeGate(Descriptor& d, bool ia32e) {
  uint64_t low = d.raw[0];
  d.targetSelector = field(low, 16, 16);
  d.offset = field(low, 0, 16) | field(low, 48, 16) << 16;
  if (ia32e) d.offset |= field(d.raw[1], 0, 32) << 32;
  if (ia32e && d.kind != "call gate") d.ist = field(low, 32, 3);
  if (!ia32e && d.kind == "call gate") d.parameters = field(low, 32, 5);
}

// Names the system type (SDM Vol. 3, table 3-2): legacy and IA-32e meanings differ.
void classifySystem(Descriptor& d, bool ia32e) {
  struct Type {
    const char* kind;
    unsigned width;
    const char* attributes;
  };
  static const Type LEGACY[16] = {
      {"reserved", 0, ""},        {"tss", 16, "available"}, {"ldt", 0, ""},
      {"tss", 16, "busy"},        {"call gate", 16, ""},    {"task gate", 0, ""},
      {"interrupt gate", 16, ""}, {"trap gate", 16, ""},    {"reserved", 0, ""},
      {"tss", 32, "available"},   {"reserved", 0, ""},      {"tss", 32, "busy"},
      {"call gate", 32, ""},      {"reserved", 0, ""},      {"interrupt gate", 32, ""},
      {"trap gate", 32, ""},
  };
  static const Type LONG[16] = {
      {"reserved", 0, ""},      {"reserved", 0, ""}, {"ldt", 0, ""},
      {"reserved", 0, ""},      {"reserved", 0, ""}, {"reserved", 0, ""},
      {"reserved", 0, ""},      {"reserved", 0, ""}, {"reserved", 0, ""},
      {"tss", 64, "available"}, {"reserved", 0, ""}, {"tss", 64, "busy"},
      {"call gate", 64, ""},    {"reserved", 0, ""}, {"interrupt gate", 64, ""},
      {"trap gate", 64, ""},
  };
  const Type& t = (ia32e ? LONG : LEGACY)[d.type];
  d.kind = t.kind;
  d.width = t.width;
  d.attributes = t.attributes;
}

}  // namespace

std::vector<Descriptor> decodeTable(TableKind table, uint64_t base, uint32_t limit, bool ia32e,
                                    const LinearReader& read) {
  std::vector<Descriptor> out;
  uint64_t size = uint64_t{limit} + 1;
  uint64_t maxEntries = table == TableKind::IDT ? 256 : 8192;
  uint64_t offset = table == TableKind::IDT ? 0 : 8;  // GDT/LDT entry 0 is the null selector
  if (table == TableKind::GDT) {
    Descriptor null;
    null.kind = "null";
    out.push_back(null);
  }
  while (offset + 8 <= size && out.size() < maxEntries) {
    Descriptor d;
    d.index = table == TableKind::IDT ? offset / (ia32e ? 16 : 8) : offset / 8;
    d.selector = table == TableKind::IDT ? d.index : offset;
    uint8_t bytes[16];
    if (!read(base + offset, 8, bytes)) break;
    memcpy(&d.raw[0], bytes, 8);
    d.present = field(d.raw[0], 47, 1);
    d.dpl = field(d.raw[0], 45, 2);
    d.system = !field(d.raw[0], 44, 1);
    d.type = field(d.raw[0], 40, 4);
    bool wide = ia32e && (d.system || table == TableKind::IDT);
    if (wide) {
      d.bytes = 16;
      if (offset + 16 > size || !read(base + offset + 8, 8, bytes + 8)) break;
      memcpy(&d.raw[1], bytes + 8, 8);
    }
    if (d.raw[0] == 0 && d.raw[1] == 0) {
      d.kind = "null";
    } else if (!d.system) {
      if (table == TableKind::IDT) {
        d.kind = "invalid";  // the IDT holds only gates
      } else {
        decodeSegment(d);
      }
    } else {
      classifySystem(d, ia32e);
      bool idtGate = d.kind == "interrupt gate" || d.kind == "trap gate" || d.kind == "task gate";
      if (table == TableKind::IDT && !idtGate) {
        d.kind = "invalid";  // SDM 6.11: the IDT holds interrupt, trap and (legacy) task gates
      } else if (d.kind == "tss" || d.kind == "ldt") {
        decodeSystem(d, ia32e);
      } else if (d.kind != "reserved") {
        decodeGate(d, ia32e);
        if (d.kind == "task gate") d.targetSelector = field(d.raw[0], 16, 16);
      }
    }
    out.push_back(d);
    offset += d.bytes;
  }
  return out;
}

std::string describe(TableKind table, const Descriptor& d) {
  std::string where = table == TableKind::IDT ? absl::StrFormat("vector 0x%02x", d.selector)
                                              : absl::StrFormat("0x%04x", d.selector);
  if (d.kind == "null") return where + " null";
  std::string text = where + " " + d.kind;
  if (d.width != 0) absl::StrAppendFormat(&text, " %u-bit", d.width);
  if (!d.attributes.empty()) text += " " + d.attributes;
  if (d.kind == "code" || d.kind == "data" || d.kind == "tss" || d.kind == "ldt") {
    absl::StrAppendFormat(&text, " base 0x%x limit 0x%x", d.base, d.limit);
  } else if (d.kind == "task gate") {
    absl::StrAppendFormat(&text, " tss 0x%04x", d.targetSelector);
  } else if (d.kind.find("gate") != std::string::npos) {
    absl::StrAppendFormat(&text, " -> 0x%04x:0x%x", d.targetSelector, d.offset);
    if (d.ist != 0) absl::StrAppendFormat(&text, " ist %u", d.ist);
    if (d.parameters != 0) absl::StrAppendFormat(&text, " %u parameters", d.parameters);
  }
  absl::StrAppendFormat(&text, " DPL %u %s", d.dpl, d.present ? "present" : "not present");
  return text;
}

}  // namespace bulkhead
