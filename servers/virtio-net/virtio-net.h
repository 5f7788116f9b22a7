// virtio-net (virtio spec 5.1): a receive and a transmit queue over a packet backend.
//
// Contract: the backend is a descriptor that carries one Ethernet frame per read and per write:
// a connected unix SOCK_SEQPACKET socket (two VMs, or a test, talk without privileges), a tap
// device, or a listening SOCK_SEQPACKET socket whose first connection becomes the backend.
// Offered: MAC and STATUS (the link is up while there is a peer; its changes raise a
// configuration interrupt); no offloads, so every frame is whole and the 12-byte
// virtio_net_hdr is all zeros on receive and ignored on transmit. Frames go out in the order the
// driver queued them; a full backend leaves the transmit chain available and is retried
// (BUSY), so nothing is dropped for back-pressure. A received frame waits in the backend until
// the driver has made a receive buffer available; one larger than the buffer is dropped and
// counted. Until a listening backend has a peer, and after the peer hangs up, the link is down
// and frames sent are dropped, as on an unplugged cable.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "virtio-pci.h"

namespace bulkhead {

class VirtioNet final : public sdk::virtio::VirtioModel {
 public:
  static constexpr unsigned RX = 0, TX = 1;
  static constexpr uint64_t HEADER_BYTES = 12;  // virtio_net_hdr with num_buffers (VERSION_1)
  static constexpr size_t MAX_FRAME = 65536;

  VirtioNet(int backend, bool listening, std::array<uint8_t, 6> mac);

  uint16_t deviceType() const override { return 1; }
  uint32_t classCode() const override { return 0x020000; }
  uint64_t features() const override;
  unsigned queueCount() const override { return 2; }
  std::vector<uint8_t> config() const override;
  int64_t serve(unsigned queue, const sdk::virtio::Chain& chain,
                const sdk::DmaMemory& memory) override;
  bool servedOnNotify(unsigned queue) const override { return queue == TX; }
  void queueNotified(unsigned queue) override { receive(); }
  void bind(sdk::virtio::VirtioQueues& queues, sdk::DeviceHost& host) override;

  uint64_t dropped() const { return droppedFrames; }

 private:
  void watch(int fd);
  // Moves frames from the backend into receive buffers while both have some.
  void receive();

  int backend;      // the listening socket, or the frame descriptor
  int frames = -1;  // the frame descriptor once there is one
  bool listening;
  bool socket;
  std::array<uint8_t, 6> mac;
  sdk::virtio::VirtioQueues* queues = nullptr;
  sdk::DeviceHost* host = nullptr;
  std::vector<uint8_t> pending;  // a received frame no buffer has taken yet
  std::vector<uint8_t> outgoing;
  bool retryScheduled = false;
  uint64_t droppedFrames = 0;
};

}  // namespace bulkhead
