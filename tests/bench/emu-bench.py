#!/usr/bin/env python3
"""The software CPU's speed: guest instructions per second, and its time against KVM's.

    emu-bench.py BULKHEAD GUEST_DIR

1. guestlib's compute guest (integer mixing, division, a 256 KiB memory scramble; no I/O in the
   loop) under --accel emu, three runs: the instructions the software CPU retired per second of
   running, as it reports them (BULKHEAD_EMU_STATS). Target (issue #5, stage 1): >= 50 million.
2. The same guest, a shorter run, under --accel emu and --accel kvm side by side, alternating,
   three runs each: the median wall time of each and the ratio kvm/emu (> 1: emu is faster).
   On this project's PVM-backed KVM guest kernel-mode code is emulated by KVM itself, so the
   ratio says nothing about a host with hardware virtualization.
3. Linux boot to power-off against qemu-system-x86_64 -accel tcg: not yet measured; the software
   CPU does not boot Linux yet (issue #5, stage 2). Printed as such.
"""
import os
import re
import statistics
import subprocess
import sys
import time


def run(bulkhead, guest_dir, accel, rounds, stats=False):
    env = dict(os.environ)
    if stats:
        env["BULKHEAD_EMU_STATS"] = "1"
    start = time.monotonic()
    result = subprocess.run(
        [bulkhead, "run", "--accel", accel, "--kernel", os.path.join(guest_dir, "compute.elf"),
         "--cmdline", "rounds=%d" % rounds, "--device", "debug-exit"],
        capture_output=True, text=True, env=env, timeout=900)
    elapsed = time.monotonic() - start
    if result.returncode != 1 or "compute hash=" not in result.stdout:
        sys.exit("emu-bench: the compute guest failed under %s (status %d): %s" %
                 (accel, result.returncode, result.stderr.strip()[-400:]))
    return elapsed, result


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: emu-bench.py BULKHEAD GUEST_DIR")
    bulkhead, guest_dir = sys.argv[1], sys.argv[2]

    rates = []
    for _ in range(3):
        _, result = run(bulkhead, guest_dir, "emu", 10000, stats=True)
        match = re.search(r"retired (\d+) instructions in ([\d.]+) s", result.stderr)
        if not match:
            sys.exit("emu-bench: no instruction count in: " + result.stderr.strip()[-400:])
        rates.append(int(match.group(1)) / float(match.group(2)) / 1e6)
    print("emu: compute guest, %.1f million instructions/s (median of %s; target >= 50)" %
          (statistics.median(rates), ", ".join("%.1f" % r for r in rates)))

    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("kvm: /dev/kvm is not usable here; no side-by-side ratio")
    else:
        times = {"emu": [], "kvm": []}
        hashes = set()
        for _ in range(3):
            for accel in ("kvm", "emu"):
                elapsed, result = run(bulkhead, guest_dir, accel, 300)
                times[accel].append(elapsed)
                hashes.add(result.stdout)
        if len(hashes) != 1:
            sys.exit("emu-bench: the backends computed different results: %s" % hashes)
        kvm, emu = statistics.median(times["kvm"]), statistics.median(times["emu"])
        print("compute guest, 300 rounds, wall time: kvm %.2f s, emu %.2f s; kvm/emu = %.2f "
              "(same result on both)" % (kvm, emu, kvm / emu))
    print("linux boot vs qemu-system-x86_64 -accel tcg: not measured; the software CPU does not "
          "boot Linux yet (issue #5, stage 2)")


if __name__ == "__main__":
    main()
