// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status, which the Abseil in Debian 12 lacks.
#pragma once

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#define BULKHEAD_CONCAT_INNER(a, b) a##b
#define BULKHEAD_CONCAT(a, b) BULKHEAD_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status bulkheadStatus_ = (expr);           \
    if (!bulkheadStatus_.ok()) return bulkheadStatus_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(BULKHEAD_CONCAT(bulkheadOr_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)    \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()
