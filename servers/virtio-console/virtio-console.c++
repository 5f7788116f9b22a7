#include "servers/virtio-console/virtio-console.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>

#include "chain-io.h"

namespace bulkhead {

void VirtioConsole::bind(sdk::virtio::VirtioQueues& q, sdk::DeviceHost& h) {
  queues = &q;
  host = &h;
  if (input >= 0) host->watchReadable(input, [this]() { return deliver(); });
}

bool VirtioConsole::deliver() {
  for (;;) {
    if (waiting.empty() && inputOpen && input >= 0) {
      uint8_t bytes[4096];
      ssize_t got = read(input, bytes, sizeof(bytes));
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) inputOpen = false;
      if (got > 0) waiting.assign(bytes, bytes + got);
    }
    if (waiting.empty()) return inputOpen;
    size_t taken = 0;
    bool offered = queues->offer(RX, [&](const sdk::virtio::Chain& chain) -> int64_t {
      taken = std::min<size_t>(waiting.size(), chain.writableBytes);
      if (!sdk::virtio::writeChain(host->dma(), chain, 0, waiting.data(), taken)) return -1;
      return taken;
    });
    if (!offered) return inputOpen;  // no buffer: wait for queueNotified()
    waiting.erase(waiting.begin(), waiting.begin() + taken);
  }
}

int64_t VirtioConsole::serve(unsigned, const sdk::virtio::Chain& chain,
                             const sdk::DmaMemory& memory) {
  uint64_t length = std::min(chain.readableBytes, MAX_CHUNK);
  std::vector<uint8_t> bytes(length);
  if (!sdk::virtio::readChain(memory, chain, 0, bytes.data(), length)) return -1;
  host->writeOutput(kj::arrayPtr(bytes.data(), bytes.size()));
  return 0;
}

}  // namespace bulkhead
