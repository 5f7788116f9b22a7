#!/bin/sh
# e2e: --deterministic replays a whole Linux boot. Debian's kernel and the busybox initramfs
# (tools/guest-images) boot twice under --accel emu --deterministic with a command that prints
# the date, the uptime and the interrupt counts; the two serial logs, kernel timestamps and all,
# must be the same byte for byte, and the date the fixed RTC time (2000-01-01). A third boot
# without --deterministic must differ (else the comparison proves nothing). Then two boots with
# two vCPUs (they take turns in a fixed order) must be the same too, both CPUs taking timer
# interrupts.
# Arguments: the bulkhead binary, the source tree.
set -eu
bulkhead="$1"
tree="$2"
cache="${BULKHEAD_IMAGE_CACHE:-$HOME/.cache/bulkhead}"
images=$("$tree/tools/guest-images" --cache "$cache")
kernel=$(echo "$images" | sed -n 3p)
initrd=$(echo "$images" | sed -n 2p)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

boot() {
  out="$1"
  shift
  timeout 300 "$bulkhead" run --accel emu "$@" --memory 256M --kernel "$kernel" \
    --initrd "$initrd" \
    --cmdline 'console=ttyS0 bulkhead.run="date; cat /proc/uptime; cat /proc/interrupts"' \
    </dev/null >"$out" 2>&1 || true
  if ! grep -q "bulkhead-initramfs: exit 0" "$out"; then
    echo "FAIL: the boot ($*) did not finish:"
    tail -20 "$out"
    exit 1
  fi
}

# Two logs that must be the same byte for byte; $3 says which boots they are.
same() {
  if ! cmp -s "$1" "$2"; then
    echo "FAIL: two $3 boots printed different things:"
    diff "$1" "$2" | head -20
    exit 1
  fi
}

boot "$work/first" --deterministic
boot "$work/second" --deterministic
boot "$work/free"
same "$work/first" "$work/second" "--deterministic"
if ! grep -q "Sat Jan  1 00:00:.. UTC 2000" "$work/first"; then
  echo "FAIL: the guest's date is not the fixed RTC time:"
  grep -n "UTC" "$work/first" | head -5
  exit 1
fi
if cmp -s "$work/first" "$work/free"; then
  echo "FAIL: a boot without --deterministic printed the same: the comparison proves nothing"
  exit 1
fi
boot "$work/smp-first" --deterministic --cpus 2
boot "$work/smp-second" --deterministic --cpus 2
same "$work/smp-first" "$work/smp-second" "--deterministic --cpus 2"
# /proc/interrupts: "LOC: <CPU0> <CPU1> Local timer interrupts"; both must have ticked.
if ! grep -Eq "^ *LOC: +[1-9][0-9]* +[1-9][0-9]* " "$work/smp-first"; then
  echo "FAIL: with --cpus 2 not both CPUs took local timer interrupts:"
  grep -n "CPU0\|LOC" "$work/smp-first" | head -5
  exit 1
fi
echo "two --deterministic Linux boots: $(wc -l <"$work/first") lines, the same byte for byte;"
echo "two with --cpus 2: $(wc -l <"$work/smp-first") lines, the same byte for byte"
