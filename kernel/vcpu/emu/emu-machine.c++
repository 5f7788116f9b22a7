#include "kernel/vcpu/emu/emu-machine.h"

#include <unistd.h>
#include <x86intrin.h>

#include <chrono>
#include <cstdlib>
#include <optional>

#include <absl/strings/str_format.h>

#include "kernel/base/log.h"

#include "kernel/base/status-macros.h"
#include "kernel/boot/layout.h"
#include "kernel/boot/mp-table.h"
#include "kernel/irqchip/lapic.h"
#include "kernel/vcpu/emu/flags.h"

namespace bulkhead {

namespace {
// Instructions between looks at kicks and interrupts when nothing else ends a run.
constexpr uint64_t RUN_BUDGET = 1 << 16;
// The virtual clock of --deterministic: one nanosecond per retired instruction, a 1 GHz machine
// at one instruction a cycle (the figures only have to be fixed, not realistic), and TSC ticks
// per nanosecond of it.
constexpr uint64_t NS_PER_INSTRUCTION = 1;
constexpr uint64_t TICKS_PER_NS = 1;
// The APIC base MSR's flags: this is the bootstrap processor; the local APIC is on.
constexpr uint64_t APIC_BASE_BSP = 1 << 8, APIC_BASE_ENABLE = 1 << 11;
}  // namespace

// One software vCPU: the interpreter, and the wait for an interrupt while halted.
class EmuVcpu final : public Vcpu, private emu::CpuBus {
 public:
  EmuVcpu(EmuMachine& machine, unsigned index, std::vector<CpuidEntry> cpuid)
      : machine(machine),
        vcpuIndex(index),
        cpu(*this, std::move(cpuid)),
        lapic(
            index, [&machine]() { return machine.clockNs(); }, [this]() { interruptRaised(); },
            [&machine](uint8_t vector) { machine.irqChip().endOfInterrupt(vector); },
            [&machine, index](uint32_t low, uint8_t destination) {
              machine.sendIpi(index, low, destination);
            }),
        waitingForStartup(index != 0) {
    if (index != 0) cpu.state().apicBase &= ~APIC_BASE_BSP;
  }
  ~EmuVcpu() override {
    std::lock_guard<std::mutex> guard(machine.vcpusLock);
    std::erase(machine.vcpus, this);
    if (getenv("BULKHEAD_EMU_STATS") != nullptr) {
      // For benchmarks (tests/bench/emu-bench.py): instructions retired per second of running.
      double seconds = std::chrono::duration<double>(running).count();
      logf("software CPU: vCPU %u retired %u instructions in %.3f s of running (%.1f million/s)",
           vcpuIndex, cpu.instructions(), seconds,
           seconds > 0 ? cpu.instructions() / seconds / 1e6 : 0.0);
    }
  }

  absl::StatusOr<ArchState> getState() override { return cpu.archState(); }
  absl::Status setState(const ArchState& state) override {
    cpu.setArchState(state);
    return absl::OkStatus();
  }
  absl::StatusOr<VcpuExit> run() override;
  // run() under --deterministic: by turns (EmuMachine::waitForTurn).
  absl::StatusOr<VcpuExit> runByTurns();
  void kick() override {
    {
      std::lock_guard<std::mutex> guard(waitLock);
      kicked = true;
    }
    // A kick comes on the host's time (the core's periodic halt check, a pause, the end of the
    // VM); under --deterministic it must not cut a run short, or the timers, polled between
    // runs, would fire at other instructions: the run ends at its budget (at most 65,536
    // instructions later) and the kick is seen then.
    if (!machine.deterministic()) cpu.stop();
    wake.notify_all();
    machine.wakeTurns();
  }
  void clearKick() override {
    std::lock_guard<std::mutex> guard(waitLock);
    kicked = false;
  }
  void setThread(pthread_t) override {}
  absl::Status setDebug(const GuestDebug& debug) override {
    cpu.setDebug(debug.singleStep, debug.breakpoints);
    return absl::OkStatus();
  }
  // The interpreter has stepped past the instruction when its access reaches the bus.
  std::string describeAccessLocation(GuestMemory& memory) override {
    return "next " + bulkhead::describeLocation(cpu.archState(), memory);
  }
  bool haltedWithInterruptsOff() override { return cpu.state().halted && !cpu.interruptsEnabled(); }
  unsigned index() const override { return vcpuIndex; }
  uint64_t instructionCount() const { return cpu.instructions(); }

