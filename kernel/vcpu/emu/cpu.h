// The software CPU: an x86 interpreter on the Zydis decoder (the `emu` backend's engine).
//
// Contract: Cpu runs guest instructions against a CpuBus (guest-physical RAM, port I/O, MMIO
// and the interrupt controller) until it halts, is asked to stop, or fails. It owns all
// architectural state; nothing a guest writes (descriptor tables, page tables, IDT gates,
// instruction bytes) is trusted: every use is checked as the SDM says, and what the checks
// reject becomes the guest's exception (#GP, #PF, #UD, ...), never a host failure.
//
// Decoded instructions are cached in blocks keyed by guest-physical address and CPU mode, and
// chained: a block remembers the blocks that followed it. A block records the bytes it was
// decoded from and is checked against RAM again before it runs whenever code may have changed
// since its last check: after this CPU stored into its page (each page holding cached code has
// a version), and, for every block, at the start of every run() (another vCPU ran, a device's
// DMA may have landed), at interrupts and exceptions, port reads and MMIO accesses (where a
// guest learns that a device finished), and at TLB flushes (the mapping may have changed). A
// store into the running block's own later bytes takes effect at the next block.
//
// Modes: real mode, 16/32-bit protected mode (segmentation, privilege levels, call/interrupt/
// trap gates, TSS stack switches), long mode (64-bit and compatibility); paging without PAE
// (4 KiB/4 MiB pages), PAE and 4-level (4 KiB/2 MiB/1 GiB), A/D bits, NX, WP, a software TLB
// flushed on CR3 writes, INVLPG and paging-mode changes. docs/emu.md lists what is left out.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernel/vcpu/cpu-model.h"
#include "kernel/vcpu/emu/flags.h"
#include "kernel/vcpu/emu/x87.h"
#include "kernel/x86/arch-state.h"
#include "kernel/x86/descriptor.h"

namespace bulkhead::emu {

// What the CPU is attached to. Called on the vCPU's thread.
class CpuBus {
 public:
  virtual ~CpuBus() noexcept(false) = default;
  // The host address of the guest-physical page holding `physical` (4 KiB aligned), or
  // nullptr when it is not RAM (then MMIO). `write`: whether it may be written (ROM: not).
  virtual uint8_t* page(uint64_t physical, bool write) = 0;
  virtual uint64_t mmioRead(uint64_t physical, unsigned size) = 0;
  virtual void mmioWrite(uint64_t physical, unsigned size, uint64_t value) = 0;
  virtual uint64_t portRead(uint16_t port, unsigned size) = 0;
  virtual void portWrite(uint16_t port, unsigned size, uint64_t value) = 0;
  // The interrupt controller: the vector of the highest-priority pending interrupt, taking it
  // (INTA), or -1 when none is pending.
  virtual int acknowledgeInterrupt() = 0;
  // The time-stamp counter the guest reads (RDTSC).
  virtual uint64_t timestamp() = 0;
};

enum SegmentIndex : uint8_t { ES, CS, SS, DS, FS, GS, SEGMENT_COUNT };

struct CpuState {
  uint64_t gpr[16] = {};  // rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8-r15
  uint64_t rip = 0;
  uint64_t rflags = 2;
  SegmentState segment[SEGMENT_COUNT];
  SegmentState ldtr, tr;
  uint64_t gdtBase = 0, idtBase = 0;
  uint16_t gdtLimit = 0xffff, idtLimit = 0xffff;
  uint64_t cr0 = 0x60000010, cr2 = 0, cr3 = 0, cr4 = 0, cr8 = 0, efer = 0;
  uint64_t dr[8] = {0, 0, 0, 0, 0, 0, 0xffff0ff0, 0x400};
  // MSRs a kernel touches.
  uint64_t star = 0, lstar = 0, cstar = 0, sfmask = 0, kernelGsBase = 0;
  uint64_t sysenterCs = 0, sysenterEsp = 0, sysenterEip = 0;
  uint64_t pat = 0x0007040600070406, apicBase = 0xfee00900, miscEnable = 1, tscAdjust = 0;
  // SSE state: xmm0-15 and MXCSR; the x87 FPU (as KVM resets it: FNINIT's state).
  uint64_t xmm[16][2] = {};
  uint32_t mxcsr = 0x1f80;
  X87State x87;
  bool halted = false;
};

// A guest exception raised while executing; delivered through the IDT by the run loop.
struct GuestFault {
  uint8_t vector;
  bool hasError;
  uint32_t error;
};

// Why run() returned.
enum class StopReason {
  BUDGET,    // ran its instruction budget, or stop() was called
  HALTED,    // HLT: state().halted; wake with an interrupt (or kick)
  SHUTDOWN,  // a triple fault
  FAILED,    // an instruction the interpreter does not implement; failure() says which
  DEBUG,     // a single step or an execution breakpoint
};

struct Insn;
struct Block;

class Cpu {
 public:
  Cpu(CpuBus& bus, std::vector<CpuidEntry> cpuid);
  ~Cpu();

