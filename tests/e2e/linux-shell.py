#!/usr/bin/env python3
"""e2e: Debian's Linux kernel boots under the software CPU (--accel emu) to a busybox shell on the
serial console; the test types a command at that shell, reads its output back from the serial
line, and has the guest end the VM (reboot -f: the i8042 reset line, status 0).

Arguments: the bulkhead binary, the source tree. Uses tools/guest-images' vmlinux and initramfs
(Debian's packages, fetched into ~/.cache/bulkhead or $BULKHEAD_IMAGE_CACHE).
"""
import os
import selectors
import subprocess
import sys
import time

TIMEOUT = 240  # seconds for the whole run; about 30 s here


def main():
    bulkhead, tree = sys.argv[1], sys.argv[2]
    cache = os.environ.get("BULKHEAD_IMAGE_CACHE", os.path.expanduser("~/.cache/bulkhead"))
    images = subprocess.run([os.path.join(tree, "tools/guest-images"), "--cache", cache],
                            capture_output=True, text=True)
    if images.returncode != 0:
        print(f"FAIL: tools/guest-images: {images.stderr.strip()}")
        return 1
    _, initrd, vmlinux = images.stdout.split()
    marker = f"bulkhead-e2e-{os.getpid()}"
    guest = subprocess.Popen(
        [bulkhead, "run", "--accel", "emu", "--memory", "256M", "--kernel", vmlinux,
         "--initrd", initrd, "--cmdline", "console=ttyS0 quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    selector = selectors.DefaultSelector()
    selector.register(guest.stdout, selectors.EVENT_READ)
    output = b""
    typed = False
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if not selector.select(timeout=1):
            continue
        chunk = os.read(guest.stdout.fileno(), 4096)
        if not chunk:
            break
        output += chunk
        if not typed and b"bulkhead-initramfs: up" in output:
            # The shell reads the serial line: the arithmetic proves a shell ran it.
            guest.stdin.write(f"echo {marker}-$((6 * 7)); uname -s\nreboot -f\n".encode())
            guest.stdin.flush()
            typed = True
    else:
        guest.kill()
    status = guest.wait()
    text = output.decode(errors="replace")
    failures = []
    if not typed:
        failures.append("the initramfs never said it was up")
    if f"{marker}-42" not in text:
        failures.append(f"the shell's answer ({marker}-42) never came back on the serial line")
    if "\nLinux" not in text.replace("\r", ""):
        failures.append("uname -s did not print Linux")
    if status != 0:
        failures.append(f"bulkhead exited with status {status}, not 0")
    if failures:
        print(text[-3000:])
        print("FAIL: " + "; ".join(failures))
        return 1
    print(f"ok: booted, ran a command through the serial console, ended with status 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