  irqchip::Lapic& apic() { return lapic; }
  // INIT: the vCPU stops and waits for a start-up IPI (the bootstrap processor ignores it).
  void init() {
    if (vcpuIndex == 0) return;
    {
      std::lock_guard<std::mutex> guard(waitLock);
      waitingForStartup = true;
    }
    cpu.stop();
    wake.notify_all();
  }
  // A start-up IPI: a waiting vCPU starts in real mode at vector * 4096.
  void startup(uint8_t vector) {
    {
      std::lock_guard<std::mutex> guard(waitLock);
      if (!waitingForStartup) return;
      waitingForStartup = false;
      cpu.reset();
      emu::CpuState& s = cpu.state();
      s.apicBase &= ~APIC_BASE_BSP;
      s.segment[emu::CS].selector = static_cast<uint16_t>(vector << 8);
      s.segment[emu::CS].base = static_cast<uint64_t>(vector) << 12;
      s.rip = 0;
      cpu.stateChanged();
    }
    wake.notify_all();
  }

  // An NMI (an IPI in NMI mode): taken whatever RFLAGS.IF says, so it wakes HLT.
  void nmi() {
    cpu.nmiRaised();
    { std::lock_guard<std::mutex> guard(waitLock); }
    wake.notify_all();
  }

  void interruptRaised() {
    cpu.interruptRaised();
    // Under waitLock, so that a vCPU between its look at the CPU and its wait sees the raise.
    { std::lock_guard<std::mutex> guard(waitLock); }
    wake.notify_all();
    if (machine.deterministic()) machine.wakeTurns();
  }

 private:
  // emu::CpuBus.
  uint8_t* page(uint64_t physical, bool write) override { return machine.page(physical, write); }
  bool apicEnabled() { return cpu.state().apicBase & APIC_BASE_ENABLE; }
  // The local APIC's page, when the APIC base MSR enables it.
  bool apicPage(uint64_t physical) {
    return apicEnabled() && (physical & ~0xfffull) == (cpu.state().apicBase & ~0xfffull);
  }
  uint64_t mmioRead(uint64_t physical, unsigned size) override {
    if (apicPage(physical)) {
      uint32_t offset = physical & 0xfff;
      uint64_t value = lapic.read(offset & ~3u) >> ((offset & 3) * 8);
      return size >= 4 ? value : value & ((1ull << (size * 8)) - 1);
    }
    return machine.bus().read(Space::MMIO, physical, size);
  }
  void mmioWrite(uint64_t physical, unsigned size, uint64_t value) override {
    if (apicPage(physical)) {
      // Only aligned 32-bit writes mean anything to an APIC register.
      if (size >= 4 && (physical & 3) == 0) lapic.write(physical & 0xfff, value & 0xffffffff);
      return;
    }
    machine.bus().write(Space::MMIO, physical, size, value);
  }
  uint64_t portRead(uint16_t port, unsigned size) override {
    return machine.bus().read(Space::PIO, port, size);
  }
  void portWrite(uint16_t port, unsigned size, uint64_t value) override {
    machine.bus().write(Space::PIO, port, size, value);
  }
  // INTA: the PIC's vector when it reaches this CPU (vCPU 0 with the local APIC off, in
  // virtual-wire mode, or through an ExtINT IOAPIC pin), else the local APIC's.
  int acknowledgeInterrupt() override {
    if (vcpuIndex == 0 &&
        (!apicEnabled() || lapic.acceptsPic() || machine.irqChip().takeExtint())) {
      int vector = machine.irqChip().acknowledgePic();
      if (vector >= 0) return vector;
    }
    return apicEnabled() ? lapic.acknowledge() : -1;
  }
  // Under --deterministic the TSC is the machine's clock, the same on every vCPU (as on hardware
  // with an invariant TSC), so Linux keeps it as its clocksource with more than one vCPU.
  uint64_t timestamp() override {
    return machine.deterministic() ? machine.clockNs() * TICKS_PER_NS : __rdtsc();
  }

  EmuMachine& machine;
  unsigned vcpuIndex;
  emu::Cpu cpu;
  std::mutex waitLock;
  std::condition_variable wake;
  bool kicked = false;
  std::chrono::steady_clock::duration running{};
  irqchip::Lapic lapic;
  bool waitingForStartup;  // an application processor before its start-up IPI (waitLock)

