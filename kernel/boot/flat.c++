#include "kernel/boot/flat.h"

#include <absl/strings/str_format.h>

#include "kernel/base/status-macros.h"
#include "kernel/boot/cpu-setup.h"

namespace bulkhead {

absl::StatusOr<BootState> loadFlat(GuestMemory& memory, kj::ArrayPtr<const uint8_t> image,
                                   uint64_t address, CpuMode mode) {
  if (image.size() == 0) return absl::InvalidArgumentError("the flat image is empty");
  if (mode == CpuMode::REAL16 && address > 0xffff) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "entry %#x is out of reach in 16-bit mode (CS:IP = 0:entry); use an entry below 0x10000",
        address));
  }
  RETURN_IF_ERROR(checkImagePlacement(mode, address, image.size()));
  if (!memory.write(address, image)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a %u-byte image at %#x does not fit in guest RAM (%u bytes); raise --memory or lower "
        "--entry",
        image.size(), address, memory.size()));
  }
  BootState state;
  state.mode = mode;
  state.rip = address;
  RETURN_IF_ERROR(prepareCpuMode(memory, state));
  return state;
}

}  // namespace bulkhead
