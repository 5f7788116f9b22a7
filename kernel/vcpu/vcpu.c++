#include "kernel/vcpu/vcpu.h"

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/guestview/disassembler.h"
#include "kernel/x86/page-walk.h"

namespace bulkhead {

std::string describeLocation(const ArchState& registers, GuestMemory& memory) {
  CodeWidth width = registers.cs.longMode ? CodeWidth::BITS64
                    : registers.cs.big    ? CodeWidth::BITS32
                                          : CodeWidth::BITS16;
  const char* widthName = width == CodeWidth::BITS64   ? "64-bit"
                          : width == CodeWidth::BITS32 ? "32-bit"
                                                       : "16-bit";
  std::string where =
      absl::StrFormat("RIP %04x:%#x (%s)", registers.cs.selector, registers.rip, widthName);
  uint64_t linear = registers.cs.base + registers.rip;
  if (width != CodeWidth::BITS64) linear &= 0xffffffff;
  PagingRegisters paging{registers.cr0, registers.cr3, registers.cr4, registers.efer};
  PageWalk walk = walkPages(paging, linear, [&](uint64_t address, unsigned bytes, uint64_t& value) {
    const uint8_t* entry = memory.span(address, bytes);
    if (entry == nullptr) return false;
    value = 0;
    memcpy(&value, entry, bytes);
    return true;
  });
  if (!walk.mapped) return where + ", instruction not mapped";
  uint8_t bytes[15];
  size_t length = sizeof(bytes);
  // Stop at the end of the page so a fetch never crosses into an unmapped one.
  size_t toPageEnd = 0x1000 - (walk.physical & 0xfff);
  if (toPageEnd < length) length = toPageEnd;
  const uint8_t* code = memory.span(walk.physical, length);
  if (code == nullptr) return where + ", instruction outside RAM";
  memcpy(bytes, code, length);
  Disassembly disassembly = disassemble(width, registers.rip, kj::arrayPtr(bytes, length));
  size_t shown = disassembly.valid ? disassembly.length : length;
  return absl::StrFormat("%s: %s [%s]", where, disassembly.text,
                         hexBytes(kj::arrayPtr(bytes, shown)));
}

absl::Status Vcpu::setBootState(const BootState& boot) {
  absl::StatusOr<ArchState> state = getState();
  if (!state.ok()) return state.status();
  applyBootState(boot, *state);
  return setState(*state);
}

std::string Vcpu::describeLocation(GuestMemory& memory) {
  absl::StatusOr<ArchState> registers = getState();
  if (!registers.ok()) {
    return absl::StrFormat("(registers unreadable: %s)", registers.status().message());
  }
  return bulkhead::describeLocation(*registers, memory);
}

std::string describeExit(const VcpuExit& exit) {
  struct Describe {
    std::string operator()(const vcpu_exit::Kicked&) { return "kicked"; }
    std::string operator()(const vcpu_exit::Debug&) { return "debug"; }
    std::string operator()(const vcpu_exit::Halted&) { return "hlt"; }
    std::string operator()(const vcpu_exit::Shutdown&) { return "shutdown"; }
    std::string operator()(const vcpu_exit::PowerOff&) { return "power-off"; }
    std::string operator()(const vcpu_exit::Reset&) { return "reset"; }
    std::string operator()(const vcpu_exit::Failure& failure) {
      return (failure.host ? "host-failure: " : "failure: ") + failure.what;
    }
  };
  return std::visit(Describe{}, exit);
}

}  // namespace bulkhead
