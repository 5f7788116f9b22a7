#include "kernel/base/kj-status.h"

#include <cstring>

namespace bulkhead {

std::string describeException(const kj::Exception& exception) {
  std::string description = exception.getDescription().cStr();
  for (const char* noise : {"remote exception: ", "failed: "}) {
    if (description.rfind(noise, 0) == 0) description.erase(0, strlen(noise));
  }
  return description;
}

absl::Status statusFromException(const kj::Exception& exception) {
  return absl::FailedPreconditionError(describeException(exception));
}

}  // namespace bulkhead
