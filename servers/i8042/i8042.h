// The i8042 keyboard controller at ports 0x60 (data) and 0x64 (status / command), with a
// keyboard that answers the BIOS's and OSes' set-up commands, and the CPU reset line.
//
// Contract: controller commands 0x20/0x60 (command byte), 0xa7/0xa8 and 0xad/0xae (disable /
// enable the mouse / keyboard port), 0xa9/0xaa/0xab (tests: 0x00, 0x55, 0x00), 0xd0/0xd1 (output
// port), 0xd4 (to the mouse: there is none, so it answers 0xfe), 0xfe (pulse the reset line);
// writing the output port with bit 0 clear resets too. Keyboard commands are acknowledged with
// 0xfa (reset also answers 0xaa, identify 0xab 0x83). Bytes queue for the guest and raise IRQ 1
// while the command byte enables it. No key presses are generated (no host keyboard yet).
#pragma once

#include <cstdint>
#include <functional>

namespace bulkhead {

class I8042 {
 public:
  static constexpr uint16_t DATA_PORT = 0x60;
  static constexpr uint16_t STATUS_PORT = 0x64;
  static constexpr uint8_t IRQ = 1;

  // `irq` drives IRQ 1; `reset` is called when the guest pulses the reset line.
  I8042(std::function<void(bool)> irq, std::function<void()> reset);

  uint8_t read(uint16_t port);
  void write(uint16_t port, uint8_t value);

  struct State {
    uint8_t commandByte;
    uint8_t outputPort;
    uint8_t pending;      // a controller command waiting for its data byte (0: none)
    uint8_t keyboardArg;  // a keyboard command waiting for its argument (0: none)
    uint8_t queue[16];
    uint8_t head, count;
    uint8_t irq;
  };
  State& state() { return s; }

 private:
  void push(uint8_t byte);
  void controllerCommand(uint8_t command);
  void keyboardCommand(uint8_t byte);
  void updateIrq();

  std::function<void(bool)> irq;
  std::function<void()> reset;
  State s{};
};

}  // namespace bulkhead