  // The exit a run that stopped for `reason` (SHUTDOWN, FAILED or DEBUG) ends with.
  VcpuExit exitFor(emu::StopReason reason) const {
    if (reason == emu::StopReason::SHUTDOWN) return vcpu_exit::Shutdown{};
    if (reason == emu::StopReason::DEBUG) return vcpu_exit::Debug{};
    return vcpu_exit::Failure{cpu.failure()};
  }
};

absl::StatusOr<VcpuExit> EmuVcpu::run() {
  if (machine.deterministic()) return runByTurns();
  for (;;) {
    // The timer first, with no lock held: its interrupt comes back through interruptRaised(),
    // which takes waitLock (and the machine's vCPU list lock before it).
    uint64_t due = std::min(vcpuIndex == 0 ? machine.pollTimer() : UINT64_MAX, lapic.poll());
    uint64_t now = due == UINT64_MAX ? 0 : machine.clockNs();
    {
      std::unique_lock<std::mutex> guard(waitLock);
      if (kicked) return vcpu_exit::Kicked{};
      if (waitingForStartup) {
        wake.wait(guard, [&]() { return kicked || !waitingForStartup; });
        if (kicked) return vcpu_exit::Kicked{};
      }
      // HLT: wait for an interrupt the CPU can take, or a kick (KVM's in-kernel HLT too), or
      // the next timer tick (the local APIC's, or the PIT's: vCPU 0 runs the PIT).
      // The CPU's own flag, which only taking the interrupt clears: a flag of our own, cleared
      // before a run that returned early (a stale stop request), once lost the PIT's one-shot
      // tick and left Linux asleep for ever.
      auto ready = [&]() {
        return kicked || cpu.nmiWaiting() || (cpu.interruptWaiting() && cpu.interruptsEnabled());
      };
      if (cpu.state().halted && !ready()) {
        if (due == UINT64_MAX) {
          wake.wait(guard, ready);
        } else if (due > now) {
          wake.wait_for(guard, std::chrono::nanoseconds(due - now), ready);
        }
        if (kicked) return vcpu_exit::Kicked{};
        if (!ready()) continue;  // the timer is due: poll it
      }
    }
    emu::StopReason reason;
    {
      std::lock_guard<EmuMachine::Turn> myTurn(machine.turn);
      auto start = std::chrono::steady_clock::now();
      reason = cpu.run(RUN_BUDGET);
      running += std::chrono::steady_clock::now() - start;
    }
    switch (reason) {
      case emu::StopReason::BUDGET:
      case emu::StopReason::HALTED:
        continue;
      case emu::StopReason::SHUTDOWN:
      case emu::StopReason::FAILED:
      case emu::StopReason::DEBUG:
        return exitFor(reason);
    }
  }
}

absl::StatusOr<VcpuExit> EmuVcpu::runByTurns() {
  auto isKicked = [this]() {
    std::lock_guard<std::mutex> guard(waitLock);
    return kicked;
  };
  for (;;) {
    if (!machine.waitForTurn(vcpuIndex, isKicked)) return vcpu_exit::Kicked{};
    // From here to passTurn() everything happens at the same point of every run: the timers
    // are polled in the turn, and a kick that arrives meanwhile is seen after it.
    uint64_t due = std::min(vcpuIndex == 0 ? machine.pollTimer() : UINT64_MAX, lapic.poll());
    bool idle;
    {
      std::lock_guard<std::mutex> guard(waitLock);
      idle = waitingForStartup ||
             (cpu.state().halted &&
              !(cpu.nmiWaiting() || (cpu.interruptWaiting() && cpu.interruptsEnabled())));
    }
    std::optional<emu::StopReason> reason;
    if (idle) {
      machine.idleTurn(vcpuIndex, due);
    } else {
      machine.busyTurn(vcpuIndex);
      auto start = std::chrono::steady_clock::now();
      reason = cpu.run(RUN_BUDGET);
      running += std::chrono::steady_clock::now() - start;
    }
    machine.passTurn();
    if (reason == emu::StopReason::SHUTDOWN || reason == emu::StopReason::FAILED ||
        reason == emu::StopReason::DEBUG) {
      return exitFor(*reason);
    }
    if (isKicked()) return vcpu_exit::Kicked{};
  }
}

EmuMachine::EmuMachine(GuestMemory& memory, IoBus& bus, bool deterministic)
    : memory(memory), ioBus(bus), virtualClock(deterministic) {}

EmuMachine::~EmuMachine() = default;

absl::StatusOr<std::unique_ptr<EmuMachine>> EmuMachine::create(GuestMemory& memory, IoBus& bus,
                                                               bool deterministic, bool pit) {
  std::unique_ptr<EmuMachine> machine(new EmuMachine(memory, bus, deterministic));
  EmuMachine* raw = machine.get();
  IrqChip::Wiring wiring{[raw]() { return raw->clockNs(); }, [raw]() { raw->interruptRaised(); },
                         [raw](uint8_t vector, bool level, uint8_t destination, bool logical) {
                           raw->deliver(vector, level, destination, logical);
                         }};
  ASSIGN_OR_RETURN(machine->chip, IrqChip::create(bus, std::move(wiring), pit));
  return machine;
}

absl::Status EmuMachine::mapMemory(GuestMemory& guest) {
  for (const RamRegion& region : guest.regions()) writable.push_back(region);
  return absl::OkStatus();
}

absl::Status EmuMachine::mapRom(const RamRegion& rom) {
  readOnly.push_back(rom);
  return absl::OkStatus();
}

uint8_t* EmuMachine::page(uint64_t physical, bool write) {
  for (const RamRegion& region : writable) {
    if (physical - region.guestPhysical < region.size) {
      return region.host + (physical - region.guestPhysical);
    }
  }
  if (write) return nullptr;
  for (const RamRegion& region : readOnly) {
    if (physical - region.guestPhysical < region.size) {
      return region.host + (physical - region.guestPhysical);
    }
  }
  return nullptr;
}

uint64_t EmuMachine::clockNs() {
  if (virtualClock) {
    // Only the vCPU whose turn it is runs: the others' counts stand still.
    std::lock_guard<std::mutex> guard(vcpusLock);
    uint64_t retired = 0;
    for (EmuVcpu* vcpu : vcpus) retired += vcpu->instructionCount();
    return retired * NS_PER_INSTRUCTION + skipped;
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                              started)
      .count();
}

absl::StatusOr<std::unique_ptr<Vcpu>> EmuMachine::createVcpu(unsigned index,
                                                             const CpuModel& model) {
  std::vector<std::string> notes;
  ASSIGN_OR_RETURN(std::vector<CpuidEntry> cpuid,
                   applyCpuModel(model, emu::emuSupportedCpuid(), &notes));
  for (CpuidEntry& entry : cpuid) {
    if (entry.function == 1) entry.ebx = (entry.ebx & 0xffffff) | index << 24;  // APIC ID
  }
  auto vcpu = std::make_unique<EmuVcpu>(*this, index, std::move(cpuid));
  std::lock_guard<std::mutex> guard(vcpusLock);
  vcpus.push_back(vcpu.get());
  return std::unique_ptr<Vcpu>(std::move(vcpu));
}

void EmuMachine::interruptRaised() {
  std::lock_guard<std::mutex> guard(vcpusLock);
  if (!vcpus.empty()) vcpus[0]->interruptRaised();  // the PIC's output goes to vCPU 0
}

void EmuMachine::deliver(uint8_t vector, bool level, uint8_t destination, bool logical) {
  std::lock_guard<std::mutex> guard(vcpusLock);
  for (EmuVcpu* vcpu : vcpus) {
    if (vcpu->apic().matches(destination, logical)) {
      vcpu->apic().accept(vector, level);
      return;
    }
  }
}

void EmuMachine::sendIpi(unsigned from, uint32_t icrLow, uint8_t destination) {
  unsigned shorthand = (icrLow >> 18) & 3;  // 0: by destination; 2: all; 3: all but self
  unsigned mode = (icrLow >> 8) & 7;
  uint8_t vector = static_cast<uint8_t>(icrLow);
  bool logical = icrLow & (1u << 11);
  bool deassert = !(icrLow & (1u << 14)) && (icrLow & (1u << 15));  // INIT level de-assert
  std::lock_guard<std::mutex> guard(vcpusLock);
  for (EmuVcpu* vcpu : vcpus) {
    bool self = vcpu->index() == from;
    if (shorthand == 3 && self) continue;
    if (shorthand == 0 && !vcpu->apic().matches(destination, logical)) continue;
    switch (mode) {
      case 0:  // fixed
      case 1:  // lowest priority (to each named: not arbitrated)
        vcpu->apic().accept(vector, false);
        break;
      case 4:  // NMI
        vcpu->nmi();
        break;
      case 5:  // INIT
        if (!deassert) vcpu->init();
        break;
      case 6:  // start-up
        vcpu->startup(vector);
        break;
      default:  // SMI and the reserved modes: dropped (docs/emu.md)
        break;
    }
  }
}

bool EmuMachine::waitForTurn(unsigned index, const std::function<bool()>& cancelled) {
  std::unique_lock<std::mutex> guard(ringLock);
  ringChanged.wait(guard, [&]() { return ringTurn == index || cancelled(); });
  return ringTurn == index;
}

void EmuMachine::passTurn() {
  size_t count;
  {
    std::lock_guard<std::mutex> guard(vcpusLock);
    count = vcpus.size();
  }
  {
    std::lock_guard<std::mutex> guard(ringLock);
    ringTurn = static_cast<unsigned>((ringTurn + 1) % count);
  }
  ringChanged.notify_all();
}

void EmuMachine::wakeTurns() {
  { std::lock_guard<std::mutex> guard(ringLock); }
  ringChanged.notify_all();
}

void EmuMachine::busyTurn(unsigned index) {
  std::lock_guard<std::mutex> guard(ringLock);
  if (idleUntil.size() <= index) idleUntil.resize(index + 1, 0);
  idleUntil[index] = 0;
}

void EmuMachine::idleTurn(unsigned index, uint64_t due) {
  size_t count;
  {
    std::lock_guard<std::mutex> guard(vcpusLock);
    count = vcpus.size();
  }
  uint64_t next = UINT64_MAX;
  {
    std::unique_lock<std::mutex> guard(ringLock);
    if (idleUntil.size() < count) idleUntil.resize(count, 0);
    idleUntil[index] = due == 0 ? 1 : due;
    for (uint64_t until : idleUntil) {
      if (until == 0) return;  // another vCPU still runs: its instructions move the clock
      next = std::min(next, until);
    }
    if (next == UINT64_MAX) {
      // Only an interrupt from outside (a device on host time, input) can wake the machine.
      ringChanged.wait_for(guard, std::chrono::milliseconds(10));
      return;
    }
  }
  uint64_t now = clockNs();
  if (next > now) skipped += next - now;
}

void EmuMachine::Turn::lock() {
  std::unique_lock<std::mutex> guard(mutex);
  uint64_t ticket = next++;
  changed.wait(guard, [&]() { return serving == ticket; });
}

void EmuMachine::Turn::unlock() {
  {
    std::lock_guard<std::mutex> guard(mutex);
    ++serving;
  }
  changed.notify_all();
}

absl::Status EmuMachine::setIrqLine(uint32_t line, bool level) {
  return chip->setLine(line, level);
}

absl::Status EmuMachine::setIoeventfd(bool pio, uint64_t address, unsigned size, uint64_t value,
                                      int fd, bool assign) {
  ioBus.setDoorbell(pio ? Space::PIO : Space::MMIO, address, size, value, fd, assign);
  return absl::OkStatus();
}

absl::Status EmuMachine::signalMsi(uint64_t address, uint32_t data) {
  // The message's address names the destination (SDM 11.11.1), its data the vector and how to
  // deliver it (11.11.2).
  if ((address >> 20) != 0xfee) {
    return absl::InvalidArgumentError(
        absl::StrFormat("an MSI to %#x, which is not the local APICs' 0xfeeXXXXX", address));
  }
  uint8_t destination = (address >> 12) & 0xff;
  bool logical = address & (1u << 2);
  unsigned mode = (data >> 8) & 7;
  uint8_t vector = static_cast<uint8_t>(data);
  if (mode != 0 && mode != 1) {
    return absl::UnimplementedError(
        absl::StrFormat("an MSI with delivery mode %u (the software CPU takes fixed and "
                        "lowest-priority ones)",
                        mode));
  }
  deliver(vector, /*level=*/false, destination, logical);
  return absl::OkStatus();
}

absl::Status EmuMachine::addIrqfd(uint32_t, int, int) {
  return absl::UnimplementedError("the software CPU takes interrupts through the channel");
}

}  // namespace bulkhead
