// A National Semiconductor PC16550D UART, as a PC's COM port sees it.
//
// Contract (datasheet: PC16550D, National Semiconductor, June 1995):
// - Registers RBR/THR, IER, IIR/FCR, LCR, MCR, LSR, MSR, SCR and the divisor latch (DLAB).
// - 16-byte receive FIFO with the FCR trigger levels 1/4/8/14, FIFO clear bits and the FIFO
//   enable bit; without FIFOs the receiver holds one byte.
// - Transmission is instant: a byte written to THR goes to the host at once, so THRE and TEMT
//   always read 1. That is what a very fast line looks like; a guest cannot tell otherwise.
// - Interrupt identification with the datasheet's priorities: line status, received data
//   (or character timeout), THR empty, modem status. The character timeout is reported as soon
//   as data below the trigger level waits (no 4-character timer).
// - The interrupt output is gated by MCR OUT2, as on a PC board.
// - Loopback (MCR bit 4): THR feeds the receiver; MSR reflects MCR's outputs.
// - Ignored: baud rate, parity, stop bits and break (LCR is stored and read back), the
//   FCR DMA mode bit, and writes to LSR and MSR (factory test only).
//
// All state lives in `State`, a plain struct, so it can be copied, checked and restored.
#pragma once

#include <cstddef>
#include <cstdint>

#include <kj/common.h>

namespace bulkhead {

class Uart16550 {
 public:
  // Register offsets from the base port.
  enum class Register : uint8_t {
    RBR_THR_DLL = 0,  // receive buffer / transmit holding / divisor latch low (DLAB)
    IER_DLM = 1,      // interrupt enable / divisor latch high (DLAB)
    IIR_FCR = 2,      // interrupt identification (read) / FIFO control (write)
    LCR = 3,          // line control
    MCR = 4,          // modem control
    LSR = 5,          // line status
    MSR = 6,          // modem status
    SCR = 7,          // scratch
  };

  static constexpr size_t FIFO_BYTES = 16;

  class Host {
   public:
    virtual ~Host() = default;
    virtual void transmit(uint8_t byte) = 0;
    virtual void setIrq(bool level) = 0;
  };

  struct State {
    uint8_t ier = 0;
    uint8_t lcr = 0;
    uint8_t mcr = 0;
    uint8_t lsr = 0;  // only the error bits and DR are kept; THRE/TEMT are computed
    uint8_t msr = 0;
    uint8_t scr = 0;
    uint8_t dll = 0x0c;  // 9600 baud, as the BIOS leaves it
    uint8_t dlm = 0;
    uint8_t fcr = 0;
    bool thrEmptyPending = false;  // THRE interrupt raised and not yet acknowledged
    bool irqLevel = false;         // last level given to the host
    uint8_t rxHead = 0;
    uint8_t rxCount = 0;
    uint8_t rxFifo[FIFO_BYTES] = {};
  };

  explicit Uart16550(Host& host);

  uint8_t read(uint8_t offset);
  void write(uint8_t offset, uint8_t value);

  // Bytes from the host's side of the line. Returns how many were taken (the FIFO's room).
  size_t receive(kj::ArrayPtr<const uint8_t> bytes);
  size_t receiveRoom() const;

  const State& state() const { return s; }
  // For checkpointing: the state in place. After writing it, call repairState().
  State& mutableState() { return s; }
  // Makes a state written from outside (a checkpoint) safe to run: FIFO indices in range.
  void repairState();

 private:
  bool fifoEnabled() const;
  bool dlab() const;
  bool loopback() const;
  unsigned triggerLevel() const;
  void pushReceived(uint8_t byte);
  uint8_t popReceived();
  uint8_t interruptIdentification() const;
  uint8_t modemStatus() const;
  void updateIrq();

  Host& host;
  State s;
};

}  // namespace bulkhead
