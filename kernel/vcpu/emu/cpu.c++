// The software CPU's memory path (segmentation, paging, the TLB), its block cache and run loop.
#include "kernel/vcpu/emu/cpu.h"

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"
#include "kernel/x86/page-walk.h"

namespace bulkhead::emu {

namespace {

constexpr unsigned MAX_BLOCK_INSNS = 64;
constexpr uint64_t PAGE = 0x1000;

// MAXPHYADDR, as CPUID 0x80000008 reports it (emuSupportedCpuid).
constexpr unsigned MAX_PHYSICAL_BITS = 40;

uint8_t registerId(ZydisRegister reg) {
  if (reg == ZYDIS_REGISTER_NONE) return REG_NONE;
  if (reg >= ZYDIS_REGISTER_AL && reg <= ZYDIS_REGISTER_R15B) {
    unsigned i = reg - ZYDIS_REGISTER_AL;
    if (i < 4) return i;
    if (i < 8) return REG_HIGH8 + (i - 4);
    return i - 4;  // SPL BPL SIL DIL R8B-R15B
  }
  if (reg >= ZYDIS_REGISTER_AX && reg <= ZYDIS_REGISTER_R15W) return reg - ZYDIS_REGISTER_AX;
  if (reg >= ZYDIS_REGISTER_EAX && reg <= ZYDIS_REGISTER_R15D) return reg - ZYDIS_REGISTER_EAX;
  if (reg >= ZYDIS_REGISTER_RAX && reg <= ZYDIS_REGISTER_R15) return reg - ZYDIS_REGISTER_RAX;
  if (reg >= ZYDIS_REGISTER_ES && reg <= ZYDIS_REGISTER_GS) {
    return REG_SEGMENT + (reg - ZYDIS_REGISTER_ES);
  }
  if (reg >= ZYDIS_REGISTER_CR0 && reg <= ZYDIS_REGISTER_CR15)
    return REG_CR + (reg - ZYDIS_REGISTER_CR0);
  if (reg >= ZYDIS_REGISTER_DR0 && reg <= ZYDIS_REGISTER_DR7)
    return REG_DR + (reg - ZYDIS_REGISTER_DR0);
  if (reg >= ZYDIS_REGISTER_XMM0 && reg <= ZYDIS_REGISTER_XMM15) {
    return REG_XMM + (reg - ZYDIS_REGISTER_XMM0);
  }
  if (reg == ZYDIS_REGISTER_RIP || reg == ZYDIS_REGISTER_EIP || reg == ZYDIS_REGISTER_IP) {
    return REG_IP;
  }
  if (reg >= ZYDIS_REGISTER_MM0 && reg <= ZYDIS_REGISTER_MM7)
    return REG_MMX + (reg - ZYDIS_REGISTER_MM0);
  if (reg >= ZYDIS_REGISTER_ST0 && reg <= ZYDIS_REGISTER_ST7)
    return REG_X87 + (reg - ZYDIS_REGISTER_ST0);
  return REG_UNMODELED;  // execute() rejects the instruction
}

bool convert(const ZydisDecodedInstruction& in, const ZydisDecodedOperand* operands, Insn& out) {
  out.mnemonic = in.mnemonic;
  out.length = in.length;
  out.operandSize = in.operand_width / 8;
  out.addressSize = in.address_width / 8;
  out.prefixes = 0;
  if (in.attributes & (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE)) out.prefixes |= PREFIX_REP;
  if (in.attributes & ZYDIS_ATTRIB_HAS_REPNE) out.prefixes |= PREFIX_REPNE;
  if (in.attributes & ZYDIS_ATTRIB_HAS_LOCK) out.prefixes |= PREFIX_LOCK;
  out.relative = false;
  out.unmodeled = false;
  out.far = in.meta.branch_type == ZYDIS_BRANCH_TYPE_FAR;
  out.opcode = in.opcode;
  out.modrm =
      static_cast<uint8_t>((in.raw.modrm.mod << 6) | (in.raw.modrm.reg << 3) | in.raw.modrm.rm);
  out.unit = Insn::Unit::NONE;
  if (in.opcode_map == ZYDIS_OPCODE_MAP_DEFAULT && in.opcode >= 0xd8 && in.opcode <= 0xdf) {
    out.unit = Insn::Unit::X87;
  } else if (in.mnemonic == ZYDIS_MNEMONIC_EMMS) {
    out.unit = Insn::Unit::MMX;
  }
  out.operandCount = in.operand_count_visible > 4 ? 4 : in.operand_count_visible;
  // MASKMOVQ and MASKMOVDQU store to an implicit [rDI] (with its segment override): op[2].
  if (in.mnemonic == ZYDIS_MNEMONIC_MASKMOVQ || in.mnemonic == ZYDIS_MNEMONIC_MASKMOVDQU) {
    out.operandCount = 3;
  }
  for (unsigned i = 0; i < out.operandCount; ++i) {
    const ZydisDecodedOperand& z = operands[i];
    Operand& o = out.op[i];
    o = Operand{};
    o.size = z.size / 8;
    switch (z.type) {
      case ZYDIS_OPERAND_TYPE_REGISTER:
        o.kind = OperandKind::REG;
        o.reg = registerId(z.reg.value);
        if (o.reg == REG_UNMODELED) out.unmodeled = true;
        if (o.reg >= REG_MMX && o.reg < REG_MMX + 8) out.unit = Insn::Unit::MMX;
        break;
      case ZYDIS_OPERAND_TYPE_MEMORY:
        o.kind = OperandKind::MEM;
        o.segment = z.mem.segment >= ZYDIS_REGISTER_ES && z.mem.segment <= ZYDIS_REGISTER_GS
                        ? z.mem.segment - ZYDIS_REGISTER_ES
                        : DS;
        o.base = registerId(z.mem.base);
        o.index = registerId(z.mem.index);
        o.scale = z.mem.scale;
        o.value = z.mem.disp.value;
        o.agen = z.mem.type == ZYDIS_MEMOP_TYPE_AGEN;
        if (o.agen) o.size = out.addressSize;
        break;
      case ZYDIS_OPERAND_TYPE_IMMEDIATE:
        o.kind = OperandKind::IMM;
        o.value = z.imm.is_signed ? z.imm.value.s : static_cast<int64_t>(z.imm.value.u);
        // A sign-extended immediate (imm8 of ADD r32, imm8) counts at the operation's width.
        if (z.imm.is_signed && o.size < out.operandSize) o.size = out.operandSize;
        if (z.imm.is_relative) out.relative = true;
        break;
      case ZYDIS_OPERAND_TYPE_POINTER:
        o.kind = OperandKind::PTR;
        o.selector = z.ptr.segment;
        o.value = z.ptr.offset;
        break;
      default:
        return false;
    }
  }
  return true;
}

bool endsBlock(const ZydisDecodedInstruction& in) {
  switch (in.meta.category) {
    case ZYDIS_CATEGORY_UNCOND_BR:
    case ZYDIS_CATEGORY_COND_BR:
    case ZYDIS_CATEGORY_CALL:
    case ZYDIS_CATEGORY_RET:
    case ZYDIS_CATEGORY_INTERRUPT:
    case ZYDIS_CATEGORY_SYSCALL:
    case ZYDIS_CATEGORY_SYSRET:
    case ZYDIS_CATEGORY_SYSTEM:
      return true;
    default:
      return in.mnemonic == ZYDIS_MNEMONIC_HLT || in.mnemonic == ZYDIS_MNEMONIC_STI ||
             in.mnemonic == ZYDIS_MNEMONIC_POPF || in.mnemonic == ZYDIS_MNEMONIC_POPFD ||
             in.mnemonic == ZYDIS_MNEMONIC_POPFQ || in.mnemonic == ZYDIS_MNEMONIC_LOOP ||
             in.mnemonic == ZYDIS_MNEMONIC_LOOPE || in.mnemonic == ZYDIS_MNEMONIC_LOOPNE ||
             in.mnemonic == ZYDIS_MNEMONIC_JCXZ || in.mnemonic == ZYDIS_MNEMONIC_JECXZ ||
             in.mnemonic == ZYDIS_MNEMONIC_JRCXZ;
  }
}

// What follows a block's last instruction: its step returns (the chain's end).
Insn endMarker(size_t blockLength) {
  Insn marker{};
  marker.end = static_cast<uint16_t>(blockLength);
  marker.step = endOfBlockStep();
  return marker;
}

}  // namespace

Cpu::Cpu(CpuBus& bus, std::vector<CpuidEntry> cpuid) : bus(bus), cpuidTable(std::move(cpuid)) {
  reset();
}

void Cpu::reset() {
  s = CpuState{};
  shadow = false;
  nmiBlocked = false;
  flagsLazy = false;
  for (SegmentState& segment : s.segment) {
    segment = SegmentState{0, 0, 0xffff, 3, true, false, false, false, 0};
  }
  s.segment[CS].type = 0xb;
  s.ldtr = SegmentState{0, 0, 0xffff, 2, true, true, false, false, 0};
  s.tr = SegmentState{0, 0, 0xffff, 0xb, true, true, false, false, 0};
  stateChanged();
}

Cpu::~Cpu() = default;

void Cpu::stateChanged() {
  flushTlb();
  modeChanged();
}

void Cpu::modeChanged() {
  bool code64 = (s.efer & EFER_LMA) && s.segment[CS].longMode;
  modeKey = code64 ? 2 : s.segment[CS].big ? 1 : 0;
  privilegeTlb = &tlb[cpl() == 3];
  // Links hold for one privilege level, mode and CS base (an IRET to the same CS keeps them).
  uint64_t context = s.segment[CS].base ^ (static_cast<uint64_t>(modeKey) << 2) ^ cpl();
  if (context != linkContext) {
    linkContext = context;
    ++linkEpoch;
  }
  endBlock = true;
}

bool Cpu::interruptsEnabled() const { return (s.rflags & FLAG_IF) && !shadow; }

void Cpu::setDebug(bool step, std::vector<uint64_t> addresses) {
  singleStep = step;
  breakpoints = std::move(addresses);
  debugStop = false;
}

ArchState Cpu::archState() const {
  ArchState out;
  memcpy(out.gpr, s.gpr, sizeof(out.gpr));
  out.rip = s.rip;
  out.rflags = s.rflags;
  out.es = s.segment[ES];
  out.cs = s.segment[CS];
  out.ss = s.segment[SS];
  out.ds = s.segment[DS];
  out.fs = s.segment[FS];
  out.gs = s.segment[GS];
  out.tr = s.tr;
  out.ldt = s.ldtr;
  out.gdtBase = s.gdtBase;
  out.gdtLimit = s.gdtLimit;
  out.idtBase = s.idtBase;
  out.idtLimit = s.idtLimit;
  out.cr0 = s.cr0;
  out.cr2 = s.cr2;
  out.cr3 = s.cr3;
  out.cr4 = s.cr4;
  out.efer = s.efer;
  return out;
}

void Cpu::setArchState(const ArchState& in) {
  memcpy(s.gpr, in.gpr, sizeof(s.gpr));
  s.rip = in.rip;
  s.rflags = in.rflags;
  s.segment[ES] = in.es;
  s.segment[CS] = in.cs;
  s.segment[SS] = in.ss;
  s.segment[DS] = in.ds;
  s.segment[FS] = in.fs;
  s.segment[GS] = in.gs;
  s.tr = in.tr;
  s.ldtr = in.ldt;
  s.gdtBase = in.gdtBase;
  s.gdtLimit = in.gdtLimit;
  s.idtBase = in.idtBase;
  s.idtLimit = in.idtLimit;
  s.cr0 = in.cr0;
  s.cr2 = in.cr2;
  s.cr3 = in.cr3;
  s.cr4 = in.cr4;
  s.efer = in.efer;
  stateChanged();
}

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
  return bus.mmioRead(physical, size);
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

// --- Stack --------------------------------------------------------------------------------

unsigned Cpu::stackWidth() const {
  if (modeKey == 2) return 8;
  return s.segment[SS].big ? 4 : 2;
}

void Cpu::push(uint64_t value, unsigned size) {
  unsigned width = stackWidth();
  uint64_t rsp = s.gpr[4] - size;
  if (width == 2) rsp = (s.gpr[4] & ~0xffffull) | (rsp & 0xffff);
  if (width == 4) rsp &= 0xffffffff;
  uint64_t offset = width == 2 ? rsp & 0xffff : rsp;
  write(SS, offset, size, value);
  s.gpr[4] = rsp;
}

uint64_t Cpu::pop(unsigned size) {
  unsigned width = stackWidth();
  uint64_t offset = width == 2 ? s.gpr[4] & 0xffff : s.gpr[4];
  uint64_t value = read(SS, offset, size);
  uint64_t rsp = s.gpr[4] + size;
  if (width == 2) rsp = (s.gpr[4] & ~0xffffull) | (rsp & 0xffff);
  if (width == 4) rsp &= 0xffffffff;
  s.gpr[4] = rsp;
  return value;
}

// --- Blocks and the run loop --------------------------------------------------------------

Block* Cpu::blockAt(uint64_t rip) {
  uint64_t linear = modeKey == 2 ? rip : (s.segment[CS].base + rip) & 0xffffffff;
  if (modeKey == 2 && !canonical(linear)) throw GuestFault{13, true, 0};
  if (modeKey != 2 && rip > s.segment[CS].limit) throw GuestFault{13, true, 0};
  TlbEntry& fetch = tlb[cpl() == 3][2][(linear >> 12) % TLB_SIZE];
  if (fetch.tag != linear >> 12) translate(linear, false, cpl() == 3, true);
  uint64_t physical = fetch.physical | (linear & (PAGE - 1));
  uint64_t key = physical ^ (static_cast<uint64_t>(modeKey) << 62);
  BlockCacheEntry& slot = blockCache[(physical ^ (physical >> 16)) % BLOCK_CACHE_SIZE];
  Block* block = nullptr;
  if (slot.key == key) {
    block = slot.block;
    if (block->linear == linear && block->checkedEpoch == codeEpoch &&
        *block->pageVersion == block->checkedVersion) {
      return block;
    }
  } else {
    auto found = blocks.find(key);
    if (found != blocks.end()) block = found->second.get();
  }
  if (fetch.host == nullptr) {
    // Code outside RAM (MMIO): fetch through the bus, one instruction at a time, uncached.
    throw GuestFault{13, true, 0};
  }
  const uint8_t* code = fetch.host + (physical & (PAGE - 1));
  size_t available = PAGE - (physical & (PAGE - 1));
  if (block != nullptr && block->linear == linear &&
      memcmp(block->bytes.data(), code, block->bytes.size()) == 0) {
    block->checkedEpoch = codeEpoch;
    block->checkedVersion = *block->pageVersion;
    slot = {key, block};
    return block;
  }

  static const ZydisMachineMode modes[] = {
      ZYDIS_MACHINE_MODE_LEGACY_16, ZYDIS_MACHINE_MODE_LEGACY_32, ZYDIS_MACHINE_MODE_LONG_64};
  static const ZydisStackWidth widths[] = {ZYDIS_STACK_WIDTH_16, ZYDIS_STACK_WIDTH_32,
                                           ZYDIS_STACK_WIDTH_64};
  ZydisDecoder decoder;
  ZydisDecoderInit(&decoder, modes[modeKey], widths[modeKey]);
  auto fresh = std::make_unique<Block>();
  fresh->physical = physical;
  fresh->linear = linear;
  fresh->modeKey = modeKey;
  size_t offset = 0;
  ZydisDecodedInstruction instruction;
  ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
  while (fresh->insns.size() < MAX_BLOCK_INSNS) {
    ZyanStatus status =
        ZydisDecoderDecodeFull(&decoder, code + offset, available - offset, &instruction, operands);
    if (!ZYAN_SUCCESS(status)) {
      if (status == ZYDIS_STATUS_NO_MORE_DATA && fresh->insns.empty()) {
        // The first instruction crosses into the next page: fetch it through translation.
        uint8_t bytes[15];
        for (unsigned i = 0; i < sizeof(bytes); ++i) {
          bytes[i] = static_cast<uint8_t>(readLinear(linear + i, 1, cpl() == 3));
        }
        if (!ZYAN_SUCCESS(
                ZydisDecoderDecodeFull(&decoder, bytes, sizeof(bytes), &instruction, operands))) {
          throw GuestFault{6, false, 0};
        }
        scratch = std::make_unique<Block>();
        scratch->physical = physical;
        scratch->linear = linear;
        scratch->modeKey = modeKey;
        static const uint64_t unversioned = 0;  // never linked nor cached: no page to follow
        scratch->pageVersion = &unversioned;
        Insn insn;
        if (!convert(instruction, operands, insn)) throw GuestFault{6, false, 0};
        chooseHandlers(insn, modeKey, fastPath);
        insn.end = insn.length;
        scratch->insns.push_back(insn);
        scratch->insns.push_back(endMarker(insn.length));
        scratch->instructions = 1;
        return scratch.get();
      }
      if (fresh->insns.empty()) throw GuestFault{6, false, 0};
      break;
    }
    Insn insn;
    if (!convert(instruction, operands, insn)) {
      if (fresh->insns.empty()) throw GuestFault{6, false, 0};
      break;
    }
    chooseHandlers(insn, modeKey, fastPath);
    offset += instruction.length;
    insn.end = static_cast<uint16_t>(offset);
    fresh->insns.push_back(insn);
    if (endsBlock(instruction) || offset >= available) break;
  }
  fresh->instructions = static_cast<uint32_t>(fresh->insns.size());
  fresh->insns.push_back(endMarker(offset));
  fresh->bytes.assign(code, code + offset);
  // Links to a block this one replaces must not be followed (they are checked by epoch).
  if (blocks.contains(key)) ++linkEpoch;
  fresh->checkedEpoch = codeEpoch;
  auto [version, added] = codeVersions.try_emplace(physical >> 12, 0);
  fresh->pageVersion = &version->second;
  fresh->checkedVersion = version->second;
  if (added) {
    // Stores through entries made before this page held code must be counted from now on.
    for (auto& user : tlb) {
      for (TlbEntry& entry : user[1]) {
        if (entry.tag != ~0ull && entry.physical == (physical & ~(PAGE - 1))) {
          entry.codeVersion = &version->second;
        }
      }
    }
  }
  block = fresh.get();
  blocks[key] = std::move(fresh);
  slot = {key, block};
  return block;
}

StopReason Cpu::fail(const std::string& what) {
  failed = what;
  return StopReason::FAILED;
}

inline Block* Cpu::nextBlock(Block* previous) {
  if (previous != nullptr) {
    if (Block* next = previous->follow(s.rip, linkEpoch)) return next;
  }
  uint64_t epoch = linkEpoch;
  Block* block = blockAt(s.rip);
  // A changed epoch may mean blockAt() replaced (freed) `previous` itself.
  if (previous != nullptr && epoch == linkEpoch && block != scratch.get()) {
    // Replace a stale link first, else the oldest.
    Block::Link* slot = nullptr;
    for (Block::Link& link : previous->links) {
      if (link.epoch != linkEpoch) {
        slot = &link;
        break;
      }
    }
    if (slot == nullptr) slot = &previous->links[previous->nextLink++ % Block::LINKS];
    *slot = {s.rip, linkEpoch, block};
  }
  return block;
}

std::optional<StopReason> Cpu::runBlockDebugging(const Block& block) {
  uint64_t address = s.rip;
  blockRip = s.rip;  // fast handlers find RIP-relative operands and branch targets from it
  ripMask = modeKey == 1 ? 0xffffffff : ~0ull;
  for (size_t i = 0; i < block.count(); ++i) {
    const Insn& insn = block.insns[i];
    if (!breakpoints.empty() && !debugStop) {
      uint64_t linear = s.segment[CS].base + s.rip;
      for (uint64_t breakpoint : breakpoints) {
        if (breakpoint == linear) {
          debugStop = true;
          return StopReason::DEBUG;
        }
      }
    }
    debugStop = false;
    uint64_t start = s.rip;
    s.rip = address + insn.length;
    if (modeKey == 1) s.rip &= 0xffffffff;
    address += insn.length;
    try {
      if (insn.fast != nullptr) {
        insn.fast(*this, insn);
        settleFlags();
      } else if (!execute(insn) && !failed.empty()) {
        s.rip = start;
        return StopReason::FAILED;
      }
    } catch (const GuestFault&) {
      s.rip = start;
      throw;
    }
    ++retired;
    if (singleStep) return StopReason::DEBUG;
    if (s.rip != address || endBlock || s.halted) break;
  }
  return std::nullopt;
}

StopReason Cpu::run(uint64_t budget) {
  recheckCode();   // other vCPUs and devices' DMA may have written code since the last run
  failed.clear();  // a failure is this run's: the stops below look at it
  uint64_t end = retired + budget;
  bool debugging = singleStep || !breakpoints.empty();
  Block* previous = nullptr;  // the block that just ended at a branch or its last instruction
  while (retired < end) {
    if (stopRequested.load(std::memory_order_acquire)) {
      stopRequested.store(false, std::memory_order_relaxed);
      return StopReason::BUDGET;
    }
    try {
      if (nmiWaiting() && !shadow) {
        nmiPoke.store(false, std::memory_order_relaxed);
        nmiBlocked = true;
        s.halted = false;
        deliver(2, false, 0, false, s.rip);
      }
      if (!shadow && (s.rflags & FLAG_IF) && interruptPoke.load(std::memory_order_acquire)) {
        interruptPoke.store(false, std::memory_order_relaxed);
        int vector = bus.acknowledgeInterrupt();
        if (vector >= 0) {
          interruptPoke.store(true, std::memory_order_relaxed);  // look again for more
          s.halted = false;
          deliver(static_cast<uint8_t>(vector), false, 0, false, s.rip);
        }
      }
      shadow = false;
      if (s.halted) return StopReason::HALTED;
      Block* block = nextBlock(previous);
      previous = nullptr;
      endBlock = false;
      if (debugging) {
        if (std::optional<StopReason> stop = runBlockDebugging(*block)) return *stop;
      } else {
        // The block runs as a chain: each instruction's step calls the next one's, to the end
        // marker, a generic instruction that ends the block (stoppedAt), or a branch, whose
        // step may go on into the next block through a link (up to CHAINED_BLOCKS of them;
        // runningBlock is the one running).
        runningBlock = block;
        blockRip = s.rip;
        ripMask = modeKey == 1 ? 0xffffffff : ~0ull;
        blockFirst = block->insns.data();
        blockRetired = retired;
        stoppedAt = nullptr;
        faultedAt = nullptr;
        chainBudget = CHAINED_BLOCKS;
        try {
          blockFirst->step(*this, *blockFirst);
        } catch (const GuestFault&) {
          // The faulting instruction's step has put RIP back on it and said which it was.
          retired = blockRetired + (faultedAt - blockFirst);
          settleFlags();
          throw;
        }
        settleFlags();
        block = runningBlock;
        retired =
            blockRetired + (stoppedAt != nullptr ? stoppedAt - blockFirst + 1 : block->count());
        if (stoppedAt != nullptr && !failed.empty()) return StopReason::FAILED;
      }
      if (!endBlock && !s.halted && block != scratch.get()) previous = block;
    } catch (const GuestFault& fault) {
      previous = nullptr;
      try {
        deliverFault(fault);
      } catch (const GuestFault&) {
        return StopReason::SHUTDOWN;  // a fault while delivering a double fault
      }
    }
  }
  return StopReason::BUDGET;
}

}  // namespace bulkhead::emu
