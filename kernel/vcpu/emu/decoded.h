// The software CPU's decoded form of an instruction (compact, for the block cache), and the
// register numbering its operands use. Internal to kernel/vcpu/emu.
#pragma once

#include <Zydis/Zydis.h>

#include <cstdint>
#include <vector>

namespace bulkhead::emu {

// Register ids: 0-15 general registers (the width comes from the operand), 16-19 AH CH DH BH,
// 32-37 segment registers, 40-55 CR0-CR15, 56-63 DR0-DR7, 64-79 XMM0-XMM15, 80-87 MM0-MM7,
// 96 the instruction pointer (RIP-relative addressing), 100-107 ST(0)-ST(7).
enum : uint8_t {
  REG_HIGH8 = 16,
  REG_SEGMENT = 32,
  REG_CR = 40,
  REG_DR = 56,
  REG_XMM = 64,
  REG_MMX = 80,
  REG_IP = 96,
  REG_X87 = 100,
  REG_UNMODELED = 0xfe,  // a register the interpreter does not model
  REG_NONE = 0xff,
};

enum class OperandKind : uint8_t { NONE, REG, MEM, IMM, PTR };

struct Operand {
  OperandKind kind = OperandKind::NONE;
  uint8_t size = 0;  // bytes (a MEM operand of LEA: the address size)
  uint8_t reg = REG_NONE;
  uint8_t segment = 0;  // MEM: SegmentIndex
  uint8_t base = REG_NONE, index = REG_NONE, scale = 0;
  bool agen = false;      // MEM: only the address is used (LEA)
  int64_t value = 0;      // MEM: displacement; IMM: the immediate; PTR: offset
  uint16_t selector = 0;  // PTR
};

enum Prefix : uint8_t {
  PREFIX_REP = 1,  // REP / REPE
  PREFIX_REPNE = 2,
  PREFIX_LOCK = 4,
};

class Cpu;
struct Insn;
// A specialised handler for one instruction form (fast.c++); runs after RIP moved past it.
using FastHandler = void (*)(Cpu&, const Insn&);

struct Insn {
  ZydisMnemonic mnemonic;
  uint8_t length;
  uint8_t operandSize;  // bytes: 2, 4 or 8
  uint8_t addressSize;  // bytes
  uint8_t prefixes;
  uint8_t operandCount;
  bool relative;   // a branch whose immediate is relative to the next instruction
  bool far;        // a far JMP, CALL or RET
  bool unmodeled;  // names a register the interpreter does not model (decided once, at decode)
  // x87 (opcodes D8-DF) and MMX instructions run on the host's FPU (x87.h): which unit, and the
  // encoding that needs: the last opcode byte and the ModRM byte.
  enum class Unit : uint8_t { NONE, X87, MMX } unit;
  uint8_t opcode, modrm;
  Operand op[4];
  uint16_t end;  // the offset of the next instruction from the block's first byte
  // fast.c++'s handler for this form, or nullptr: the generic interpreter (Cpu::execute).
  FastHandler fast = nullptr;
  // Its step in the block's chain: sets RIP, runs it (fast or generic) and goes on to the next.
  FastHandler step = nullptr;
};

// Sets `insn`'s fast.c++ handler and step for `modeKey` (Cpu's: 0 16-bit, 1 32-bit, 2 64-bit);
// without `fastPath`, the generic interpreter's step.
void chooseHandlers(Insn& insn, uint32_t modeKey, bool fastPath);
// The step of the marker that follows every block's last instruction (it returns).
FastHandler endOfBlockStep();

// The condition of a Jcc, SETcc or CMOVcc, numbered as the SDM's tttn encoding; -1 for none.
int conditionOf(ZydisMnemonic mnemonic);

struct Block {
  uint64_t physical;  // of the first byte
  uint64_t linear;    // where it was decoded from (instruction pointers)
  uint32_t modeKey;
  uint64_t checkedEpoch = 0;              // the Cpu's codeEpoch when `bytes` last matched RAM
  const uint64_t* pageVersion = nullptr;  // the version of its page (Cpu::codeVersions)
  uint64_t checkedVersion = 0;            // and what it was then
  std::vector<uint8_t> bytes;             // what it was decoded from, to detect changed code
  std::vector<Insn> insns;    // and after them one more, the end marker (endOfBlockStep())
  uint32_t instructions = 0;  // insns.size() - 1, kept for the chain (no division)
  size_t count() const { return instructions; }
  // Where execution went after this block: a successor found without a lookup, followed at the
  // same RIP while the Cpu's linkEpoch is still `epoch` (no code check was due, no block was
  // freed, no mapping or CS changed since) and nothing was stored into the successor's page.
  struct Link {
    uint64_t rip = ~0ull;
    uint64_t epoch = 0;
    Block* block = nullptr;
  };
  static constexpr unsigned LINKS = 2;
  Link links[LINKS];
  uint8_t nextLink = 0;
  // The successor a current link names for `rip` (`epoch`: the Cpu's linkEpoch), or nullptr.
  Block* follow(uint64_t rip, uint64_t epoch) const {
    for (const Link& link : links) {
      if (link.rip == rip && link.epoch == epoch &&
          *link.block->pageVersion == link.block->checkedVersion) {
        return link.block;
      }
    }
    return nullptr;
  }
};

}  // namespace bulkhead::emu
