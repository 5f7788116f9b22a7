#include "kernel/vcpu/cpu-model.h"

#include <algorithm>
#include <map>

#include <absl/strings/str_format.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>

namespace bulkhead {

namespace {

using R = CpuidRegister;
constexpr uint32_t EXT = 0x80000001;

// Features that cannot stay when another is hidden.
const std::map<std::string, std::vector<std::string>>& dependents() {
  static const auto* table = new std::map<std::string, std::vector<std::string>>{
      {"xsave", {"avx", "avx2", "fma", "f16c", "avx512f", "xsaveopt", "xsavec", "xsaves"}},
      {"avx", {"avx2", "fma", "f16c", "avx512f"}},
      {"sse2", {"sse3", "ssse3", "sse4_1", "sse4_2", "avx"}},
      {"apic", {"x2apic", "tsc-deadline"}},
      {"lm", {"pdpe1gb", "la57"}},
  };
  return *table;
}

// The kvm64 baseline, per register.
struct Baseline {
  uint32_t function;
  CpuidRegister reg;
  std::vector<const char*> keep;
};
const std::vector<Baseline>& kvm64() {
  static const auto* table = new std::vector<Baseline>{
      {1, R::EDX, {"fpu", "de",    "pse",     "tsc",  "msr",  "pae", "mce",
                   "cx8", "apic",  "sep",     "mtrr", "pge",  "mca", "cmov",
                   "pat", "pse36", "clflush", "mmx",  "fxsr", "sse", "sse2"}},
      {1, R::ECX, {"sse3", "cx16", "hypervisor"}},
      {EXT, R::EDX, {"syscall", "nx", "lm"}},
      {EXT, R::ECX, {"lahf-lm"}},
  };
  return *table;
}

const CpuFeature* findFeature(const std::string& name) {
  for (const CpuFeature& feature : cpuFeatures()) {
    if (name == feature.name) return &feature;
  }
  return nullptr;
}

CpuidEntry* findEntry(std::vector<CpuidEntry>& entries, uint32_t function, uint32_t index) {
  for (CpuidEntry& entry : entries) {
    bool hasSubleaves = function == 7 || function == 0xd;
    if (entry.function == function && (entry.index == index || !hasSubleaves)) return &entry;
  }
  return nullptr;
}

void clear(std::vector<CpuidEntry>& entries, const CpuFeature& feature) {
  if (CpuidEntry* entry = findEntry(entries, feature.function, feature.index)) {
    entry->reg(feature.reg) &= ~(1u << feature.bit);
  }
}

bool isSet(std::vector<CpuidEntry>& entries, const CpuFeature& feature) {
  CpuidEntry* entry = findEntry(entries, feature.function, feature.index);
  return entry != nullptr && (entry->reg(feature.reg) >> feature.bit & 1);
}

// Hides `name` and, transitively, what depends on it.
void hide(std::vector<CpuidEntry>& entries, const std::string& name) {
  if (const CpuFeature* feature = findFeature(name)) clear(entries, *feature);
  auto it = dependents().find(name);
  if (it != dependents().end()) {
    for (const std::string& dependent : it->second) hide(entries, dependent);
  }
  if (name == "xsave") {
    // No XSAVE: the state-components leaf must not describe any.
    for (CpuidEntry& entry : entries) {
      if (entry.function == 0xd) entry.eax = entry.ebx = entry.ecx = entry.edx = 0;
    }
  }
}

}  // namespace

const std::vector<CpuFeature>& cpuFeatures() {
  static const auto* table = new std::vector<CpuFeature>{
      {"fpu", 1, 0, R::EDX, 0},        {"vme", 1, 0, R::EDX, 1},
      {"de", 1, 0, R::EDX, 2},         {"pse", 1, 0, R::EDX, 3},
      {"tsc", 1, 0, R::EDX, 4},        {"msr", 1, 0, R::EDX, 5},
      {"pae", 1, 0, R::EDX, 6},        {"mce", 1, 0, R::EDX, 7},
      {"cx8", 1, 0, R::EDX, 8},        {"apic", 1, 0, R::EDX, 9},
      {"sep", 1, 0, R::EDX, 11},       {"mtrr", 1, 0, R::EDX, 12},
      {"pge", 1, 0, R::EDX, 13},       {"mca", 1, 0, R::EDX, 14},
      {"cmov", 1, 0, R::EDX, 15},      {"pat", 1, 0, R::EDX, 16},
      {"pse36", 1, 0, R::EDX, 17},     {"clflush", 1, 0, R::EDX, 19},
      {"mmx", 1, 0, R::EDX, 23},       {"fxsr", 1, 0, R::EDX, 24},
      {"sse", 1, 0, R::EDX, 25},       {"sse2", 1, 0, R::EDX, 26},
      {"ss", 1, 0, R::EDX, 27},        {"ht", 1, 0, R::EDX, 28},
      {"sse3", 1, 0, R::ECX, 0},       {"pclmulqdq", 1, 0, R::ECX, 1},
      {"monitor", 1, 0, R::ECX, 3},    {"ssse3", 1, 0, R::ECX, 9},
      {"fma", 1, 0, R::ECX, 12},       {"cx16", 1, 0, R::ECX, 13},
      {"pdcm", 1, 0, R::ECX, 15},      {"pcid", 1, 0, R::ECX, 17},
      {"sse4_1", 1, 0, R::ECX, 19},    {"sse4_2", 1, 0, R::ECX, 20},
      {"x2apic", 1, 0, R::ECX, 21},    {"movbe", 1, 0, R::ECX, 22},
      {"popcnt", 1, 0, R::ECX, 23},    {"tsc-deadline", 1, 0, R::ECX, 24},
      {"aes", 1, 0, R::ECX, 25},       {"xsave", 1, 0, R::ECX, 26},
      {"avx", 1, 0, R::ECX, 28},       {"f16c", 1, 0, R::ECX, 29},
      {"rdrand", 1, 0, R::ECX, 30},    {"hypervisor", 1, 0, R::ECX, 31},
      {"fsgsbase", 7, 0, R::EBX, 0},   {"bmi1", 7, 0, R::EBX, 3},
      {"hle", 7, 0, R::EBX, 4},        {"avx2", 7, 0, R::EBX, 5},
      {"smep", 7, 0, R::EBX, 7},       {"bmi2", 7, 0, R::EBX, 8},
      {"erms", 7, 0, R::EBX, 9},       {"invpcid", 7, 0, R::EBX, 10},
      {"rtm", 7, 0, R::EBX, 11},       {"avx512f", 7, 0, R::EBX, 16},
      {"rdseed", 7, 0, R::EBX, 18},    {"adx", 7, 0, R::EBX, 19},
      {"smap", 7, 0, R::EBX, 20},      {"clflushopt", 7, 0, R::EBX, 23},
      {"clwb", 7, 0, R::EBX, 24},      {"sha-ni", 7, 0, R::EBX, 29},
      {"umip", 7, 0, R::ECX, 2},       {"pku", 7, 0, R::ECX, 3},
      {"la57", 7, 0, R::ECX, 16},      {"rdpid", 7, 0, R::ECX, 22},
      {"xsaveopt", 0xd, 1, R::EAX, 0}, {"xsavec", 0xd, 1, R::EAX, 1},
      {"xsaves", 0xd, 1, R::EAX, 3},   {"lahf-lm", EXT, 0, R::ECX, 0},
      {"abm", EXT, 0, R::ECX, 5},      {"sse4a", EXT, 0, R::ECX, 6},
      {"syscall", EXT, 0, R::EDX, 11}, {"nx", EXT, 0, R::EDX, 20},
      {"pdpe1gb", EXT, 0, R::EDX, 26}, {"rdtscp", EXT, 0, R::EDX, 27},
      {"lm", EXT, 0, R::EDX, 29},
  };
  return *table;
}

absl::StatusOr<CpuModel> parseCpuModel(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  CpuModel model;
  model.name = parts[0];
  if (model.name != "host" && model.name != "kvm64") {
    return absl::InvalidArgumentError(
        absl::StrFormat("--cpu: unknown CPU model '%s' (host, kvm64)", model.name));
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (part.size() < 2 || (part[0] != '+' && part[0] != '-')) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--cpu: '%s' is not +FEATURE or -FEATURE (e.g. host,-cx16,-xsave)", part));
    }
    std::string name = part.substr(1);
    if (findFeature(name) == nullptr) {
      std::vector<std::string> names;
      for (const CpuFeature& feature : cpuFeatures()) names.push_back(feature.name);
      return absl::InvalidArgumentError(absl::StrFormat("--cpu: unknown feature '%s'; known: %s",
                                                        name, absl::StrJoin(names, " ")));
    }
    (part[0] == '+' ? model.added : model.removed).push_back(name);
  }
  return model;
}

