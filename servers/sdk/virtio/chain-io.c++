#include "chain-io.h"

#include <algorithm>
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

void truncateSlices(std::vector<iovec>& slices, uint64_t keep) {
  size_t i = 0;
  for (; i < slices.size() && keep > 0; ++i) {
    if (slices[i].iov_len > keep) slices[i].iov_len = keep;
    keep -= slices[i].iov_len;
  }
  slices.resize(i);
}

void flipSlices(const std::vector<iovec>& slices, uint64_t mask) {
  unsigned byte = 0;
  for (const iovec& slice : slices) {
    auto* bytes = static_cast<uint8_t*>(slice.iov_base);
    for (size_t i = 0; i < slice.iov_len && byte < 8; ++i, ++byte) bytes[i] ^= mask >> (8 * byte);
  }
}

uint64_t streamAddress(const Chain& chain, bool writable, uint64_t offset) {
  for (const Buffer& buffer : chain.buffers) {
    if (buffer.writable != writable) continue;
    if (offset < buffer.length) return buffer.address + offset;
    offset -= buffer.length;
  }
  return 0;
}

bool readChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, void* out,
               uint64_t length) {
  if (length == 0) return true;  // nothing moves (and `out` may be null)
  std::vector<iovec> slices;
  if (!chainSlices(memory, chain, false, offset, length, slices)) return false;
  DmaFault fault = memory.transfer(streamAddress(chain, false, offset), length, false);
  if (fault.refuse) return false;
  auto* to = static_cast<uint8_t*>(out);
  uint64_t left = std::min(length, fault.keep);
  memset(to, 0, length);
  for (const iovec& slice : slices) {
    size_t take = std::min<uint64_t>(slice.iov_len, left);
    memcpy(to, slice.iov_base, take);
    to += slice.iov_len;
    left -= take;
  }
  flipSlices({iovec{out, length}}, fault.flip);
  return true;
}

bool writeChain(const DmaMemory& memory, const Chain& chain, uint64_t offset, const void* in,
                uint64_t length) {
  if (length == 0) return true;
  std::vector<iovec> slices;
  if (!chainSlices(memory, chain, true, offset, length, slices)) return false;
  DmaFault fault = memory.transfer(streamAddress(chain, true, offset), length, true);
  if (fault.refuse) return false;
  const auto* from = static_cast<const uint8_t*>(in);
  uint64_t left = std::min(length, fault.keep);
  for (const iovec& slice : slices) {
    size_t take = std::min<uint64_t>(slice.iov_len, left);
    memcpy(slice.iov_base, from, take);
    from += slice.iov_len;
    left -= take;
  }
  flipSlices(slices, fault.flip);
  return true;
}

}  // namespace bulkhead::sdk::virtio
