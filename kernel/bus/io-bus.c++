#include "kernel/bus/io-bus.h"

#include <absl/strings/str_cat.h>

namespace bulkhead {

namespace {
constexpr uint64_t PORT_SPACE_SIZE = 0x10000;
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
  if (const auto* entry = mapFor(space).find(address)) {
    return entry->value.handler->read(space, address, size) & allOnes(size);
  }
  if (unclaimed.admit()) {
    logf("guest read %u byte(s) from unclaimed %s %#x; returning all-ones", size, spaceName(space),
         address);
  }
  return allOnes(size);
}

void IoBus::write(Space space, uint64_t address, unsigned size, uint64_t value) {
  if (const auto* entry = mapFor(space).find(address)) {
    entry->value.handler->write(space, address, size, value & allOnes(size),
                                entry->value.synchronous || allSynchronous);
    return;
  }
  if (unclaimed.admit()) {
    logf("guest wrote %#x to unclaimed %s %#x; ignored", value, spaceName(space), address);
  }
}

}  // namespace bulkhead
