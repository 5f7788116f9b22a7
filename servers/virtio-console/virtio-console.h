// virtio-console (virtio spec 5.3): one port, a receive and a transmit queue.
//
// Contract: what the guest transmits goes to the host through the SDK's output log, so it
// reaches the host exactly once even across server crashes (committed with the queue position
// that produced it). Host input (backend 0, if given) fills receive buffers as they become
// available; bytes read from the host while no buffer is posted wait in the server (host input
// is not exactly-once across a crash, as for the serial port). No MULTIPORT, SIZE or EMERG_WRITE.
#pragma once

#include <cstdint>
#include <vector>

#include "virtio-pci.h"

namespace bulkhead {

class VirtioConsole final : public sdk::virtio::VirtioModel {
 public:
  static constexpr unsigned RX = 0, TX = 1;
  static constexpr uint64_t MAX_CHUNK = 64 * 1024;

  explicit VirtioConsole(int input) : input(input) {}

  uint16_t deviceType() const override { return 3; }
  uint32_t classCode() const override { return 0x078000; }
  uint64_t features() const override { return 0; }
  unsigned queueCount() const override { return 2; }
  int64_t serve(unsigned queue, const sdk::virtio::Chain& chain,
                const sdk::DmaMemory& memory) override;
  bool servedOnNotify(unsigned queue) const override { return queue == TX; }
  void queueNotified(unsigned queue) override { deliver(); }
  void bind(sdk::virtio::VirtioQueues& queues, sdk::DeviceHost& host) override;

 private:
  // Reads host input and hands it to receive buffers while both have some; false at EOF.
  bool deliver();

  int input;  // -1: none
  sdk::virtio::VirtioQueues* queues = nullptr;
  sdk::DeviceHost* host = nullptr;
  std::vector<uint8_t> waiting;  // host input no buffer has taken yet
  bool inputOpen = true;
};

}  // namespace bulkhead