  CpuState& state() { return s; }
  // The state after power-on or INIT (SDM Vol. 3, 9.1.1): real mode at 0:0, as constructed.
  void reset();
  // After changing segment registers or control registers in state() from outside.
  void stateChanged();

  // Runs until `budget` instructions ran or another StopReason.
  StopReason run(uint64_t budget);
  // Makes run() return (BUDGET) at the next block boundary. Any thread may call it.
  void stop() { stopRequested.store(true, std::memory_order_release); }
  // The interrupt controller has something pending (any thread): run() looks at the next
  // block boundary, and a halted CPU wakes if RFLAGS.IF allows.
  void interruptRaised() { interruptPoke.store(true, std::memory_order_release); }
  // Whether an interrupt may be waiting (raised and not yet looked at by the CPU).
  bool interruptWaiting() const { return interruptPoke.load(std::memory_order_acquire); }
  // A non-maskable interrupt for this CPU (any thread): taken at a block boundary whatever
  // RFLAGS.IF says, waking a halted CPU, unless one is being handled; then it stays pending
  // (one at most, as on hardware) until the handler's IRET.
  void nmiRaised() { nmiPoke.store(true, std::memory_order_release); }
  // Whether an NMI is pending and may be taken now (on the vCPU's thread).
  bool nmiWaiting() const { return !nmiBlocked && nmiPoke.load(std::memory_order_acquire); }
  // Whether an interrupt can be taken now (IF set, not in an interrupt shadow).
  bool interruptsEnabled() const;

  uint64_t instructions() const { return retired; }
  const std::string& failure() const { return failed; }
  // The architectural registers in the core's terms (what Vcpu::getState/setState carry).
  ArchState archState() const;
  void setArchState(const ArchState& state);
  // Debugging: stop after every instruction; stop before executing at these linear addresses.
  void setDebug(bool singleStep, std::vector<uint64_t> breakpoints);

  // Exposed for the instruction tests.
  unsigned cpl() const { return s.segment[CS].dpl; }
  // Whether blocks decoded from now on use fast.c++'s handlers (the default) or only the
  // generic interpreter; the tests compare the two.
  void setFastPath(bool enabled) { fastPath = enabled; }

  // The decoded code a guest can make the core hold is bounded: once the blocks would take more
  // than CODE_CACHE_BYTES, all are freed (as QEMU flushes its whole code buffer when full) and
  // decoding starts over. Debian's Linux decodes about 60 MiB (65,000 blocks) on its way to a
  // shell, so it never flushes (docs/emu.md).
  static constexpr size_t CODE_CACHE_BYTES = 256 << 20;
  size_t codeCacheBytes() const { return cachedCodeBytes; }
  uint64_t codeCacheFlushes() const { return codeFlushes; }

 private:
  // The guest's paging structures as the page walker (kernel/x86/page-walk.h) reaches them.
  class GuestPageTables;
  friend struct Executor;
  friend struct Fast;

  // Memory, through segmentation and paging. Throw GuestFault.
  uint64_t linearAddress(SegmentIndex segment, uint64_t offset, unsigned size, bool write);
  uint64_t translate(uint64_t linear, bool write, bool user, bool execute);
  uint8_t* hostAddress(uint64_t linear, unsigned size, bool write, bool user);
  uint64_t readLinear(uint64_t linear, unsigned size, bool user);
  void writeLinear(uint64_t linear, unsigned size, uint64_t value, bool user);
  uint64_t read(SegmentIndex segment, uint64_t offset, unsigned size);
  void write(SegmentIndex segment, uint64_t offset, unsigned size, uint64_t value);
  uint64_t readSystem(uint64_t linear, unsigned size) { return readLinear(linear, size, false); }
  void writeSystem(uint64_t linear, unsigned size, uint64_t value) {
    writeLinear(linear, size, value, false);
  }
  void flushTlb();
  void invalidatePage(uint64_t linear);
  // Code in RAM may have changed, or its mapping: every block is checked against RAM again
  // before it runs, and no link is followed.
  void recheckCode() {
    ++codeEpoch;
    ++linkEpoch;
  }
  uint64_t portIn(uint16_t port, unsigned size) {
    recheckCode();
    return bus.portRead(port, size) & mask(size);  // as readLinear's MMIO
  }
  void portOut(uint16_t port, unsigned size, uint64_t value) { bus.portWrite(port, size, value); }

  // Stack.
  unsigned stackWidth() const;
  void push(uint64_t value, unsigned size);
  uint64_t pop(unsigned size);

