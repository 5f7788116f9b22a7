// Reading and writing a descriptor chain's buffers as two byte streams: the readable part
// (driver to device) and the writable part (device to driver), without assuming how the driver
// split them into descriptors (virtio spec 2.6.4: "message framing").
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "dma-memory.h"
#include "virtqueue.h"

namespace bulkhead::sdk::virtio {

// Host views of bytes [offset, offset + length) of the chain's readable (or writable) stream,
// appended to `out`. False when the range passes the stream's end or leaves the DMA windows.
bool chainSlices(const DmaMemory& memory, const Chain& chain, bool writable, uint64_t offset,
                 uint64_t length, std::vector<iovec>& out);

// Copies from the readable stream / into the writable stream; false as above.
bool readChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, void* out,
               uint64_t length);
bool writeChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, const void* in,
                uint64_t length);

}  // namespace bulkhead::sdk::virtio
