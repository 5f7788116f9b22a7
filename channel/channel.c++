#include "channel/channel.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bulkhead {

namespace {
size_t roundToPage(size_t bytes) { return (bytes + 4095) & ~size_t{4095}; }
}  // namespace

size_t channelReplyOffset(uint32_t slots) { return roundToPage(ringBytes(slots)); }
size_t channelBytes(uint32_t slots) { return 2 * channelReplyOffset(slots); }

bool ChannelMapping::map(int fd, uint32_t slotCount) {
  if (!ringSlotsValid(slotCount)) return false;
  size_t need = channelBytes(slotCount);
  struct stat info;
  if (fstat(fd, &info) != 0 || info.st_size < 0 || static_cast<size_t>(info.st_size) < need) {
    return false;
  }
  void* mapped = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mapped == MAP_FAILED) return false;
  base = mapped;
  bytes = need;
  slots = slotCount;
  return true;
}

ChannelMapping::~ChannelMapping() {
  if (base != nullptr) munmap(base, bytes);
}

ChannelMapping::ChannelMapping(ChannelMapping&& other) noexcept
    : base(other.base), bytes(other.bytes), slots(other.slots) {
  other.base = nullptr;
}

capnp::ReaderOptions channelReaderOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = RING_SLOT_WORDS * 2;
  options.nestingLimit = 4;
  return options;
}

RingStatus popMessage(RingConsumer& ring, PoppedMessage& out) {
  return ring.pop(kj::arrayPtr(reinterpret_cast<uint64_t*>(out.words), RING_SLOT_WORDS), out.count,
                  out.seq);
}

void signalEventfd(int fd) {
  uint64_t one = 1;
  ssize_t ignored = write(fd, &one, sizeof(one));
  (void)ignored;
}

void drainEventfd(int fd) {
  // One read takes an eventfd's whole count (it is not a semaphore eventfd); a second would only
  // return EAGAIN, a system call per notification for nothing.
  uint64_t value;
  ssize_t ignored = read(fd, &value, sizeof(value));
  (void)ignored;
}

}  // namespace bulkhead
