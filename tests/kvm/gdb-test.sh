#!/bin/sh
# The GDB stub with Debian's gdb in batch mode against the real-mode test guest: a breakpoint,
# continue, registers and memory read, a single step, continue to the breakpoint again.
set -eu
bulkhead="$1"
guests="$2"
# BULKHEAD_TEST_ACCEL=emu (the emu suite) runs it on the software CPU, which needs no /dev/kvm.
accel="${BULKHEAD_TEST_ACCEL:-}"
if [ "$accel" != emu ] && { ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; }; then
  echo "SKIP: needs /dev/kvm"
  exit 77
fi
if ! command -v gdb > /dev/null; then
  echo "SKIP: needs gdb (apt-get install gdb)"
  exit 77
fi
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bulkhead" run ${accel:+--accel "$accel"} --flat "$guests/real16.bin" --entry 0x7c00 --mode 16 --device debug-exit \
  --gdb "$port" > "$work/guest.out" 2> "$work/guest.err" &
vm=$!
for _ in $(seq 50); do
  grep -q "waiting for a debugger" "$work/guest.err" && break
  sleep 0.1
done
cat > "$work/commands" <<GDB
set architecture i8086
target remote :$port
x/4xb 0x7c00
break *0x7c0d
continue
print/x \$eip
stepi
print/x \$eip
print/x \$eax & 0xff
continue
print/x \$eip
GDB
timeout 60 gdb -batch -nx -x "$work/commands" > "$work/gdb.out" 2>&1 || true
status=0
wait "$vm" || status=$?
cat "$work/gdb.out"
fail() { echo "FAIL: $1"; exit 1; }
grep -q "0x7c00:	0x31	0xc0	0x8e	0xd8" "$work/gdb.out" || fail "memory at 0x7c00 (xor ax, ax; mov ds, ax)"
grep -q "Breakpoint 1, 0x00007c0d" "$work/gdb.out" || fail "the breakpoint at 0x7c0d was not hit"
grep -q '^\$1 = 0x7c0d$' "$work/gdb.out" || fail "eip at the breakpoint"
grep -q '^\$2 = 0x7c0f$' "$work/gdb.out" || fail "eip after one step (test al, al is 2 bytes)"
grep -q '^\$3 = 0x72$' "$work/gdb.out" || fail "al holds the first character, 'r'"
grep -q '^\$4 = 0x7c0d$' "$work/gdb.out" || fail "continue reaches the breakpoint again"
[ "$status" = 11 ] || fail "the guest should finish (status 11) after gdb detaches, not $status"
grep -q "real mode ok" "$work/guest.out" || fail "the guest's output"

# A 64-bit guest: the amd64 register set, a step, and kill.
"$bulkhead" run ${accel:+--accel "$accel"} --flat "$guests/views.bin" --entry 0x100000 --mode 64 --gdb "$port" \
  > "$work/views.out" 2> "$work/views.err" &
vm=$!
for _ in $(seq 50); do
  grep -q "waiting for a debugger" "$work/views.err" && break
  sleep 0.1
done
timeout 60 gdb -batch -nx -ex 'set architecture i386:x86-64' -ex "target remote :$port" \
  -ex 'print/x $rip' -ex stepi -ex 'print/x $rsp' -ex 'print/x $cs' -ex kill \
  > "$work/gdb64.out" 2>&1 || true
status=0
wait "$vm" || status=$?
cat "$work/gdb64.out"
grep -q '^\$1 = 0x100000$' "$work/gdb64.out" || fail "rip at the 64-bit entry"
grep -q '^\$2 = 0x105000$' "$work/gdb64.out" || fail "rsp after the first instruction (mov rsp, ...)"
grep -q '^\$3 = 0x18$' "$work/gdb64.out" || fail "cs is the 64-bit code selector"
[ "$status" = 0 ] || fail "kill from gdb should end the VM with status 0, not $status"
echo "gdb stub: ok"
