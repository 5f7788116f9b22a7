// libFuzzer target: arbitrary bytes as a device server's side of the channel — reply-ring
// slots (payloads and claimed lengths), a ring index and an output-log count — fed to the
// core's handling (RemoteDevice::serviceReplies and drainOutput). The core must never crash,
// hang or read outside the channel; at worst it fences the device.
//
// Input: [slots: 1 byte][per slot: claimed words (1 byte), payload (claimed words * 8 bytes,
// or what is left)][head lie (8 bytes, optional)][committed output (8 bytes, optional)]
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "kernel/supervisor/remote-device.h"

namespace bulkhead {
namespace {

constexpr uint32_t SLOTS = 8;

class NullSink final : public DeviceSink {
 public:
  void setIrqLine(uint32_t, bool) override {}
  void setMsiRoute(uint32_t, uint64_t, uint32_t) override {}
  void signalMsi(uint64_t, uint32_t) override {}
  void requestExit(int, const std::string&) override {}
  void faultFired(const std::string&, const std::string&, const std::string&, uint64_t) override {}
};

uint64_t take64(const uint8_t*& data, size_t& size) {
  uint64_t value = 0;
  size_t n = size < 8 ? size : 8;
  memcpy(&value, data, n);
  data += n;
  size -= n;
  return value;
}

}  // namespace
}  // namespace bulkhead

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulkhead;
  static int devNull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  int ringFd = memfd_create("fuzz-ring", MFD_CLOEXEC);
  if (ringFd < 0 || ftruncate(ringFd, channelBytes(SLOTS)) != 0) abort();
  ChannelMapping mapping;
  if (!mapping.map(ringFd, SLOTS)) abort();
  close(ringFd);
  ringInit(mapping.requests(), SLOTS, 0);
  ringInit(mapping.replies(), SLOTS, 0);
  void* stateMemory =
      mmap(nullptr, stateRegionBytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* state = static_cast<StateRegionLayout*>(stateMemory);
  char* replies = static_cast<char*>(mapping.replies());
  auto* header = reinterpret_cast<RingHeader*>(replies);
  auto* slots = reinterpret_cast<RingSlot*>(replies + sizeof(RingHeader));

  // The hostile server's writes.
  uint8_t count = size > 0 ? data[0] % (SLOTS + 1) : 0;
  if (size > 0) {
    ++data;
    --size;
  }
  for (uint8_t i = 0; i < count && size > 0; ++i) {
    uint8_t claimed = data[0];
    ++data;
    --size;
    size_t bytes = size < claimed * 8u ? size : claimed * 8u;
    if (bytes > sizeof(slots[i].payload)) bytes = sizeof(slots[i].payload);
    memcpy(slots[i].payload, data, bytes);
    data += bytes;
    size -= bytes;
    slots[i].words = claimed;
    slots[i].seq.store(i);
  }
  header->head.store(count);
  if (size >= 8) header->head.store(take64(data, size));
  if (size >= 8) state->header.committedOutput.store(take64(data, size));

  {
    NullSink sink;
    RemoteDevice device("fuzz", std::move(mapping), kj::AutoCloseFd(eventfd(0, EFD_CLOEXEC)),
                        kj::AutoCloseFd(eventfd(0, EFD_CLOEXEC)), state,
                        kj::AutoCloseFd(fcntl(devNull, F_DUPFD_CLOEXEC, 3)), sink);
    device.allow({4}, /*mayExit=*/false, /*pciGsi=*/std::nullopt, /*msiGsis=*/{24, 25});
    device.serviceReplies();
    device.drainOutput();
  }
  munmap(stateMemory, stateRegionBytes());
  return 0;
}
