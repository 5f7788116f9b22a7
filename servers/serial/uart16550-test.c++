// The 16550A model driven without a guest: a fake host records output and the interrupt line.
#include "servers/serial/uart16550.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace bulkhead {
namespace {

constexpr uint8_t THR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;
constexpr uint8_t MCR_OUT2 = 0x08, MCR_LOOP = 0x10;

class FakeHost : public Uart16550::Host {
 public:
  void transmit(uint8_t byte) override { output.push_back(byte); }
  void setIrq(bool level) override {
    irq = level;
    ++irqChanges;
  }
  std::string output;
  bool irq = false;
  int irqChanges = 0;
};

class UartTest : public ::testing::Test {
 protected:
  FakeHost host;
  Uart16550 uart{host};
};

TEST_F(UartTest, ResetValuesMatchTheDatasheet) {
  EXPECT_EQ(uart.read(IER), 0x00);
  EXPECT_EQ(uart.read(IIR), 0x01);  // no interrupt pending, FIFOs off
  EXPECT_EQ(uart.read(LCR), 0x00);
  EXPECT_EQ(uart.read(MCR), 0x00);
  EXPECT_EQ(uart.read(LSR), 0x60);  // THRE | TEMT
  EXPECT_EQ(uart.read(MSR), 0xb0);  // DCD | DSR | CTS from the host side
}

TEST_F(UartTest, TransmitsToTheHostInOrder) {
  for (char c : std::string("hello")) uart.write(THR, c);
  EXPECT_EQ(host.output, "hello");
  EXPECT_EQ(uart.read(LSR) & 0x60, 0x60);
}

TEST_F(UartTest, DivisorLatchHidesBehindDlab) {
  uart.write(LCR, 0x80);
  uart.write(0, 0x01);
  uart.write(1, 0x02);
  uart.write(LCR, 0x03);
  uart.write(IER, 0x05);
  EXPECT_EQ(uart.read(IER), 0x05);
  uart.write(LCR, 0x83);
  EXPECT_EQ(uart.read(0), 0x01);
  EXPECT_EQ(uart.read(1), 0x02);
  EXPECT_TRUE(host.output.empty());  // the DLL write was not a transmission
}

TEST_F(UartTest, ScratchHoldsAnyValue) {
  for (int v = 0; v < 256; ++v) {
    uart.write(SCR, v);
    EXPECT_EQ(uart.read(SCR), v);
  }
}

TEST_F(UartTest, ThrEmptyInterruptIsRaisedOnEnableAndAcknowledgedByIirRead) {
  uart.write(MCR, MCR_OUT2);
  uart.write(IER, 0x02);
  EXPECT_TRUE(host.irq);
  EXPECT_EQ(uart.read(IIR), 0x02);
  EXPECT_FALSE(host.irq);
  EXPECT_EQ(uart.read(IIR), 0x01);
  uart.write(THR, 'a');  // THR empties again at once
  EXPECT_TRUE(host.irq);
}

TEST_F(UartTest, Out2GatesTheInterruptLine) {
  uart.write(IER, 0x02);
  EXPECT_FALSE(host.irq);
  EXPECT_EQ(uart.read(IIR) & 0x0f, 0x02);  // pending, but the line is gated
  uart.write(IER, 0x00);
  uart.write(IER, 0x02);
  uart.write(MCR, MCR_OUT2);
  EXPECT_TRUE(host.irq);
}

TEST_F(UartTest, ReceivedBytesRaiseDataAvailableAndReadBackInOrder) {
  uart.write(MCR, MCR_OUT2);
  uart.write(IER, 0x01);
  const uint8_t bytes[] = {'o', 'k'};
  EXPECT_EQ(uart.receive(kj::arrayPtr(bytes, 1)), 1u);  // no FIFO: one byte of room
  EXPECT_EQ(uart.receiveRoom(), 0u);
  EXPECT_TRUE(host.irq);
  EXPECT_EQ(uart.read(IIR), 0x04);
  EXPECT_EQ(uart.read(LSR), 0x61);
  EXPECT_EQ(uart.read(THR), 'o');
  EXPECT_FALSE(host.irq);
  EXPECT_EQ(uart.read(LSR), 0x60);
}

TEST_F(UartTest, FifoTriggerLevelAndCharacterTimeout) {
  uart.write(FCR, 0x41);  // FIFOs on, trigger at 4 bytes
  uart.write(IER, 0x01);
  const uint8_t bytes[] = {1, 2, 3, 4, 5};
  EXPECT_EQ(uart.receive(kj::arrayPtr(bytes, 2)), 2u);
  EXPECT_EQ(uart.read(IIR), 0xcc);  // below the trigger: character timeout
  EXPECT_EQ(uart.receive(kj::arrayPtr(bytes + 2, 3)), 3u);
  EXPECT_EQ(uart.read(IIR), 0xc4);  // at or above the trigger: data available
  EXPECT_EQ(uart.receiveRoom(), 11u);
  uart.write(FCR, 0x43);  // clear the receive FIFO
  EXPECT_EQ(uart.read(LSR), 0x60);
}

TEST_F(UartTest, LoopbackFeedsTheReceiverAndOverrunSetsOe) {
  uart.write(MCR, MCR_LOOP | 0x03);
  EXPECT_EQ(uart.read(MSR) & 0xf0, 0x30);  // CTS from RTS, DSR from DTR
  uart.write(THR, 'x');
  uart.write(THR, 'y');  // no FIFO: the second byte overruns the first
  EXPECT_TRUE(host.output.empty());
  EXPECT_EQ(uart.read(LSR), 0x63);  // DR | OE | THRE | TEMT
  EXPECT_EQ(uart.read(LSR), 0x61);  // OE cleared by the read
  EXPECT_EQ(uart.read(THR), 'x');
}

TEST_F(UartTest, LineStatusInterruptOutranksData) {
  uart.write(MCR, MCR_LOOP | MCR_OUT2);
  uart.write(IER, 0x05);
  uart.write(THR, 'x');
  uart.write(THR, 'y');
  EXPECT_EQ(uart.read(IIR), 0x06);
  EXPECT_EQ(uart.read(LSR) & 0x02, 0x02);
  EXPECT_EQ(uart.read(IIR), 0x04);
}

TEST_F(UartTest, ModemStatusDeltasAreSetInLoopbackAndClearedOnRead) {
  uart.write(MCR, MCR_LOOP);
  EXPECT_EQ(uart.read(MSR), 0x0b);   // entering loopback drops CTS, DSR and DCD
  uart.write(MCR, MCR_LOOP | 0x02);  // RTS -> CTS changes
  EXPECT_EQ(uart.read(MSR), 0x11);
  EXPECT_EQ(uart.read(MSR), 0x10);
}

TEST_F(UartTest, OffsetsBeyondSevenDoNotExist) {
  EXPECT_EQ(uart.read(8), 0xff);
  uart.write(9, 0x12);
  EXPECT_TRUE(host.output.empty());
}

}  // namespace
}  // namespace bulkhead
