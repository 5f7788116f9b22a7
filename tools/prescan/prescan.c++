#include "tools/prescan/prescan.h"

#include <Zydis/Zydis.h>

#include <algorithm>
#include <set>

namespace bulkhead {

namespace {

constexpr uint64_t PAGE = 4096;

bool hasRegisterOperandOfClass(const ZydisDecodedInstruction& instruction,
                               const ZydisDecodedOperand* operands, ZydisRegisterClass wanted,
                               bool asSource) {
  for (unsigned i = 0; i < instruction.operand_count_visible; ++i) {
    const ZydisDecodedOperand& operand = operands[i];
    if (operand.type != ZYDIS_OPERAND_TYPE_REGISTER) continue;
    if (ZydisRegisterGetClass(operand.reg.value) != wanted) continue;
    bool read = operand.actions & ZYDIS_OPERAND_ACTION_MASK_READ;
    if (!asSource || read) return true;
  }
  return false;
}

InstructionClass classify(const ZydisDecodedInstruction& instruction,
                          const ZydisDecodedOperand* operands) {
  switch (instruction.mnemonic) {
    // SDM Vol. 3, 5.9: privileged instructions (#GP at CPL > 0).
    case ZYDIS_MNEMONIC_LGDT:
    case ZYDIS_MNEMONIC_LIDT:
    case ZYDIS_MNEMONIC_LLDT:
    case ZYDIS_MNEMONIC_LTR:
    case ZYDIS_MNEMONIC_LMSW:
    case ZYDIS_MNEMONIC_CLTS:
    case ZYDIS_MNEMONIC_INVD:
    case ZYDIS_MNEMONIC_WBINVD:
    case ZYDIS_MNEMONIC_INVLPG:
    case ZYDIS_MNEMONIC_HLT:
    case ZYDIS_MNEMONIC_RDMSR:
    case ZYDIS_MNEMONIC_WRMSR:
    case ZYDIS_MNEMONIC_INVPCID:
    case ZYDIS_MNEMONIC_XSETBV:
    // Vol. 2: SWAPGS, SYSRET and SYSEXIT fault outside CPL 0.
    case ZYDIS_MNEMONIC_SWAPGS:
    case ZYDIS_MNEMONIC_SYSRET:
    case ZYDIS_MNEMONIC_SYSEXIT:
    // Vol. 1, 19.5.1: I/O-sensitive, fault when CPL > IOPL (as a deprivileged kernel runs).
    case ZYDIS_MNEMONIC_IN:
    case ZYDIS_MNEMONIC_OUT:
    case ZYDIS_MNEMONIC_INSB:
    case ZYDIS_MNEMONIC_INSW:
    case ZYDIS_MNEMONIC_INSD:
    case ZYDIS_MNEMONIC_OUTSB:
    case ZYDIS_MNEMONIC_OUTSW:
    case ZYDIS_MNEMONIC_OUTSD:
    case ZYDIS_MNEMONIC_CLI:
    case ZYDIS_MNEMONIC_STI:
      return InstructionClass::PRIVILEGED;
    // Vol. 3, 2.8: store the system registers at any CPL (unless UMIP, 2.7).
    case ZYDIS_MNEMONIC_SGDT:
    case ZYDIS_MNEMONIC_SIDT:
    case ZYDIS_MNEMONIC_SLDT:
    case ZYDIS_MNEMONIC_SMSW:
    case ZYDIS_MNEMONIC_STR:
    // Vol. 2: PUSHF reveals IF and IOPL; POPF silently leaves them unchanged at CPL > 0.
    case ZYDIS_MNEMONIC_PUSHF:
    case ZYDIS_MNEMONIC_PUSHFD:
    case ZYDIS_MNEMONIC_PUSHFQ:
    case ZYDIS_MNEMONIC_POPF:
    case ZYDIS_MNEMONIC_POPFD:
    case ZYDIS_MNEMONIC_POPFQ:
    // Vol. 2: their results depend on CPL against the descriptor's DPL.
    case ZYDIS_MNEMONIC_LAR:
    case ZYDIS_MNEMONIC_LSL:
    case ZYDIS_MNEMONIC_VERR:
    case ZYDIS_MNEMONIC_VERW:
      return InstructionClass::SENSITIVE;
    case ZYDIS_MNEMONIC_MOV:
      // MOV to or from a control or debug register: privileged (5.9).
      if (hasRegisterOperandOfClass(instruction, operands, ZYDIS_REGCLASS_CONTROL, false) ||
          hasRegisterOperandOfClass(instruction, operands, ZYDIS_REGCLASS_DEBUG, false)) {
        return InstructionClass::PRIVILEGED;
      }
      // MOV from a segment register reveals its RPL, hence the CPL (Robin and Irvine).
      if (hasRegisterOperandOfClass(instruction, operands, ZYDIS_REGCLASS_SEGMENT, true)) {
        return InstructionClass::SENSITIVE;
      }
      return InstructionClass::UNPRIVILEGED;
    default:
      return InstructionClass::UNPRIVILEGED;
  }
}

// Where control can go after an instruction: the fall-through (if any) and a direct target.
struct Flow {
  bool fallsThrough = true;
  bool hasTarget = false;
  uint64_t target = 0;
};

Flow flowOf(const ZydisDecodedInstruction& instruction, const ZydisDecodedOperand* operands,
            uint64_t address) {
  Flow flow;
  switch (instruction.meta.category) {
    case ZYDIS_CATEGORY_UNCOND_BR:
    case ZYDIS_CATEGORY_RET:
      flow.fallsThrough = false;
      break;
    case ZYDIS_CATEGORY_INTERRUPT:
      // INT n returns; INT3 and UD are where scanning stops (a monitor's own patches).
      flow.fallsThrough = instruction.mnemonic != ZYDIS_MNEMONIC_INT3 &&
                          instruction.mnemonic != ZYDIS_MNEMONIC_IRET &&
                          instruction.mnemonic != ZYDIS_MNEMONIC_IRETD &&
                          instruction.mnemonic != ZYDIS_MNEMONIC_IRETQ;
      return flow;
    default:
      break;
  }
  if (instruction.mnemonic == ZYDIS_MNEMONIC_UD2 || instruction.mnemonic == ZYDIS_MNEMONIC_SYSRET ||
      instruction.mnemonic == ZYDIS_MNEMONIC_SYSEXIT ||
      instruction.mnemonic == ZYDIS_MNEMONIC_IRET || instruction.mnemonic == ZYDIS_MNEMONIC_IRETD ||
      instruction.mnemonic == ZYDIS_MNEMONIC_IRETQ) {
    flow.fallsThrough = false;
  }
  bool branch = instruction.meta.category == ZYDIS_CATEGORY_UNCOND_BR ||
                instruction.meta.category == ZYDIS_CATEGORY_COND_BR ||
                instruction.meta.category == ZYDIS_CATEGORY_CALL;
  if (branch && instruction.operand_count_visible >= 1 &&
      operands[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && operands[0].imm.is_relative) {
    ZyanU64 target;
    if (ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&instruction, &operands[0], address, &target))) {
      flow.hasTarget = true;
      flow.target = target;
    }
  }
  return flow;
}

}  // namespace

