#include "chain-io.h"

#include <cstring>

namespace bulkhead::sdk::virtio {

bool chainSlices(const DmaMemory& memory, const Chain& chain, bool writable, uint64_t offset,
                 uint64_t length, std::vector<iovec>& out) {
  uint64_t position = 0;  // of the current buffer in the stream
  for (const Buffer& buffer : chain.buffers) {
    if (length == 0) break;
    if (buffer.writable != writable) continue;
    uint64_t end = position + buffer.length;
    if (offset < end) {
      uint64_t within = offset - position;
      uint64_t take = buffer.length - within < length ? buffer.length - within : length;
      uint8_t* host = memory.span(buffer.address + within, take);
      if (host == nullptr) return false;
      out.push_back(iovec{host, take});
      offset += take;
      length -= take;
    }
    position = end;
  }
  return length == 0;
}

bool readChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, void* out,
               uint64_t length) {
  std::vector<iovec> slices;
  if (!chainSlices(memory, chain, false, offset, length, slices)) return false;
  auto* to = static_cast<uint8_t*>(out);
  for (const iovec& slice : slices) {
    memcpy(to, slice.iov_base, slice.iov_len);
    to += slice.iov_len;
  }
  return true;
}

bool writeChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, const void* in,
                uint64_t length) {
  std::vector<iovec> slices;
  if (!chainSlices(memory, chain, true, offset, length, slices)) return false;
  const auto* from = static_cast<const uint8_t*>(in);
  for (const iovec& slice : slices) {
    memcpy(slice.iov_base, from, slice.iov_len);
    from += slice.iov_len;
  }
  return true;
}

}  // namespace bulkhead::sdk::virtio
