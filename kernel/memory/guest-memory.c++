#include "kernel/memory/guest-memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <absl/strings/str_format.h>

#include "kernel/base/errno-status.h"

namespace bulkhead {

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::create(uint64_t bytes) {
  if (bytes < MIB || bytes % (4 * KIB) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "guest memory of %u bytes is too small or not page-sized; use at least 1M, e.g. 64M",
        bytes));
  }
  int raw = memfd_create("bulkhead-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (raw < 0) return errnoStatus("memfd_create for guest RAM");
  kj::AutoCloseFd fd(raw);
  if (ftruncate(fd.get(), bytes) != 0) return errnoStatus("sizing guest RAM");
  if (fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    return errnoStatus("sealing guest RAM");
  }
  void* base =
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(), 0);
  if (base == MAP_FAILED)
    return errnoStatus(absl::StrFormat("mapping %u bytes of guest RAM", bytes));
  // Huge pages are a request, not a requirement: some hosts have THP for shmem turned off.
  madvise(base, bytes, MADV_HUGEPAGE);
  return std::unique_ptr<GuestMemory>(
      new GuestMemory(kj::mv(fd), bytes, static_cast<uint8_t*>(base)));
}

GuestMemory::GuestMemory(kj::AutoCloseFd memfd, uint64_t total, uint8_t* base)
    : memfd(kj::mv(memfd)), total(total), base(base) {
  uint64_t low = total < PCI_HOLE_START ? total : PCI_HOLE_START;
  ramRegions.push_back({0, low, 0, base});
  if (total > low) ramRegions.push_back({HIGH_RAM_START, total - low, low, base + low});
}

GuestMemory::~GuestMemory() {
  munmap(base, total);
  for (const RamRegion& rom : romRegions) munmap(rom.host, rom.size);
}

absl::Status GuestMemory::addRom(uint64_t guestPhysical, kj::ArrayPtr<const uint8_t> bytes) {
  uint64_t size = bytes.size();
  if (size == 0 || size % (4 * KIB) != 0 || guestPhysical % (4 * KIB) != 0 ||
      guestPhysical + size < guestPhysical) {
    return absl::InvalidArgumentError("a ROM must be a whole number of pages, page-aligned");
  }
  for (const auto* list : {&ramRegions, &romRegions}) {
    for (const RamRegion& region : *list) {
      if (guestPhysical < region.guestPhysical + region.size &&
          region.guestPhysical < guestPhysical + size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("a ROM at %#x+%#x overlaps guest memory", guestPhysical, size));
      }
    }
  }
  void* copy = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (copy == MAP_FAILED) return errnoStatus("mapping a ROM");
  memcpy(copy, bytes.begin(), size);
  romRegions.push_back({guestPhysical, size, 0, static_cast<uint8_t*>(copy)});
  return absl::OkStatus();
}

uint8_t* GuestMemory::span(uint64_t address, uint64_t length) {
  for (const auto* list : {&romRegions, &ramRegions}) {
    for (const RamRegion& region : *list) {
      if (address < region.guestPhysical) continue;
      uint64_t offset = address - region.guestPhysical;
      if (offset > region.size || length > region.size - offset) continue;
      return region.host + offset;
    }
  }
  return nullptr;
}

bool GuestMemory::write(uint64_t address, kj::ArrayPtr<const uint8_t> bytes) {
  uint8_t* target = span(address, bytes.size());
  if (target == nullptr) return false;
  memcpy(target, bytes.begin(), bytes.size());
  return true;
}

bool GuestMemory::read(uint64_t address, kj::ArrayPtr<uint8_t> bytes) {
  uint8_t* source = span(address, bytes.size());
  if (source == nullptr) return false;
  memcpy(bytes.begin(), source, bytes.size());
  return true;
}

}  // namespace bulkhead
