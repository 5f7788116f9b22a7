// POST codes: the byte firmware and operating systems write to port 0x80 (the ISA
// "manufacturing diagnostics" port) to say how far they got. Each write becomes a line of the
// device's output, "post 0x2c", which the core appends to the file given with file=PATH
// (backend `file` in kernel/machine/device-kinds.table); reads return the last code written,
// as a POST card shows it. Nothing else: no timing, no 16- or 32-bit semantics (a wider write
// logs its low byte).
//
// This device is the worked example of docs/device-servers.md: an ISA device with a file backend
// is this folder and one row of the device table.
#pragma once

#include <cstdint>
#include <string>

namespace bulkhead {

class PostCodes {
 public:
  static constexpr uint16_t DEFAULT_PORT = 0x80;

  // The declared state (servers/sdk/device.h): what survives a restart of the server.
  struct State {
    uint8_t last = 0xff;  // what a read returns before the first code
    uint8_t reserved[3] = {};
    uint32_t written = 0;  // codes written so far
  };

  // A code: the line to append to the output.
  std::string write(uint8_t code);
  uint8_t read() const { return state.last; }

  State state;
};

}  // namespace bulkhead
