#include "kernel/guestview/inspect.h"

#include <cpuid.h>

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/guestview/disassembler.h"

namespace bulkhead {

namespace {

unsigned hostPhysicalBits() {
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid(0x80000008, &eax, &ebx, &ecx, &edx)) return eax & 0xff;
  return 36;
}

std::string segment(const char* name, const SegmentState& s) {
  return absl::StrFormat("%-3s %04x base %016x limit %08x type %x dpl %u%s%s%s\n", name, s.selector,
                         s.base, s.limit, s.type, s.dpl, s.present ? " P" : "",
                         s.longMode ? " L" : "", s.big ? " D/B" : "");
}

}  // namespace

GuestInspector::GuestInspector(const ArchState& vcpu, GuestMemory& memory)
    : vcpu(vcpu), ram(memory) {}

PagingRegisters GuestInspector::paging() const {
  return {vcpu.cr0, vcpu.cr3, vcpu.cr4, vcpu.efer, hostPhysicalBits()};
}

bool GuestInspector::readLinear(uint64_t address, unsigned bytes, uint8_t* out) const {
  PhysicalReader physical = [this](uint64_t at, unsigned size, uint64_t& value) {
    value = 0;
    return ram.read(at, kj::arrayPtr(reinterpret_cast<uint8_t*>(&value), size));
  };
  // Byte by byte across pages: each page may map anywhere.
  for (unsigned i = 0; i < bytes; ++i) {
    PageWalk walk = walkPages(paging(), address + i, physical);
    if (!walk.mapped || !ram.read(walk.physical, kj::arrayPtr(out + i, 1))) return false;
  }
  return true;
}

std::string GuestInspector::registers() const {
  static const char* const NAMES[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                        "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
  std::string out;
  for (int i = 0; i < 16; ++i) {
    absl::StrAppendFormat(&out, "%-3s %016x%s", NAMES[i], vcpu.gpr[i], i % 4 == 3 ? "\n" : "  ");
  }
  absl::StrAppendFormat(&out, "rip %016x  rflags %08x\n", vcpu.rip, vcpu.rflags);
  absl::StrAppendFormat(&out, "cr0 %08x  cr2 %016x  cr3 %016x  cr4 %08x  efer %x\n", vcpu.cr0,
                        vcpu.cr2, vcpu.cr3, vcpu.cr4, vcpu.efer);
  for (auto [name, s] : {std::pair{"cs", &vcpu.cs},
                         {"ds", &vcpu.ds},
                         {"es", &vcpu.es},
                         {"fs", &vcpu.fs},
                         {"gs", &vcpu.gs},
                         {"ss", &vcpu.ss},
                         {"tr", &vcpu.tr},
                         {"ldt", &vcpu.ldt}}) {
    out += segment(name, *s);
  }
  absl::StrAppendFormat(&out, "gdt base %016x limit %04x\nidt base %016x limit %04x\n",
                        vcpu.gdtBase, vcpu.gdtLimit, vcpu.idtBase, vcpu.idtLimit);
  absl::StrAppendFormat(&out, "paging: %s\n", pagingModeName(pagingMode(paging())));
  return out;
}

std::string GuestInspector::walk(uint64_t linear) const {
  PhysicalReader physical = [this](uint64_t at, unsigned size, uint64_t& value) {
    value = 0;
    return ram.read(at, kj::arrayPtr(reinterpret_cast<uint8_t*>(&value), size));
  };
  PageWalk walk = walkPages(paging(), linear, physical);
  std::string out = absl::StrFormat("linear %#x (%s)\n", linear, pagingModeName(walk.mode));
  for (const WalkStep& step : walk.steps) {
    absl::StrAppendFormat(&out, "  %-5s at %#x = %016x\n", step.name, step.entryAddress,
                          step.entry);
  }
  if (!walk.mapped) return out + "  fault: " + describeWalkFault(walk, linear) + "\n";
  absl::StrAppendFormat(&out, "  -> physical %#x, page %s, %s %s %s%s%s\n", walk.physical,
                        walk.pageSize == 0           ? "none"
                        : walk.pageSize >= (1 << 30) ? "1G"
                        : walk.pageSize >= (4 << 20) ? "4M"
                        : walk.pageSize >= (2 << 20) ? "2M"
                                                     : "4K",
                        walk.writable ? "writable" : "read-only", walk.user ? "user" : "supervisor",
                        walk.executable ? "executable" : "no-execute",
                        walk.accessed ? " accessed" : "", walk.dirty ? " dirty" : "");
  return out;
}

absl::StatusOr<std::string> GuestInspector::table(TableKind kind) const {
  bool ia32e = vcpu.efer & x86::EFER_LMA;
  uint64_t base = kind == TableKind::GDT   ? vcpu.gdtBase
                  : kind == TableKind::IDT ? vcpu.idtBase
                                           : vcpu.ldt.base;
  uint32_t limit = kind == TableKind::GDT   ? vcpu.gdtLimit
                   : kind == TableKind::IDT ? vcpu.idtLimit
                                            : vcpu.ldt.limit;
  if (kind == TableKind::LDT && (vcpu.ldt.selector == 0 || !vcpu.ldt.present)) {
    return std::string("no LDT loaded\n");
  }
  LinearReader read = [this](uint64_t address, unsigned bytes, uint8_t* out) {
    return readLinear(address, bytes, out);
  };
  std::string out;
  for (const Descriptor& d : decodeTable(kind, base, limit, ia32e, read)) {
    out += describe(kind, d) + "\n";
  }
  return out;
}

std::string GuestInspector::disassemble(uint64_t linear, unsigned count) const {
  CodeWidth width = vcpu.cs.longMode ? CodeWidth::BITS64
                    : vcpu.cs.big    ? CodeWidth::BITS32
                                     : CodeWidth::BITS16;
  std::string out;
  uint64_t at = linear;
  for (unsigned i = 0; i < count && i < 256; ++i) {
    uint8_t bytes[15];
    unsigned have = 0;
    while (have < sizeof(bytes) && readLinear(at + have, 1, bytes + have)) ++have;
    if (have == 0) {
      absl::StrAppendFormat(&out, "%016x  (not mapped)\n", at);
      break;
    }
    Disassembly d = bulkhead::disassemble(width, at, kj::arrayPtr(bytes, have));
    unsigned length = d.valid ? d.length : 1;
    absl::StrAppendFormat(&out, "%016x  %-30s %s\n", at, hexBytes(kj::arrayPtr(bytes, length)),
                          d.text);
    at += length;
  }
  return out;
}

absl::StatusOr<std::string> GuestInspector::memory(uint64_t address, uint32_t length,
                                                   bool physical) const {
  if (length > 65536) return absl::InvalidArgumentError("at most 64 KiB at a time");
  std::string bytes(length, '\0');
  auto* out = reinterpret_cast<uint8_t*>(bytes.data());
  bool ok =
      physical ? ram.read(address, kj::arrayPtr(out, length)) : readLinear(address, length, out);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrFormat("%#x+%#x is not all %s", address, length,
                                                      physical ? "guest RAM" : "mapped"));
  }
  return bytes;
}

}  // namespace bulkhead
