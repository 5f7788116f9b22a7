#!/usr/bin/env python3
"""A hostile guest against the software CPU's code cache: code-spray.elf calls every byte
offset of 2 MiB of code, so the core decodes about two million blocks (some 4 GiB of decoded
instructions if nothing were freed). The core's peak RSS must stay under the guest's memory plus
the code cache's bound (Cpu::CODE_CACHE_BYTES, 256 MiB) plus 96 MiB for everything else, and the
guest must finish: the cache was flushed and refilled under it.

usage: code-spray-test.py BULKHEAD GUEST_FOLDER
"""
import resource
import subprocess
import sys

GUEST_MIB = 64
BOUND_MIB = GUEST_MIB + 256 + 96


def main():
    bulkhead, guests = sys.argv[1], sys.argv[2]
    run = subprocess.run([bulkhead, "run", "--accel", "emu", "--memory", "%dM" % GUEST_MIB,
                          "--kernel", guests + "/code-spray.elf", "--cmdline", "mib=2",
                          "--device", "debug-exit"],
                         capture_output=True, text=True, timeout=300)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("code spray: status %d, the core's peak RSS %.0f MiB (bound %d MiB)"
          % (run.returncode, peak_mib, BOUND_MIB))
    failures = []
    if run.returncode != 1 or "code spray done calls=2097152" not in run.stdout:
        failures.append("the guest did not finish: status %d\n%s%s"
                        % (run.returncode, run.stdout, run.stderr))
    if peak_mib > BOUND_MIB:
        failures.append("the core's peak RSS %.0f MiB is over %d MiB" % (peak_mib, BOUND_MIB))
    for failure in failures:
        print("FAIL: " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
