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

// For devices that transfer through chainSlices() (zero-copy) and apply a DmaFault themselves:
// keeps the first `keep` bytes; XORs `mask` into the first 8 bytes.
void truncateSlices(std::vector<iovec>& slices, uint64_t keep);
void flipSlices(const std::vector<iovec>& slices, uint64_t mask);

// The guest-physical address of byte `offset` of a stream (0 past its end).
uint64_t streamAddress(const Chain& chain, bool writable, uint64_t offset);

// Copies from the readable stream / into the writable stream; false as above. These are the
// device's data transfers: a fault plan's dma rules act on them (refused: false; short: only
// the first N bytes move, a short read leaves the rest of `out` zero; flipped: the first 8 bytes
// arrive XOR the mask).
bool readChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, void* out,
               uint64_t length);
bool writeChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, const void* in,
                uint64_t length);

}  // namespace bulkhead::sdk::virtio
