// The software CPU's run loop: blocks run as chains (fast.c++) or, under a debugger, one
// instruction at a time; interrupts and exceptions are delivered between them.
#include "kernel/vcpu/emu/cpu.h"

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/vcpu/emu/decoded.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead::emu {

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
  uint64_t deliveries = 0;    // exceptions delivered in this run
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
      // A delivery retires no instruction: a handler that faults at once (say #UD, with the
      // IDT pointing at an undecodable byte) would keep run() here for ever, starving the
      // other vCPUs under --deterministic. Deliveries count against the budget too.
      if (++deliveries >= budget) return StopReason::BUDGET;
    }
  }
  return StopReason::BUDGET;
}

}  // namespace bulkhead::emu
