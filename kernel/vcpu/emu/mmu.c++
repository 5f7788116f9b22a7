// The software CPU's memory path: segmentation, paging (through the x86 layer's walker) and the
// TLB, with per-page code versions so that stores to code are seen.
#include "kernel/vcpu/emu/cpu.h"

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"
#include "kernel/x86/page-walk.h"

namespace bulkhead::emu {

namespace {

constexpr uint64_t PAGE = 0x1000;

// MAXPHYADDR, as CPUID 0x80000008 reports it (emuSupportedCpuid).
constexpr unsigned MAX_PHYSICAL_BITS = 40;

}  // namespace

// --- Memory -------------------------------------------------------------------------------

uint64_t Cpu::linearAddress(SegmentIndex index, uint64_t offset, unsigned size, bool write) {
  const SegmentState& segment = s.segment[index];
  uint8_t vector = index == SS ? 12 : 13;
  if (modeKey == 2) {
    uint64_t linear = offset + ((index == FS || index == GS) ? segment.base : 0);
    if (!canonical(linear)) throw GuestFault{vector, true, 0};
    return linear;
  }
  if (s.cr0 & CR0_PE) {
    if (!segment.present) throw GuestFault{vector, true, 0};
    bool code = segment.type & 8;
    if (write && (code || !(segment.type & 2))) throw GuestFault{vector, true, 0};
    bool expandDown = !code && (segment.type & 4);
    if (expandDown) {
      uint64_t top = segment.big ? 0xffffffff : 0xffff;
      if (offset <= segment.limit || offset + size - 1 > top) throw GuestFault{vector, true, 0};
    } else if (offset + size - 1 > segment.limit) {
      throw GuestFault{vector, true, 0};
    }
  } else if (offset + size - 1 > segment.limit) {
    throw GuestFault{vector, true, 0};
  }
  return (segment.base + offset) & 0xffffffff;
}

void Cpu::flushTlb() {
  recheckCode();
  for (auto& user : tlb) {
    for (auto& kind : user) {
      for (TlbEntry& entry : kind) entry.tag = ~0ull;
    }
  }
}

void Cpu::invalidatePage(uint64_t linear) {
  recheckCode();
  uint64_t tag = linear >> 12;
  for (auto& user : tlb) {
    for (auto& kind : user) {
      TlbEntry& entry = kind[tag % TLB_SIZE];
      if (entry.tag == tag) entry.tag = ~0ull;
    }
  }
}

class Cpu::GuestPageTables final : public PageTables {
 public:
  explicit GuestPageTables(Cpu& cpu) : cpu(cpu) {}
  bool read(uint64_t address, unsigned bytes, uint64_t& entry) override {
    const uint8_t* host = cpu.bus.page(address & ~(PAGE - 1), false);
    if (host == nullptr) return false;
    entry = 0;
    memcpy(&entry, host + (address & (PAGE - 1)), bytes);
    return true;
  }
  void setBits(uint64_t address, unsigned bytes, uint64_t bits) override {
    uint8_t* host = cpu.bus.page(address & ~(PAGE - 1), true);
    if (host == nullptr) return;  // a table in ROM keeps its bits
    uint64_t entry = 0;
    memcpy(&entry, host + (address & (PAGE - 1)), bytes);
    entry |= bits;
    memcpy(host + (address & (PAGE - 1)), &entry, bytes);
    cpu.recheckCode();  // a page table could share a page with code
  }

 private:
  Cpu& cpu;
};

uint64_t Cpu::translate(uint64_t linear, bool write, bool user, bool execute) {
  unsigned kind = execute ? 2 : write ? 1 : 0;
  TlbEntry& cached = tlb[user][kind][(linear >> 12) % TLB_SIZE];
  if (cached.tag == linear >> 12) return cached.physical | (linear & 0xfff);

  uint64_t physical;
  if (!(s.cr0 & CR0_PG)) {
    physical = linear & (s.efer & EFER_LMA ? ~0ull : 0xffffffffull);
    physical &= ~0xfffull;
  } else {
    PagingRegisters paging{s.cr0, s.cr3, s.cr4, s.efer, MAX_PHYSICAL_BITS};
    PageAccess access{write, user, execute};
    GuestPageTables tables(*this);
    PageWalk walk = walkPageTables(paging, linear, tables, &access);
    if (!walk.mapped) {
      if (walk.fault == WalkFault::NON_CANONICAL) throw GuestFault{13, true, 0};
      s.cr2 = linear;
      throw GuestFault{14, true, walk.errorCode};
    }
    physical = walk.physical & ~0xfffull;
  }
  cached.tag = linear >> 12;
  cached.physical = physical;
  cached.host = bus.page(physical, write);
  cached.codeVersion = nullptr;
  if (write) {
    auto version = codeVersions.find(physical >> 12);
    if (version != codeVersions.end()) cached.codeVersion = &version->second;
  }
  return physical | (linear & 0xfff);
}

uint8_t* Cpu::hostAddress(uint64_t linear, unsigned size, bool write, bool user) {
  if ((linear & 0xfff) + size > PAGE) return nullptr;  // crosses a page: the slow path
  unsigned kind = write ? 1 : 0;
  TlbEntry& entry = tlb[user][kind][(linear >> 12) % TLB_SIZE];
  if (entry.tag != linear >> 12) {
    translate(linear, write, user, false);
  }
  if (entry.codeVersion != nullptr) ++*entry.codeVersion;
  return entry.host == nullptr ? nullptr : entry.host + (linear & 0xfff);
}

uint64_t Cpu::readLinear(uint64_t linear, unsigned size, bool user) {
  if (uint8_t* host = hostAddress(linear, size, false, user)) {
    uint64_t value = 0;
    memcpy(&value, host, size);
    return value;
  }
  if ((linear & 0xfff) + size > PAGE) {
    uint64_t value = 0;
    for (unsigned i = 0; i < size; ++i) value |= readLinear(linear + i, 1, user) << (8 * i);
    return value;
  }
  uint64_t physical = translate(linear, false, user, false);
  recheckCode();
  // Only the bytes read: whatever answers (a device, through the bus) cannot widen a load.
  return bus.mmioRead(physical, size) & mask(size);
}

void Cpu::writeLinear(uint64_t linear, unsigned size, uint64_t value, bool user) {
  if (uint8_t* host = hostAddress(linear, size, true, user)) {
    memcpy(host, &value, size);
    return;
  }
  if ((linear & 0xfff) + size > PAGE) {
    // Both pages must be writable before either is written.
    translate(linear, true, user, false);
    translate(linear + size - 1, true, user, false);
    for (unsigned i = 0; i < size; ++i) writeLinear(linear + i, 1, value >> (8 * i), user);
    return;
  }
  uint64_t physical = translate(linear, true, user, false);
  recheckCode();
  bus.mmioWrite(physical, size, value);
}

uint64_t Cpu::read(SegmentIndex segment, uint64_t offset, unsigned size) {
  return readLinear(linearAddress(segment, offset, size, false), size, cpl() == 3);
}

void Cpu::write(SegmentIndex segment, uint64_t offset, unsigned size, uint64_t value) {
  writeLinear(linearAddress(segment, offset, size, true), size, value, cpl() == 3);
}

}  // namespace bulkhead::emu
