// Prescan on hand-assembled code with known answers.
#include "tools/prescan/prescan.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

PrescanResult scan(std::vector<uint8_t> code, unsigned bits, uint64_t base = 0x1000) {
  CodeImage image;
  image.add(base, kj::arrayPtr(code.data(), code.size()));
  return prescan(image, base, {bits, 256});
}

std::vector<std::string> listed(const PrescanResult& result, InstructionClass kind) {
  std::vector<std::string> out;
  for (const auto& i : result.instructions) {
    if (i.kind == kind) out.push_back(i.text);
  }
  return out;
}

TEST(Prescan, ClassifiesAndSkipsWhatIsNotReached) {
  std::vector<uint8_t> code = {
      0x0f, 0x01, 0x00,  // 0x1000 sgdt [eax]          sensitive
      0x9c,              // 0x1003 pushfd              sensitive
      0x74, 0x03,        // 0x1004 jz 0x1009
      0xfa,              // 0x1006 cli                 privileged
      0xeb, 0x03,        // 0x1007 jmp 0x100c
      0x0f, 0x22, 0xd8,  // 0x1009 mov cr3, eax        privileged
      0x8c, 0xc8,        // 0x100c mov eax, cs         sensitive
      0xf4,              // 0x100e hlt                 privileged
      0xc3,              // 0x100f ret
      0x0f, 0x00, 0xc8,  // 0x1010 str eax: never reached
  };
  PrescanResult result = scan(code, 32);
  EXPECT_EQ(listed(result, InstructionClass::SENSITIVE),
            (std::vector<std::string>{"sgdt [eax]", "pushfd", "mov eax, cs"}));
  EXPECT_EQ(listed(result, InstructionClass::PRIVILEGED),
            (std::vector<std::string>{"cli", "mov cr3, eax", "hlt"}));
  EXPECT_EQ(result.counts[0], 3u);  // jz, jmp, ret
  for (const auto& i : result.instructions) EXPECT_NE(i.address, 0x1010u);
}

TEST(Prescan, OverlappingInstructionsAreBothSeen) {
  // 0x1000: jmp 0x1001, which lands inside itself: ff c0 = inc eax, then the scan goes on.
  std::vector<uint8_t> code = {0xeb, 0xff, 0xc0, 0x0f, 0x01, 0x0d, 0, 0, 0, 0, 0xc3};
  PrescanResult result = scan(code, 32);
  ASSERT_GE(result.instructions.size(), 4u);
  EXPECT_EQ(result.instructions[0].text, "jmp 0x00001001");
  EXPECT_EQ(result.instructions[1].address, 0x1001u);
  EXPECT_EQ(result.instructions[1].text, "inc eax");
  EXPECT_EQ(listed(result, InstructionClass::SENSITIVE),
            (std::vector<std::string>{"sidt [0x00000000]"}));
}

TEST(Prescan, IndirectTransfersAndPageEdgesEndAPath) {
  // jmp eax ends the path: the lgdt after it is not reached.
  EXPECT_TRUE(
      listed(scan({0xff, 0xe0, 0x0f, 0x01, 0x10}, 32), InstructionClass::PRIVILEGED).empty());
  // Code running into the next page is left for when execution gets there...
  std::vector<uint8_t> code(0x1000 + 8, 0x90);
  code[0x1000] = 0xfa;  // cli at 0x2000
  EXPECT_TRUE(listed(scan(code, 32), InstructionClass::PRIVILEGED).empty());
  // ...but a direct branch there is followed.
  code[0] = 0xe9;  // jmp rel32 to 0x2000
  code[1] = 0xfb;
  code[2] = 0x0f;
  code[3] = 0;
  code[4] = 0;
  EXPECT_EQ(listed(scan(code, 32), InstructionClass::PRIVILEGED),
            (std::vector<std::string>{"cli"}));
}

TEST(Prescan, SixtyFourBitAndCalls) {
  std::vector<uint8_t> code = {
      0xe8, 0x04, 0x00, 0x00, 0x00,  // call +4
      0x0f, 0x01, 0xf8,              // swapgs      privileged
      0xc3,                          // ret
      0x0f, 0x00, 0xe0,              // verr ax     sensitive (the call's target)
      0xc3,
  };
  PrescanResult result = scan(code, 64, 0xffffffff80000000);
  EXPECT_EQ(listed(result, InstructionClass::PRIVILEGED), (std::vector<std::string>{"swapgs"}));
  EXPECT_EQ(listed(result, InstructionClass::SENSITIVE), (std::vector<std::string>{"verr ax"}));
}

}  // namespace
}  // namespace bulkhead
