#include "servers/virtio-net/virtio-net.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include <kj/debug.h>

#include "chain-io.h"

namespace bulkhead {

namespace {

constexpr uint64_t F_MAC = 1ull << 5;
constexpr uint64_t F_STATUS = 1ull << 16;
constexpr uint16_t LINK_UP = 1;
constexpr auto RETRY_FULL_BACKEND = std::chrono::microseconds(100);

}  // namespace

VirtioNet::VirtioNet(int backend, bool listening, std::array<uint8_t, 6> mac)
    : backend(backend), listening(listening), mac(mac) {
  struct stat info;
  KJ_SYSCALL(fstat(backend, &info));
  socket = S_ISSOCK(info.st_mode);
  KJ_SYSCALL(fcntl(backend, F_SETFL, fcntl(backend, F_GETFL) | O_NONBLOCK));
  if (!listening) frames = backend;
}

uint64_t VirtioNet::features() const { return F_MAC | F_STATUS; }

std::vector<uint8_t> VirtioNet::config() const {
  std::vector<uint8_t> bytes(mac.begin(), mac.end());
  uint16_t status = frames >= 0 ? LINK_UP : 0;  // a listening backend without a peer is unplugged
  bytes.push_back(status & 0xff);
  bytes.push_back(status >> 8);
  return bytes;
}

void VirtioNet::bind(sdk::virtio::VirtioQueues& q, sdk::DeviceHost& h) {
  queues = &q;
  host = &h;
  if (listening) {
    host->watchReadable(backend, [this]() {
      int accepted = accept4(backend, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (accepted < 0) return true;  // EAGAIN: keep waiting
      frames = accepted;
      watch(frames);
      queues->configChanged();  // the link came up
      return false;             // one peer
    });
  } else {
    watch(frames);
  }
}

void VirtioNet::watch(int fd) {
  host->watchReadable(fd, [this, fd]() {
    receive();
    return fd == frames;  // the peer hung up: stop
  });
}

void VirtioNet::receive() {
  while (frames >= 0) {
    if (pending.empty()) {
      pending.resize(MAX_FRAME);
      ssize_t got = socket ? recv(frames, pending.data(), pending.size(), MSG_DONTWAIT)
                           : read(frames, pending.data(), pending.size());
      if (got <= 0) {
        pending.clear();
        if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
          frames = -1;  // hung up: the link goes down
          queues->configChanged();
        }
        return;
      }
      pending.resize(got);
    }
    bool taken = queues->offer(RX, [this](const sdk::virtio::Chain& chain) -> int64_t {
      if (chain.writableBytes < HEADER_BYTES + pending.size()) {
        ++droppedFrames;  // the driver's buffer is too small for this frame
        return 0;
      }
      uint8_t header[HEADER_BYTES] = {};
      header[10] = 1;  // num_buffers
      if (!sdk::virtio::writeChain(host->dma(), chain, 0, header, HEADER_BYTES) ||
          !sdk::virtio::writeChain(host->dma(), chain, HEADER_BYTES, pending.data(),
                                   pending.size())) {
        return -1;
      }
      return HEADER_BYTES + pending.size();
    });
    if (!taken) return;  // no buffer: the frame waits for queueNotified()
    pending.clear();
  }
}

int64_t VirtioNet::serve(unsigned, const sdk::virtio::Chain& chain, const sdk::DmaMemory& memory) {
  if (chain.readableBytes < HEADER_BYTES || chain.readableBytes - HEADER_BYTES > MAX_FRAME) {
    return -1;
  }
  outgoing.resize(chain.readableBytes - HEADER_BYTES);
  if (!sdk::virtio::readChain(memory, chain, HEADER_BYTES, outgoing.data(), outgoing.size())) {
    return -1;
  }
  if (frames < 0) {
    ++droppedFrames;  // no peer (yet, or any more)
    return 0;
  }
  ssize_t sent = socket
                     ? send(frames, outgoing.data(), outgoing.size(), MSG_DONTWAIT | MSG_NOSIGNAL)
                     : write(frames, outgoing.data(), outgoing.size());
  if (sent < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
    if (!retryScheduled) {
      retryScheduled = true;
      host->after(RETRY_FULL_BACKEND, [this]() {
        retryScheduled = false;
        queues->kick(TX);
      });
    }
    return sdk::virtio::BUSY;
  }
  if (sent < 0) ++droppedFrames;  // the peer is gone
  return 0;
}

}  // namespace bulkhead
