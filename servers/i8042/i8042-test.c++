// The i8042 model without a guest: controller commands, the status register, the keyboard's
// answers, IRQ 1, the reset line.
#include "servers/i8042/i8042.h"

#include <gtest/gtest.h>

#include <vector>

namespace bulkhead {
namespace {

class I8042Test : public ::testing::Test {
 protected:
  I8042Test() : controller([this](bool level) { irq = level; }, [this]() { ++resets; }) {}
  std::vector<uint8_t> drain() {
    std::vector<uint8_t> bytes;
    while (controller.read(I8042::STATUS_PORT) & 0x01) bytes.push_back(controller.read(0x60));
    return bytes;
  }
  I8042 controller;
  bool irq = false;
  int resets = 0;
};

TEST_F(I8042Test, SelfTestsAndTheCommandByte) {
  EXPECT_EQ(controller.read(0x64) & 0x01, 0);  // nothing to read
  controller.write(0x64, 0xaa);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0x55}));
  controller.write(0x64, 0xab);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0x00}));
  controller.write(0x64, 0x60);
  EXPECT_TRUE(controller.read(0x64) & 0x08);  // a command waits for its byte
  controller.write(0x60, 0x61);
  controller.write(0x64, 0x20);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0x61}));
}

TEST_F(I8042Test, TheKeyboardAcknowledgesAndIdentifies) {
  controller.write(0x60, 0xff);
  EXPECT_TRUE(irq);  // the command byte enables IRQ 1 at power-on
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xaa}));
  EXPECT_FALSE(irq);
  controller.write(0x60, 0xf2);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xab, 0x83}));
  controller.write(0x60, 0xed);  // LEDs, then their argument
  controller.write(0x60, 0x07);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xfa}));
}

TEST_F(I8042Test, NoIrqWhenTheCommandByteDisablesIt) {
  controller.write(0x64, 0x60);
  controller.write(0x60, 0x00);
  controller.write(0x60, 0xf4);
  EXPECT_FALSE(irq);
  EXPECT_TRUE(controller.read(0x64) & 0x01);
}

TEST_F(I8042Test, TheMouseIsAbsent) {
  controller.write(0x64, 0xd4);
  controller.write(0x60, 0xff);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfe}));
}

TEST_F(I8042Test, TheResetLine) {
  controller.write(0x64, 0xd0);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0x03}));  // reset line high, A20 on
  controller.write(0x64, 0xfe);
  EXPECT_EQ(resets, 1);
  controller.write(0x64, 0xd1);
  controller.write(0x60, 0x02);  // bit 0 clear: reset
  EXPECT_EQ(resets, 2);
}

}  // namespace
}  // namespace bulkhead
