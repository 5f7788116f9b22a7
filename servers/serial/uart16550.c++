#include "servers/serial/uart16550.h"

namespace bulkhead {

namespace {

constexpr uint8_t bit(unsigned n) { return static_cast<uint8_t>(1u << n); }

// IER (datasheet 8.6.3).
constexpr uint8_t IER_ERBFI = bit(0);  // received data available
constexpr uint8_t IER_ETBEI = bit(1);  // transmitter holding register empty
constexpr uint8_t IER_ELSI = bit(2);   // receiver line status
constexpr uint8_t IER_EDSSI = bit(3);  // modem status
constexpr uint8_t IER_MASK = 0x0f;

// IIR (8.6.4).
constexpr uint8_t IIR_NONE = 0x01;
constexpr uint8_t IIR_LINE_STATUS = 0x06;
constexpr uint8_t IIR_RX_DATA = 0x04;
constexpr uint8_t IIR_CHAR_TIMEOUT = 0x0c;
constexpr uint8_t IIR_THR_EMPTY = 0x02;
constexpr uint8_t IIR_MODEM_STATUS = 0x00;
constexpr uint8_t IIR_FIFOS_ENABLED = 0xc0;

// FCR (8.6.5).
constexpr uint8_t FCR_ENABLE = bit(0);
constexpr uint8_t FCR_CLEAR_RX = bit(1);
constexpr uint8_t FCR_STORED = 0xc9;  // enable, DMA mode, trigger level

// LCR, MCR (8.6.1, 8.6.6).
constexpr uint8_t LCR_DLAB = bit(7);
constexpr uint8_t MCR_DTR = bit(0);
constexpr uint8_t MCR_RTS = bit(1);
constexpr uint8_t MCR_OUT1 = bit(2);
constexpr uint8_t MCR_OUT2 = bit(3);
constexpr uint8_t MCR_LOOP = bit(4);
constexpr uint8_t MCR_MASK = 0x1f;

// LSR (8.6.7).
constexpr uint8_t LSR_DR = bit(0);
constexpr uint8_t LSR_OE = bit(1);
constexpr uint8_t LSR_ERRORS = 0x1e;  // OE, PE, FE, BI
constexpr uint8_t LSR_THRE = bit(5);
constexpr uint8_t LSR_TEMT = bit(6);

// MSR (8.6.8).
constexpr uint8_t MSR_DELTAS = 0x0f;
constexpr uint8_t MSR_CTS = bit(4);
constexpr uint8_t MSR_DSR = bit(5);
constexpr uint8_t MSR_RI = bit(6);
constexpr uint8_t MSR_DCD = bit(7);
// With nothing attached the host side reports a ready modem (DCD, DSR, CTS), as QEMU does.
constexpr uint8_t MSR_HOST_READY = MSR_DCD | MSR_DSR | MSR_CTS;

}  // namespace

Uart16550::Uart16550(Host& host) : host(host) {}

bool Uart16550::fifoEnabled() const { return s.fcr & FCR_ENABLE; }
bool Uart16550::dlab() const { return s.lcr & LCR_DLAB; }
bool Uart16550::loopback() const { return s.mcr & MCR_LOOP; }

unsigned Uart16550::triggerLevel() const {
  if (!fifoEnabled()) return 1;
  static constexpr unsigned LEVELS[] = {1, 4, 8, 14};
  return LEVELS[s.fcr >> 6];
}

void Uart16550::repairState() {
  s.rxHead %= FIFO_BYTES;
  if (s.rxCount > FIFO_BYTES) s.rxCount = FIFO_BYTES;
  s.ier &= IER_MASK;
  s.mcr &= MCR_MASK;
  s.fcr &= FCR_STORED;
}

size_t Uart16550::receiveRoom() const {
  unsigned capacity = fifoEnabled() ? FIFO_BYTES : 1;
  return s.rxCount >= capacity ? 0 : capacity - s.rxCount;
}

void Uart16550::pushReceived(uint8_t byte) {
  if (receiveRoom() == 0) {
    s.lsr |= LSR_OE;  // the byte is lost, as on the chip
    return;
  }
  s.rxFifo[(s.rxHead + s.rxCount) % FIFO_BYTES] = byte;
  ++s.rxCount;
}

uint8_t Uart16550::popReceived() {
  if (s.rxCount == 0) return 0;
  uint8_t byte = s.rxFifo[s.rxHead];
  s.rxHead = (s.rxHead + 1) % FIFO_BYTES;
  --s.rxCount;
  return byte;
}

size_t Uart16550::receive(kj::ArrayPtr<const uint8_t> bytes) {
  size_t taken = 0;
  while (taken < bytes.size() && receiveRoom() > 0) pushReceived(bytes[taken++]);
  if (taken > 0) updateIrq();
  return taken;
}

uint8_t Uart16550::modemStatus() const {
  if (!loopback()) return MSR_HOST_READY | (s.msr & MSR_DELTAS);
  uint8_t lines = 0;
  if (s.mcr & MCR_RTS) lines |= MSR_CTS;
  if (s.mcr & MCR_DTR) lines |= MSR_DSR;
  if (s.mcr & MCR_OUT1) lines |= MSR_RI;
  if (s.mcr & MCR_OUT2) lines |= MSR_DCD;
  return lines | (s.msr & MSR_DELTAS);
}

uint8_t Uart16550::interruptIdentification() const {
  uint8_t fifoBits = fifoEnabled() ? IIR_FIFOS_ENABLED : 0;
  if ((s.ier & IER_ELSI) && (s.lsr & LSR_ERRORS)) return IIR_LINE_STATUS | fifoBits;
  if ((s.ier & IER_ERBFI) && s.rxCount > 0) {
    return (s.rxCount >= triggerLevel() ? IIR_RX_DATA : IIR_CHAR_TIMEOUT) | fifoBits;
  }
  if ((s.ier & IER_ETBEI) && s.thrEmptyPending) return IIR_THR_EMPTY | fifoBits;
  if ((s.ier & IER_EDSSI) && (s.msr & MSR_DELTAS)) return IIR_MODEM_STATUS | fifoBits;
  return IIR_NONE | fifoBits;
}

void Uart16550::updateIrq() {
  bool pending = (interruptIdentification() & IIR_NONE) == 0;
  bool level = pending && (s.mcr & MCR_OUT2);
  if (level != s.irqLevel) {
    s.irqLevel = level;
    host.setIrq(level);
  }
}

uint8_t Uart16550::read(uint8_t offset) {
  uint8_t value = 0xff;
  switch (static_cast<Register>(offset)) {
    case Register::RBR_THR_DLL:
      value = dlab() ? s.dll : popReceived();
      break;
    case Register::IER_DLM:
      value = dlab() ? s.dlm : s.ier;
      break;
    case Register::IIR_FCR:
      value = interruptIdentification();
      // Reading IIR while it names THR empty acknowledges that interrupt (8.6.4).
      if ((value & 0x0f) == IIR_THR_EMPTY) s.thrEmptyPending = false;
      break;
    case Register::LCR:
      value = s.lcr;
      break;
    case Register::MCR:
      value = s.mcr;
      break;
    case Register::LSR:
      value = (s.lsr & LSR_ERRORS) | LSR_THRE | LSR_TEMT | (s.rxCount > 0 ? LSR_DR : 0);
      s.lsr &= ~LSR_ERRORS;  // error bits clear on read
      break;
    case Register::MSR:
      value = modemStatus();
      s.msr &= ~MSR_DELTAS;
      break;
    case Register::SCR:
      value = s.scr;
      break;
    default:
      return 0xff;  // offsets beyond 7 do not exist on the chip
  }
  updateIrq();
  return value;
}

void Uart16550::write(uint8_t offset, uint8_t value) {
  switch (static_cast<Register>(offset)) {
    case Register::RBR_THR_DLL:
      if (dlab()) {
        s.dll = value;
        break;
      }
      if (loopback()) {
        pushReceived(value);
      } else {
        host.transmit(value);
      }
      s.thrEmptyPending = true;  // the byte left at once, so THR is empty again
      break;
    case Register::IER_DLM:
      if (dlab()) {
        s.dlm = value;
        break;
      }
      // Enabling ETBEI while THR is empty raises the THRE interrupt (8.6.3).
      if ((value & IER_ETBEI) && !(s.ier & IER_ETBEI)) s.thrEmptyPending = true;
      s.ier = value & IER_MASK;
      break;
    case Register::IIR_FCR: {
      bool wasEnabled = fifoEnabled();
      if ((value & FCR_ENABLE) != wasEnabled) {
        s.rxCount = 0;  // changing the FIFO mode clears both FIFOs
        s.rxHead = 0;
      }
      if (value & FCR_CLEAR_RX) {
        s.rxCount = 0;
        s.rxHead = 0;
      }
      // FCR bit 2 (clear the transmit FIFO) has nothing to clear: bytes leave at once.
      s.fcr = value & FCR_STORED;
      break;
    }
    case Register::LCR:
      s.lcr = value;
      break;
    case Register::MCR: {
      uint8_t before = modemStatus();
      s.mcr = value & MCR_MASK;
      uint8_t after = modemStatus();
      // In loopback the modem inputs follow MCR; record their changes as delta bits.
      uint8_t changed = (before ^ after) & 0xf0;
      if (changed & MSR_CTS) s.msr |= bit(0);
      if (changed & MSR_DSR) s.msr |= bit(1);
      if ((before & MSR_RI) && !(after & MSR_RI)) s.msr |= bit(2);  // trailing edge of RI
      if (changed & MSR_DCD) s.msr |= bit(3);
      break;
    }
    case Register::LSR:
    case Register::MSR:
      break;  // factory test registers: writes ignored
    case Register::SCR:
      s.scr = value;
      break;
    default:
      return;
  }
  updateIrq();
}

}  // namespace bulkhead
