#!/bin/sh
# The style suite: every C and C++ file in the tree is clang-format clean (.clang-format).
set -eu
cd "$(dirname "$0")/../.."
files=$(git ls-files '*.c++' '*.h' '*.c' 2>/dev/null || find kernel servers guestlib tests tools -name '*.c++' -o -name '*.h' -o -name '*.c')
if [ -z "$files" ]; then
  echo "no sources found" >&2
  exit 1
fi
# shellcheck disable=SC2086
clang-format --dry-run --Werror $files
echo "clang-format: $(echo "$files" | wc -l) files clean"
