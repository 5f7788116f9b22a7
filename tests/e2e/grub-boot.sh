#!/bin/sh
# e2e: Debian's SeaBIOS boots Debian's GRUB from an IDE disk built by tools/grub-image,
# and GRUB boots guestlib's mbinfo Multiboot kernel, which prints the memory map and command line
# GRUB gave it and exits. BULKHEAD_TEST_ACCEL=emu runs it on the software CPU (no /dev/kvm
# needed). Skips, saying why, without /dev/kvm (on KVM), SeaBIOS or grub-pc-bin.
# Arguments: the bulkhead binary, the guest folder, the source tree.
set -eu
bulkhead="$1"
guests="$2"
tree="$3"
accel="${BULKHEAD_TEST_ACCEL:-}"
if [ "$accel" != emu ]; then
  [ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "SKIP: no usable /dev/kvm"; exit 77; }
fi
[ -r /usr/share/seabios/bios-256k.bin ] || { echo "SKIP: install Debian's seabios"; exit 77; }
command -v grub-mkimage > /dev/null || { echo "SKIP: install Debian's grub-pc-bin"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tree/tools/grub-image" "$guests/mbinfo.elf" "$work/grub.img" --cmdline "from=grub answer=42" \
  > /dev/null
status=0
timeout 300 "$bulkhead" run ${accel:+--accel "$accel"} --bios seabios --device debug-exit \
  --disk "path=$work/grub.img,if=ide" > "$work/out" 2> "$work/err" || status=$?
fail() { echo "FAIL: $1"; cat "$work/out"; tail -20 "$work/err"; exit 1; }
[ "$status" = 1 ] || fail "exit status $status, expected 1"
grep -q '^loader GRUB 2' "$work/out" || fail "not loaded by GRUB"
grep -qx 'cmdline from=grub answer=42' "$work/out" || fail "the command line did not arrive"
# The map GRUB passed on: the core's e820 (through SeaBIOS) with RAM from 1 MiB to 64 MiB.
grep -qx 'mmap 0x100000 0x3f00000 1' "$work/out" || fail "the memory map lacks the RAM above 1 MiB"
grep -qx 'mbinfo done' "$work/out" || fail "the kernel did not finish"
echo "ok: SeaBIOS -> GRUB -> Multiboot kernel"
