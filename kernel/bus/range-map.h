// An ordered map from non-overlapping address ranges to values.
//
// Registration refuses a zero size, a range that wraps past the top of the address space and
// any overlap with a range already present, so a lookup names at most one owner.
#pragma once

#include <cstdint>
#include <map>
#include <utility>

#include <absl/status/status.h>
#include <absl/strings/str_format.h>

namespace bulkhead {

template <typename T>
class RangeMap {
 public:
  struct Entry {
    uint64_t base;
    uint64_t last;  // inclusive, so a range may end at the very top of the address space
    T value;
  };

  absl::Status add(uint64_t base, uint64_t size, T value) {
    if (size == 0)
      return absl::InvalidArgumentError(absl::StrFormat("range at %#x is empty", base));
    uint64_t last = base + (size - 1);
    if (last < base) {
      return absl::InvalidArgumentError(
          absl::StrFormat("range %#x+%#x wraps past the end of the address space", base, size));
    }
    auto next = entries.lower_bound(base);
    if (next != entries.end() && next->second.base <= last)
      return overlap(base, last, next->second);
    if (next != entries.begin()) {
      auto previous = std::prev(next);
      if (previous->second.last >= base) return overlap(base, last, previous->second);
    }
    entries.emplace(base, Entry{base, last, std::move(value)});
    return absl::OkStatus();
  }

  // The entry whose range holds `address`, or nullptr.
  const Entry* find(uint64_t address) const {
    auto it = entries.upper_bound(address);
    if (it == entries.begin()) return nullptr;
    --it;
    return address <= it->second.last ? &it->second : nullptr;
  }

  size_t size() const { return entries.size(); }

 private:
  static absl::Status overlap(uint64_t base, uint64_t last, const Entry& other) {
    return absl::AlreadyExistsError(
        absl::StrFormat("range %#x-%#x overlaps %#x-%#x, which is already registered", base, last,
                        other.base, other.last));
  }

  std::map<uint64_t, Entry> entries;  // keyed by base
};

}  // namespace bulkhead
