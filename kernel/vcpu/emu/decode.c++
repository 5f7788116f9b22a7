// The software CPU's decoder and block cache: guest code decoded by Zydis into Insn records
// (decoded.h), a block at a time, cached by address and checked against code versions.
#include "kernel/vcpu/emu/cpu.h"

#include <algorithm>
#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

namespace {

constexpr unsigned MAX_BLOCK_INSNS = 64;
constexpr uint64_t PAGE = 0x1000;

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

// --- Blocks and the run loop --------------------------------------------------------------

namespace {

size_t footprint(const Block& block) {
  return sizeof(Block) + block.insns.capacity() * sizeof(Insn) + block.bytes.capacity();
}

}  // namespace

void Cpu::flushCode() {
  blocks.clear();
  std::fill_n(blockCache.get(), BLOCK_CACHE_SIZE, BlockCacheEntry{});
  ++linkEpoch;  // every link named a freed block
  cachedCodeBytes = 0;
  ++codeFlushes;
}

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
  fresh->insns.shrink_to_fit();
  fresh->bytes.assign(code, code + offset);
  // Links to a block this one replaces must not be followed (they are checked by epoch).
  if (auto replaced = blocks.find(key); replaced != blocks.end()) {
    ++linkEpoch;
    cachedCodeBytes -= footprint(*replaced->second);
    blocks.erase(replaced);
  }
  if (cachedCodeBytes + footprint(*fresh) > CODE_CACHE_BYTES) flushCode();
  cachedCodeBytes += footprint(*fresh);
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

}  // namespace bulkhead::emu