  // Segments and control transfers (system.c++).
  void loadSegment(SegmentIndex index, uint16_t selector);
  // The linear address of `selector`'s descriptor when its first `bytes` lie inside the GDT or
  // the (present) LDT; nothing otherwise.
  std::optional<uint64_t> descriptorSlot(uint16_t selector, unsigned bytes) const;
  SegmentState descriptorAt(uint16_t selector, uint64_t* descriptorAddress, uint32_t* high);
  void loadRealSegment(SegmentIndex index, uint16_t selector);
  void farJump(uint16_t selector, uint64_t offset, unsigned operandSize);
  void farCall(uint16_t selector, uint64_t offset, unsigned operandSize);
  void farReturn(unsigned operandSize, uint16_t release);
  void interruptReturn(unsigned operandSize);
  void deliver(uint8_t vector, bool hasError, uint32_t error, bool software, uint64_t returnRip);
  void deliverFault(const GuestFault& fault);
  void syscall();
  void sysret(unsigned operandSize);
  void sysenter();
  void sysexit(unsigned operandSize);
  void writeControl(unsigned index, uint64_t value);
  uint64_t readMsr(uint32_t index);
  void writeMsr(uint32_t index, uint64_t value);
  void cpuidInstruction();
  void modeChanged();

  // Decoding and execution.
  Block* blockAt(uint64_t rip);
  // The block at RIP, through `previous`'s links when it has a current one (or nullptr).
  Block* nextBlock(Block* previous);
  bool execute(const Insn& insn);  // false: the block must end here
  // Runs `block` with breakpoints and single steps looked at before and after each instruction:
  // the reason to stop, or nothing to go on.
  std::optional<StopReason> runBlockDebugging(const Block& block);
  StopReason fail(const std::string& what);

  CpuBus& bus;
  CpuState s;
  std::vector<CpuidEntry> cpuidTable;
  std::atomic<bool> stopRequested{false};
  std::atomic<bool> interruptPoke{false};
  std::atomic<bool> nmiPoke{false};
  bool nmiBlocked = false;  // an NMI handler runs: until IRET
  uint64_t retired = 0;
  std::string failed;
  bool shadow = false;    // STI or MOV SS just ran: no interrupt before the next instruction
  bool endBlock = false;  // the running block must end (mode change, code written)
  bool fastPath = true;
  // The running block's chain (Cpu::run, fast.c++'s steps): where it started, the RIP mask of
  // the mode, its first instruction, `retired` at its start, and the instruction it stopped
  // at early or faulted at in the generic interpreter.
  static constexpr unsigned CHAINED_BLOCKS = 64;  // blocks a chain runs before run() looks
  Block* runningBlock = nullptr;
  unsigned chainBudget = 0;
  uint64_t blockRip = 0, ripMask = ~0ull;
  // Lazy arithmetic flags (fast.c++): LAHF's AH and SETO's AL from the last instruction that
  // set all six, not yet in RFLAGS.
  uint16_t lazyFlags = 0;
  bool flagsLazy = false;
  void settleFlags() {
    if (!flagsLazy) return;
    s.rflags = (s.rflags & ~FLAGS_ARITH) | arithFromLahf(lazyFlags);
    flagsLazy = false;
  }
  const Insn* blockFirst = nullptr;
  uint64_t blockRetired = 0;
  const Insn* stoppedAt = nullptr;
  const Insn* faultedAt = nullptr;
  bool singleStep = false;
  std::vector<uint64_t> breakpoints;
  bool debugStop = false;

  // The software TLB: direct-mapped, per access kind (read, write, execute) and privilege.
  struct TlbEntry {
    uint64_t tag = ~0ull;  // linear page number
    uint8_t* host = nullptr;
    uint64_t physical = 0;
    uint64_t* codeVersion = nullptr;  // a write entry's page holds cached code: its version
  };
  static constexpr unsigned TLB_SIZE = 256;
  TlbEntry tlb[2][3][TLB_SIZE];                     // [user][read, write, execute]
  TlbEntry (*privilegeTlb)[3][TLB_SIZE] = &tlb[0];  // the current privilege's: modeChanged()
  uint32_t modeKey = 0;

  std::unordered_map<uint64_t, std::unique_ptr<Block>> blocks;  // key: see blockAt()
  size_t cachedCodeBytes = 0;                                   // what `blocks` hold
  uint64_t codeFlushes = 0;
  void flushCode();
  // Physical page number -> version, for pages that hold cached blocks; a store bumps it.
  std::unordered_map<uint64_t, uint64_t> codeVersions;
  uint64_t codeEpoch = 1;          // see recheckCode()
  uint64_t linkEpoch = 1;          // block links are followed while it stays: see Block::Link
  uint64_t linkContext = ~0ull;    // the CS links were made for: see modeChanged()
  std::unique_ptr<Block> scratch;  // an instruction that crosses a page, decoded uncached
  struct BlockCacheEntry {
    uint64_t key = ~0ull;
    Block* block = nullptr;
  };
  static constexpr unsigned BLOCK_CACHE_SIZE = 1 << 16;  // 1 MiB: a kernel's hot code
  std::unique_ptr<BlockCacheEntry[]> blockCache{new BlockCacheEntry[BLOCK_CACHE_SIZE]};
};

// A present flat segment (base 0, limit 4 GiB): code execute/read or data read/write, accessed;
// what boot states and SYSCALL, SYSRET, SYSENTER and SYSEXIT load.

// The CPUID the software CPU offers (what --cpu models are applied to).
std::vector<CpuidEntry> emuSupportedCpuid();

}  // namespace bulkhead::emu
