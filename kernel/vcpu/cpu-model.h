// The guest's CPUID: a CPU model (`--cpu MODEL[,+feature,-feature]...`, as QEMU's -cpu) applied
// to what the backend can offer.
//
// Models: `host` (everything the backend supports; the default) and `kvm64` (a conservative
// x86-64 baseline: the SSE2-era features every x86-64 host has, as QEMU's kvm64). `-feature`
// hides a feature and those that need it (hiding xsave hides AVX and the XSAVE leaf); `+feature`
// adds one the backend supports and the model left out, and is an error where the backend does
// not support it. Used here to hide what KVM's emulator cannot run (docs/core.md: cx16, xsave).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

namespace bulkhead {

enum class CpuidRegister : uint8_t { EAX, EBX, ECX, EDX };

struct CpuidEntry {
  uint32_t function;
  uint32_t index;
  uint32_t flags;  // KVM's KVM_CPUID_FLAG_SIGNIFCANT_INDEX and friends, passed through
  uint32_t eax, ebx, ecx, edx;
  uint32_t& reg(CpuidRegister r) {
    return r == CpuidRegister::EAX   ? eax
           : r == CpuidRegister::EBX ? ebx
           : r == CpuidRegister::ECX ? ecx
                                     : edx;
  }
};

struct CpuFeature {
  const char* name;
  uint32_t function;
  uint32_t index;
  CpuidRegister reg;
  uint8_t bit;
};

// Every feature name --cpu knows.
const std::vector<CpuFeature>& cpuFeatures();

struct CpuModel {
  std::string name = "host";
  std::vector<std::string> added;
  std::vector<std::string> removed;
};

// Parses "MODEL[,+feature,-feature]..."; an error names the bad part and what exists.
absl::StatusOr<CpuModel> parseCpuModel(const std::string& text);

// Turns the backend's supported entries into the guest's. `notes` gets a line for each
// feature the model hides that the backend did not report: on an ordinary KVM host that
// feature is absent anyway, but a PVM-backed KVM (as on this project's machines) passes such
// bits through from the hardware and the guest sees them whatever the entries say.
absl::StatusOr<std::vector<CpuidEntry>> applyCpuModel(const CpuModel& model,
                                                      std::vector<CpuidEntry> supported,
                                                      std::vector<std::string>* notes = nullptr);

}  // namespace bulkhead