absl::StatusOr<std::vector<CpuidEntry>> applyCpuModel(const CpuModel& model,
                                                      std::vector<CpuidEntry> supported,
                                                      std::vector<std::string>* notes) {
  std::vector<CpuidEntry> entries = supported;
  if (model.name == "kvm64") {
    for (const Baseline& baseline : kvm64()) {
      CpuidEntry* entry = findEntry(entries, baseline.function, 0);
      if (entry == nullptr) continue;
      uint32_t keep = 0;
      for (const char* name : baseline.keep) keep |= 1u << findFeature(name)->bit;
      entry->reg(baseline.reg) &= keep;
    }
    for (CpuidEntry& entry : entries) {
      if (entry.function == 7) entry.ebx = entry.ecx = entry.edx = 0;
    }
    hide(entries, "xsave");
  }
  for (const std::string& name : model.added) {
    const CpuFeature& feature = *findFeature(name);
    if (!isSet(supported, feature)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--cpu: +%s: this host's %s does not support it", name, "KVM"));
    }
    findEntry(entries, feature.function, feature.index)->reg(feature.reg) |= 1u << feature.bit;
  }
  for (const std::string& name : model.removed) {
    if (notes != nullptr && !isSet(supported, *findFeature(name))) {
      notes->push_back(absl::StrFormat(
          "--cpu: -%s: KVM does not report %s, so the CPU model cannot hide it if the host "
          "passes it through (PVM-backed KVM does); a guest that must not use it needs its own "
          "switch (Linux: no%s where it has one)",
          name, name, name));
    }
    hide(entries, name);
  }
  return entries;
}

}  // namespace bulkhead
