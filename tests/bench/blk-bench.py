#!/usr/bin/env python3
"""virtio-blk throughput, bulkhead against QEMU, and the resident memory of bulkhead's processes.

    blk-bench.py BULKHEAD GUEST_DIR

Runs guestlib's blk-bench guest (sequential 64 KiB and random 4 KiB writes and reads, timed in
the guest with the TSC) on bulkhead and on qemu-system-x86_64 with virtio-blk-pci, both under
KVM, on the same 16 MiB image, alternating, three runs each; prints each VMM's median cycles per
phase and the throughput ratio bulkhead/QEMU (goal >= 1.0). Without qemu-system-x86_64 it says
how to get it and prints bulkhead's figures alone.

Memory: while bulkhead runs, samples the core and each device server every 5 ms and prints the
largest of three measures, guest RAM and the channel's rings (shared memory) left out of all:
  USS  private pages (Private_Clean + Private_Dirty, less shared memory): what the process
       alone costs, freed when it exits; the goals (core <= 8 MiB, each server <= 2 MiB) are
       judged on it
  PSS  private pages plus shared-library pages divided among the processes that map them
  RSS  every mapped page whole, each shared library counted in every process

Figures from a nested, PVM-backed KVM say nothing about real hardware; compare the ratios.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PHASES = ["seq-write", "seq-read", "rand-write", "rand-read"]
RUNS = 3


def parse(output):
    found = dict(re.findall(r"blk-bench (\S+) cycles=(\d+)", output))
    if set(found) != set(PHASES):
        raise SystemExit(f"the guest did not report every phase:\n{output}")
    return {phase: int(found[phase]) for phase in PHASES}


def memory_kib(pid):
    """(USS, PSS, RSS) in KiB over every mapping but shared memory (memfds: guest RAM, rings,
    state regions); None once the process is gone."""
    uss = pss = rss = 0
    shared_memory = False
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    name = fields[5] if len(fields) > 5 else ""
                    shared_memory = name.startswith("/memfd:") or name.startswith("/dev/shm")
                elif not shared_memory and fields[0] in ("Private_Clean:", "Private_Dirty:"):
                    uss += int(fields[1])
                elif not shared_memory and fields[0] == "Pss:":
                    pss += int(fields[1])
                elif not shared_memory and fields[0] == "Rss:":
                    rss += int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return uss, pss, rss


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def run_bulkhead(bulkhead, guest, image, peaks):
    process = subprocess.Popen(
        [bulkhead, "run", "--kernel", guest, "--device", "debug-exit", "--disk", f"path={image}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sample():
        while not done.is_set():
            servers = [(c, comm(c)) for c in children(process.pid)]
            # A child still called "bulkhead" is between fork and exec.
            for pid, name in [(process.pid, "core")] + [s for s in servers if s[1] != "bulkhead"]:
                kib = memory_kib(pid)
                if kib is not None:
                    old = peaks.get(name, (0, 0, 0))
                    peaks[name] = tuple(max(a, b) for a, b in zip(old, kib))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output, _ = process.communicate(timeout=300)
    done.set()
    sampler.join()
    return parse(output)


def run_qemu(qemu, guest, image):
    output = subprocess.run(
        [qemu, "-accel", "kvm", "-m", "64M", "-nographic", "-no-reboot", "-kernel", guest,
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
         "-drive", f"file={image},format=raw,if=none,id=d0",
         "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"],
        capture_output=True, text=True, timeout=300).stdout
    return parse(output)


def main():
    bulkhead, guest_dir = sys.argv[1], sys.argv[2]
    guest = os.path.join(guest_dir, "blk-bench.elf")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP: no usable /dev/kvm")
        return 0
    qemu = shutil.which("qemu-system-x86_64")
    work = tempfile.mkdtemp()
    image = os.path.join(work, "bench.img")
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    ours, theirs, peaks = [], [], {}
    for _ in range(RUNS):
        ours.append(run_bulkhead(bulkhead, guest, image, peaks))
        if qemu:
            theirs.append(run_qemu(qemu, guest, image))
    shutil.rmtree(work)

    print(f"virtio-blk, guestlib driver, one request at a time; median of {RUNS} runs (TSC cycles)")
    print(f"{'phase':<12}{'bulkhead':>14}{'qemu':>14}{'ratio':>10}")
    for phase in PHASES:
        mine = statistics.median(run[phase] for run in ours)
        if theirs:
            other = statistics.median(run[phase] for run in theirs)
            print(f"{phase:<12}{mine:>14}{other:>14}{other / mine:>9.2f}x")
        else:
            print(f"{phase:<12}{mine:>14}{'-':>14}{'-':>10}")
    if not theirs:
        print("no qemu-system-x86_64: install Debian's qemu-system-x86 for the comparison")
    print("ratio = bulkhead throughput / QEMU throughput (goal >= 1.0)")
    print()
    print("memory, guest RAM and rings excluded (largest seen while running)")
    print(f"{'process':<18}{'USS':>10}{'PSS':>10}{'RSS':>10}   goal (USS)")
    for name, (uss, pss, rss) in sorted(peaks.items()):
        goal = 8192 if name == "core" else 2048
        print(f"{name:<18}{uss / 1024:>6.2f} MiB{pss / 1024:>6.2f} MiB{rss / 1024:>6.2f} MiB"
              f"   <= {goal // 1024} MiB {'met' if uss <= goal else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
