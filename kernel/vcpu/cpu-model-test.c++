// CPU models and feature masks on a synthetic "supported" CPUID.
#include "kernel/vcpu/cpu-model.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

constexpr uint32_t CX16 = 1u << 13, XSAVE = 1u << 26, AVX = 1u << 28, X2APIC = 1u << 21;
constexpr uint32_t SSE2 = 1u << 26, APIC = 1u << 9, AVX2 = 1u << 5;

std::vector<CpuidEntry> supported() {
  return {
      {0, 0, 0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69},
      {1, 0, 0, 0x806c1, 0, CX16 | XSAVE | AVX | X2APIC | 1, SSE2 | APIC | 1},
      {7, 0, 1, 0, AVX2 | 1, 0, 0},
      {0xd, 0, 1, 0x7, 0x340, 0x340, 0},
      {0xd, 1, 1, 0xf, 0, 0, 0},
      {0x80000001, 0, 0, 0, 0, 1, (1u << 29) | (1u << 20) | (1u << 26)},
  };
}

const CpuidEntry& entry(const std::vector<CpuidEntry>& entries, uint32_t function,
                        uint32_t index = 0) {
  for (const CpuidEntry& e : entries) {
    if (e.function == function && e.index == index) return e;
  }
  static CpuidEntry none{};
  ADD_FAILURE() << "no leaf " << function;
  return none;
}

std::vector<CpuidEntry> apply(const std::string& text) {
  auto model = parseCpuModel(text);
  EXPECT_TRUE(model.ok()) << model.status();
  auto entries = applyCpuModel(*model, supported());
  EXPECT_TRUE(entries.ok()) << entries.status();
  return *entries;
}

TEST(CpuModel, HostPassesEverythingThrough) {
  auto entries = apply("host");
  EXPECT_EQ(entry(entries, 1).ecx, supported()[1].ecx);
  EXPECT_EQ(entry(entries, 0).ebx, 0x756e6547u);  // the vendor is untouched
}

TEST(CpuModel, HidingAFeatureClearsOnlyItsBit) {
  auto entries = apply("host,-cx16");
  EXPECT_EQ(entry(entries, 1).ecx, supported()[1].ecx & ~CX16);
  EXPECT_EQ(entry(entries, 1).edx, supported()[1].edx);
}

TEST(CpuModel, HidingXsaveHidesWhatNeedsItAndItsLeaf) {
  auto entries = apply("host,-xsave");
  EXPECT_EQ(entry(entries, 1).ecx & (XSAVE | AVX), 0u);
  EXPECT_EQ(entry(entries, 7).ebx & AVX2, 0u);
  EXPECT_EQ(entry(entries, 7).ebx & 1, 1u);  // fsgsbase stays
  EXPECT_EQ(entry(entries, 0xd).eax, 0u);
  EXPECT_EQ(entry(entries, 0xd, 1).eax, 0u);
  EXPECT_NE(entry(entries, 1).ecx & CX16, 0u);
}

TEST(CpuModel, Kvm64IsABaseline) {
  auto entries = apply("kvm64");
  EXPECT_EQ(entry(entries, 1).ecx, CX16 | 1);  // cx16 and sse3 stay; xsave, avx, x2apic go
  EXPECT_EQ(entry(entries, 1).edx, SSE2 | APIC | 1);
  EXPECT_EQ(entry(entries, 7).ebx, 0u);
  EXPECT_EQ(entry(entries, 0x80000001).edx, (1u << 29) | (1u << 20));  // lm, nx; no pdpe1gb
  // Adding back one the host supports works; one it does not is an error.
  entries = apply("kvm64,+x2apic");
  EXPECT_NE(entry(entries, 1).ecx & X2APIC, 0u);
  auto model = parseCpuModel("kvm64,+rdrand");
  ASSERT_TRUE(model.ok());
  auto refused = applyCpuModel(*model, supported());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("+rdrand"), std::string::npos);
}

TEST(CpuModel, MistakesAreOneClearLine) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"pentium", "unknown CPU model 'pentium' (host, kvm64)"},
      {"host,cx16", "'cx16' is not +FEATURE or -FEATURE"},
      {"host,-warp-drive", "unknown feature 'warp-drive'; known: fpu"},
      {"host,-", "'-' is not +FEATURE"},
  };
  for (const Case& c : cases) {
    auto model = parseCpuModel(c.text);
    ASSERT_FALSE(model.ok()) << c.text;
    EXPECT_NE(model.status().message().find(c.says), std::string::npos) << model.status();
  }
}

}  // namespace
}  // namespace bulkhead
