#!/usr/bin/env python3
"""The software CPU's speed: guest instructions per second, and its time against KVM's.

    emu-bench.py BULKHEAD GUEST_DIR SOURCE_TREE

1. guestlib's compute guest (integer mixing, division, a 256 KiB memory scramble; no I/O in the
   loop) under --accel emu, three runs: the instructions the software CPU retired per second of
   running, as it reports them (BULKHEAD_EMU_STATS). Target (issue #5, stage 1): >= 50 million.
2. The same guest, a shorter run, under --accel emu and --accel kvm side by side, alternating,
   three runs each: the median wall time of each and the ratio kvm/emu (> 1: emu is faster).
   On this project's PVM-backed KVM guest kernel-mode code is emulated by KVM itself, so the
   ratio says nothing about a host with hardware virtualization.
3. Debian's Linux (tools/guest-images) with the busybox initramfs and 256 MiB, booted to the
   end of `uname -r` and the reset that ends the VM, under bulkhead --accel emu and under
   qemu-system-x86_64 -accel tcg (Debian's package; its software CPU translates guest code to
   host code, this one interprets it), alternating, two runs each: wall times and the ratio
   emu/QEMU for each kernel file, the same file on both sides: the vmlinux (QEMU boots it
   through PVH) and the bzImage (which spends most of its instructions decompressing itself).
   Target (issue #5): <= 3x. Without qemu-system-x86_64, or without the images, it says so.
"""
import os
import re
import shutil
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


def boot_linux(command, label):
    """Wall time of one boot to the end of the VM; exits the benchmark if it did not finish."""
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if "bulkhead-initramfs: exit 0" not in result.stdout:
        sys.exit("emu-bench: %s did not finish the boot (status %d): %s" %
                 (label, result.returncode, (result.stdout + result.stderr).strip()[-600:]))
    return elapsed


def linux_boot(bulkhead, tree):
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        print("linux boot: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86); "
              "no ratio")
        return
    cache = os.environ.get("BULKHEAD_IMAGE_CACHE", os.path.expanduser("~/.cache/bulkhead"))
    images = subprocess.run([os.path.join(tree, "tools/guest-images"), "--cache", cache],
                            capture_output=True, text=True)
    if images.returncode != 0:
        print("linux boot: tools/guest-images failed, no ratio: " + images.stderr.strip())
        return
    bzimage, initrd, vmlinux = images.stdout.split()
    cmdline = 'console=ttyS0 quiet bulkhead.run="uname -r"'
    for name, kernel in (("vmlinux", vmlinux), ("bzImage", bzimage)):
        times = {"emu": [], "qemu": []}
        for _ in range(2):
            times["qemu"].append(boot_linux(
                [qemu, "-accel", "tcg", "-m", "256M", "-nographic", "-no-reboot", "-kernel",
                 kernel, "-initrd", initrd, "-append", cmdline], "QEMU with the " + name))
            times["emu"].append(boot_linux(
                [bulkhead, "run", "--accel", "emu", "--memory", "256M", "--kernel", kernel,
                 "--initrd", initrd, "--cmdline", cmdline], "bulkhead with the " + name))
        emu, tcg = statistics.median(times["emu"]), statistics.median(times["qemu"])
        print("linux boot (%s, 256 MiB, to the end of uname -r): qemu -accel tcg %.2f s, "
              "bulkhead --accel emu %.2f s; emu/qemu = %.1fx (target <= 3)" %
              (name, tcg, emu, emu / tcg))


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: emu-bench.py BULKHEAD GUEST_DIR SOURCE_TREE")
    bulkhead, guest_dir, tree = sys.argv[1], sys.argv[2], sys.argv[3]

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
    linux_boot(bulkhead, tree)


if __name__ == "__main__":
    main()
