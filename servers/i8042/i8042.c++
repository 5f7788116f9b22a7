#include "servers/i8042/i8042.h"

namespace bulkhead {

namespace {
constexpr uint8_t STATUS_OBF = 0x01, STATUS_SYS = 0x04, STATUS_CMD = 0x08, STATUS_UNLOCKED = 0x10;
constexpr uint8_t CB_KBD_IRQ = 0x01, CB_SYS = 0x04, CB_KBD_OFF = 0x10, CB_AUX_OFF = 0x20;
constexpr uint8_t CB_TRANSLATE = 0x40;
constexpr uint8_t OUT_RESET = 0x01, OUT_A20 = 0x02;
constexpr uint8_t ACK = 0xfa;
}  // namespace

I8042::I8042(std::function<void(bool)> irq, std::function<void()> reset)
    : irq(std::move(irq)), reset(std::move(reset)) {
  s.commandByte = CB_KBD_IRQ | CB_SYS | CB_TRANSLATE;
  s.outputPort = OUT_RESET | OUT_A20;
}

void I8042::push(uint8_t byte) {
  if (s.count == sizeof(s.queue)) return;  // a full queue drops, as the keyboard's buffer would
  s.queue[(s.head + s.count) % sizeof(s.queue)] = byte;
  ++s.count;
  updateIrq();
}

void I8042::updateIrq() {
  bool level = s.count > 0 && (s.commandByte & CB_KBD_IRQ);
  if (level != static_cast<bool>(s.irq)) {
    s.irq = level;
    irq(level);
  }
}

uint8_t I8042::read(uint16_t port) {
  if (port == STATUS_PORT) {
    uint8_t status = STATUS_UNLOCKED | (s.commandByte & CB_SYS ? STATUS_SYS : 0);
    if (s.pending) status |= STATUS_CMD;
    if (s.count > 0) status |= STATUS_OBF;
    return status;
  }
  if (s.count == 0) return s.queue[(s.head + sizeof(s.queue) - 1) % sizeof(s.queue)];
  uint8_t byte = s.queue[s.head];
  s.head = (s.head + 1) % sizeof(s.queue);
  --s.count;
  updateIrq();
  return byte;
}

void I8042::write(uint16_t port, uint8_t value) {
  if (port == STATUS_PORT) {
    controllerCommand(value);
    return;
  }
  uint8_t pending = s.pending;
  s.pending = 0;
  switch (pending) {
    case 0x60:
      s.commandByte = value;
      updateIrq();
      return;
    case 0xd1:
      s.outputPort = value;
      if (!(value & OUT_RESET)) reset();
      return;
    case 0xd4:
      push(0xfe);  // no mouse: "resend"
      return;
    default:
      keyboardCommand(value);
      return;
  }
}

void I8042::controllerCommand(uint8_t command) {
  switch (command) {
    case 0x20:
      push(s.commandByte);
      return;
    case 0x60:
    case 0xd1:
    case 0xd4:
      s.pending = command;
      return;
    case 0xa7:
      s.commandByte |= CB_AUX_OFF;
      return;
    case 0xa8:
      s.commandByte &= ~CB_AUX_OFF;
      return;
    case 0xa9:
    case 0xab:
      push(0x00);  // port test passed
      return;
    case 0xaa:
      push(0x55);  // self test passed
      return;
    case 0xad:
      s.commandByte |= CB_KBD_OFF;
      return;
    case 0xae:
      s.commandByte &= ~CB_KBD_OFF;
      return;
    case 0xd0:
      push(s.outputPort);
      return;
    case 0xfe:
      reset();
      return;
    default:
      return;  // other commands (pulse output lines, read input port): nothing to do
  }
}

void I8042::keyboardCommand(uint8_t byte) {
  if (s.keyboardArg) {  // the argument of LEDs or scan-code set
    s.keyboardArg = 0;
    push(ACK);
    return;
  }
  switch (byte) {
    case 0xff:  // reset
      push(ACK);
      push(0xaa);
      return;
    case 0xf2:  // identify: an MF2 keyboard
      push(ACK);
      push(0xab);
      push(0x83);
      return;
    case 0xed:  // set LEDs
    case 0xf0:  // scan-code set
    case 0xf3:  // typematic rate
      s.keyboardArg = byte;
      push(ACK);
      return;
    default:  // enable, disable, defaults, echo-less commands
      push(byte == 0xee ? 0xee : ACK);
      return;
  }
}

}  // namespace bulkhead
