// Turning a failed system call into an absl::Status that names what failed and why.
#pragma once

#include <absl/strings/string_view.h>
#include <cerrno>
#include <cstring>

#include <absl/status/status.h>
#include <absl/strings/str_cat.h>

namespace bulkhead {

inline absl::Status errnoStatus(absl::string_view what, int error = errno) {
  return absl::Status(
      error == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kFailedPrecondition,
      absl::StrCat(what, ": ", strerror(error)));
}

}  // namespace bulkhead
