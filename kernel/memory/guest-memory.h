// Guest RAM: one memfd, sealed against shrinking, mapped once into the core.
//
// The guest-physical map leaves a hole for PCI below 4 GiB: RAM fills [0, 3 GiB) and whatever
// does not fit there continues at 4 GiB. Every access through this class is bounds-checked with
// overflow-safe arithmetic, so a guest-supplied address can never reach outside guest RAM.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <absl/status/statusor.h>
#include <kj/common.h>
#include <kj/io.h>

namespace bulkhead {

constexpr uint64_t KIB = 1024;
constexpr uint64_t MIB = 1024 * KIB;
constexpr uint64_t GIB = 1024 * MIB;
constexpr uint64_t PCI_HOLE_START = 3 * GIB;
constexpr uint64_t HIGH_RAM_START = 4 * GIB;

struct RamRegion {
  uint64_t guestPhysical;
  uint64_t size;
  uint64_t fileOffset;  // offset in the memfd
  uint8_t* host;
};

class GuestMemory {
 public:
  static absl::StatusOr<std::unique_ptr<GuestMemory>> create(uint64_t bytes);
  ~GuestMemory();
  KJ_DISALLOW_COPY(GuestMemory);

  uint64_t size() const { return total; }
  // The memfd, for DMA windows granted to device servers.
  int fd() const { return memfd.get(); }
  const std::vector<RamRegion>& regions() const { return ramRegions; }

  // The host view of [address, address + length), or nullptr when any byte of it is not RAM
  // (ranges that straddle the PCI hole are refused too).
  uint8_t* span(uint64_t address, uint64_t length);
  // Copies to or from guest RAM; false when the range is not all RAM.
  bool write(uint64_t address, kj::ArrayPtr<const uint8_t> bytes);
  bool read(uint64_t address, kj::ArrayPtr<uint8_t> bytes);

  // RAM below the PCI hole, in bytes (what a 32-bit guest can reach).
  uint64_t lowSize() const { return ramRegions.front().size; }

  // Read-only memory outside RAM (a BIOS at the top of 4 GiB): a private copy of `bytes`,
  // page-sized, not overlapping RAM or another ROM. span() sees it; the guest cannot write it.
  absl::Status addRom(uint64_t guestPhysical, kj::ArrayPtr<const uint8_t> bytes);
  const std::vector<RamRegion>& roms() const { return romRegions; }

 private:
  GuestMemory(kj::AutoCloseFd memfd, uint64_t total, uint8_t* base);

  kj::AutoCloseFd memfd;
  uint64_t total;
  uint8_t* base;
  std::vector<RamRegion> ramRegions;
  std::vector<RamRegion> romRegions;
};

}  // namespace bulkhead
