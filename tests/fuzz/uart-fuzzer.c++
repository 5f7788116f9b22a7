// libFuzzer target: the 16550A model driven by arbitrary register accesses and host input.
// Every state it reaches must keep its invariants (FIFO indices in range, LSR bits consistent).
//
// Input: a sequence of [op (1 byte)][value (1 byte)]: op bits 0-2 the register, bit 3 write,
// bit 4 host input instead of an access.
#include <cstdlib>

#include "servers/serial/uart16550.h"

namespace {

class Host final : public bulkhead::Uart16550::Host {
 public:
  void transmit(uint8_t) override {}
  void setIrq(bool) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Host host;
  bulkhead::Uart16550 uart(host);
  for (size_t i = 0; i + 1 < size; i += 2) {
    uint8_t op = data[i], value = data[i + 1];
    if (op & 0x10) {
      uart.receive(kj::arrayPtr(&value, 1));
    } else if (op & 0x08) {
      uart.write(op & 7, value);
    } else {
      uart.read(op & 7);
    }
    const auto& s = uart.state();
    if (s.rxHead >= bulkhead::Uart16550::FIFO_BYTES ||
        s.rxCount > bulkhead::Uart16550::FIFO_BYTES) {
      abort();
    }
    if (((uart.read(5) & 0x01) != 0) != (s.rxCount > 0)) abort();  // LSR.DR iff data waits
  }
  return 0;
}
