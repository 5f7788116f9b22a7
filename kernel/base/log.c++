#include "log.h"

#include <unistd.h>

#include <string>

#include <absl/strings/str_cat.h>

namespace bulkhead {

void logLine(absl::string_view line) {
  // One write() per line so lines from several threads never interleave.
  std::string out = absl::StrCat("bulkhead: ", line, "\n");
  ssize_t ignored = write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
}

}  // namespace bulkhead
