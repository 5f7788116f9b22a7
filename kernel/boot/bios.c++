#include "kernel/boot/bios.h"

#include <absl/strings/str_format.h>

namespace bulkhead {

namespace {
constexpr uint64_t FOUR_GIB = 4 * GIB;
constexpr uint64_t SHADOW_BYTES = 128 * KIB;
constexpr uint64_t SHADOW_AT = MIB - SHADOW_BYTES;  // 0xe0000
constexpr uint8_t FAR_JUMP = 0xea;
}  // namespace

absl::StatusOr<BootState> loadBios(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image) {
  uint64_t size = image.size();
  if (size == 0) return absl::InvalidArgumentError("the BIOS image is empty");
  if (size < 64 * KIB || size > 16 * MIB || size % (64 * KIB) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a BIOS image is 64 KiB to 16 MiB in whole 64 KiB units; this one has %u bytes (truncated "
        "or not a BIOS image?)",
        size));
  }
  // The first instruction runs at 0xfffffff0: a BIOS puts a far jump there.
  if (image[size - 16] != FAR_JUMP) {
    return absl::InvalidArgumentError(
        absl::StrFormat("not a BIOS image: no far jump at the reset vector (byte %#x at offset "
                        "%#x; SeaBIOS's is 0xea)",
                        image[size - 16], size - 16));
  }
  if (memory.lowSize() < MIB) {
    return absl::InvalidArgumentError("a BIOS needs at least 1 MiB of RAM");
  }
  absl::Status rom = memory.addRom(FOUR_GIB - size, image);
  if (!rom.ok()) return rom;
  uint64_t shadow = size < SHADOW_BYTES ? size : SHADOW_BYTES;
  if (!memory.write(MIB - shadow, image.slice(size - shadow, size))) {
    return absl::InternalError("cannot copy the BIOS below 1 MiB");
  }
  BootState state;
  state.mode = CpuMode::RESET;
  return state;
}

}  // namespace bulkhead