void CodeImage::add(uint64_t address, kj::ArrayPtr<const uint8_t> bytes) {
  pieces[address] = std::vector<uint8_t>(bytes.begin(), bytes.end());
}

kj::ArrayPtr<const uint8_t> CodeImage::at(uint64_t address, size_t max) const {
  auto it = pieces.upper_bound(address);
  if (it == pieces.begin()) return nullptr;
  --it;
  uint64_t offset = address - it->first;
  if (offset >= it->second.size()) return nullptr;
  size_t count = std::min<size_t>(max, it->second.size() - offset);
  return kj::arrayPtr(it->second.data() + offset, count);
}

const char* className(InstructionClass kind) {
  switch (kind) {
    case InstructionClass::PRIVILEGED:
      return "privileged";
    case InstructionClass::SENSITIVE:
      return "sensitive";
    case InstructionClass::UNPRIVILEGED:
      return "unprivileged";
  }
  return "?";
}

PrescanResult prescan(const CodeImage& image, uint64_t entry, const PrescanOptions& options) {
  ZydisDecoder decoder;
  ZydisMachineMode mode = options.bits == 64   ? ZYDIS_MACHINE_MODE_LONG_64
                          : options.bits == 32 ? ZYDIS_MACHINE_MODE_LONG_COMPAT_32
                                               : ZYDIS_MACHINE_MODE_LEGACY_16;
  ZydisStackWidth stack = options.bits == 64   ? ZYDIS_STACK_WIDTH_64
                          : options.bits == 32 ? ZYDIS_STACK_WIDTH_32
                                               : ZYDIS_STACK_WIDTH_16;
  ZydisDecoderInit(&decoder, mode, stack);
  ZydisFormatter formatter;
  ZydisFormatterInit(&formatter, ZYDIS_FORMATTER_STYLE_INTEL);

  std::map<uint64_t, ScannedInstruction> seen;
  std::vector<std::pair<uint64_t, unsigned>> work = {{entry, 0}};  // address, depth
  while (!work.empty()) {
    auto [address, depth] = work.back();
    work.pop_back();
    // Decode one path: straight on until it ends.
    for (;;) {
      if (seen.count(address)) break;  // already scanned (the rest of this path too)
      kj::ArrayPtr<const uint8_t> bytes = image.at(address, ZYDIS_MAX_INSTRUCTION_LENGTH);
      if (bytes.size() == 0) break;  // outside the image
      ZydisDecodedInstruction instruction;
      ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
      if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, bytes.begin(), bytes.size(), &instruction,
                                               operands))) {
        break;  // not code, as far as the CPU is concerned (it would fault)
      }
      char text[96];
      ZydisFormatterFormatInstruction(&formatter, &instruction, operands,
                                      instruction.operand_count_visible, text, sizeof(text),
                                      address, nullptr);
      seen[address] = {address, instruction.length, classify(instruction, operands), text};
      Flow flow = flowOf(instruction, operands, address);
      if (flow.hasTarget && depth < options.maxDepth) work.emplace_back(flow.target, depth + 1);
      uint64_t next = address + instruction.length;
      // A path never runs on into the next page: the scan of a page ends at its edge.
      if (!flow.fallsThrough || next / PAGE != address / PAGE) break;
      address = next;
    }
  }
  PrescanResult result;
  for (auto& [address, scanned] : seen) {
    ++result.counts[static_cast<int>(scanned.kind)];
    result.instructions.push_back(scanned);
  }
  return result;
}

}  // namespace bulkhead
