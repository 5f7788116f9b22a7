#!/bin/sh
# Runs one libFuzzer target for a fixed time in a scratch folder (it writes crash files there).
set -eu
fuzzer="$1"
shift
cd "$(mktemp -d)"
exec "$fuzzer" "$@"
