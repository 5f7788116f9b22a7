#include "kernel/bus/io-bus.h"

#include <unistd.h>

#include <absl/strings/str_cat.h>

namespace bulkhead {

namespace {
constexpr uint64_t PORT_SPACE_SIZE = 0x10000;
constexpr uint64_t POST_CODE_PORT = 0x80;
constexpr size_t MAX_UNCLAIMED_SEEN = 256;  // distinct addresses remembered (and logged)
const char* spaceName(Space space) { return space == Space::PIO ? "port" : "MMIO"; }
}  // namespace

absl::Status IoBus::add(Space space, uint64_t base, uint64_t size, Route route) {
  if (space == Space::PIO && (base >= PORT_SPACE_SIZE || size > PORT_SPACE_SIZE - base)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s claims ports %#x+%#x, beyond port 0xffff", route.owner, base, size));
  }
  std::string owner = route.owner;
  absl::Status status = mapFor(space).add(base, size, std::move(route));
  if (!status.ok()) return absl::Status(status.code(), absl::StrCat(owner, ": ", status.message()));
  return absl::OkStatus();
}

uint64_t IoBus::read(Space space, uint64_t address, unsigned size) {
  uint64_t value = allOnes(size);
  if (const auto* entry = mapFor(space).find(address)) {
    value = entry->value.handler->read(space, address, size) & allOnes(size);
  } else {
    unclaimed(false, space, address, size, value);
  }
  if (tracer != nullptr) tracer->traced(false, space, address, size, value);
  return value;
}

void IoBus::write(Space space, uint64_t address, unsigned size, uint64_t value) {
  if (tracer != nullptr) tracer->traced(true, space, address, size, value);
  if (anyDoorbell.load(std::memory_order_acquire) && ringDoorbell(space, address, size, value)) {
    return;
  }
  if (const auto* entry = mapFor(space).find(address)) {
    entry->value.handler->write(space, address, size, value & allOnes(size),
                                entry->value.synchronous || allSynchronous);
    return;
  }
  unclaimed(true, space, address, size, value);
}

void IoBus::unclaimed(bool write, Space space, uint64_t address, unsigned size, uint64_t value) {
  unclaimedCount.fetch_add(1, std::memory_order_relaxed);
  if (space == Space::PIO && address == POST_CODE_PORT) return;
  bool first;
  {
    std::lock_guard<std::mutex> guard(unclaimedLock);
    if (unclaimedSeen.size() >= MAX_UNCLAIMED_SEEN) return;
    first = unclaimedSeen.emplace(space, address).second;
  }
  if (!first || !verbose()) return;
  if (write) {
    logf("guest wrote %#x to unclaimed %s %#x; ignored (later accesses there are only counted)",
         value, spaceName(space), address);
  } else {
    logf(
        "guest read %u byte(s) from unclaimed %s %#x; returning all-ones (later accesses there "
        "are only counted)",
        size, spaceName(space), address);
  }
}

size_t IoBus::unclaimedAddresses() {
  std::lock_guard<std::mutex> guard(unclaimedLock);
  return unclaimedSeen.size();
}

void IoBus::setDoorbell(Space space, uint64_t address, unsigned size, uint64_t value, int fd,
                        bool assign) {
  std::lock_guard<std::mutex> guard(doorbellsLock);
  std::erase_if(doorbells, [&](const Doorbell& bell) {
    return bell.space == space && bell.address == address && bell.value == value && bell.fd == fd;
  });
  if (assign) doorbells.push_back(Doorbell{space, address, size, value, fd});
  anyDoorbell.store(!doorbells.empty(), std::memory_order_release);
}

bool IoBus::ringDoorbell(Space space, uint64_t address, unsigned size, uint64_t value) {
  std::lock_guard<std::mutex> guard(doorbellsLock);
  for (const Doorbell& bell : doorbells) {
    bool matches = bell.size == 0 || (bell.size == size && bell.value == value);
    if (bell.space == space && bell.address == address && matches) {
      uint64_t one = 1;
      ssize_t ignored = ::write(bell.fd, &one, sizeof(one));
      (void)ignored;
      return true;
    }
  }
  return false;
}

}  // namespace bulkhead
