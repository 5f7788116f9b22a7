#!/usr/bin/env python3
"""e2e: Debian's Linux kernel boots under the software CPU (--accel emu) to a busybox shell on the
serial console; the test types a command at that shell, reads its output back from the serial
line, and has the guest end the VM (reboot -f: the i8042 reset line, status 0).

    linux-shell.py BULKHEAD SOURCE_TREE [--bios]

Direct boot: bulkhead loads the vmlinux and the initramfs itself. --bios: Debian's SeaBIOS boots
Debian's GRUB from a disk built by tools/grub-image --linux, and GRUB loads the bzImage and the
initramfs from the disk's partition through the BIOS (virtio-blk); Linux then finds that disk
too, through the MP table SeaBIOS wrote. Uses tools/guest-images' kernel and initramfs (Debian's
packages, fetched into ~/.cache/bulkhead or $BULKHEAD_IMAGE_CACHE); --bios skips, saying why,
without SeaBIOS or grub-pc-bin.
"""
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time

TIMEOUT = 400  # seconds for the whole run; about 30 s here, 100 s with --bios (decompression)


def guest_command(bulkhead, tree, bios, work):
    """The bulkhead command line for this boot, or an exit status (77: skip) and a message."""
    cache = os.environ.get("BULKHEAD_IMAGE_CACHE", os.path.expanduser("~/.cache/bulkhead"))
    images = subprocess.run([os.path.join(tree, "tools/guest-images"), "--cache", cache],
                            capture_output=True, text=True)
    if images.returncode != 0:
        return 1, f"FAIL: tools/guest-images: {images.stderr.strip()}"
    bzimage, initrd, vmlinux = images.stdout.split()
    run = [bulkhead, "run", "--accel", "emu", "--memory", "256M"]
    if not bios:
        return run + ["--kernel", vmlinux, "--initrd", initrd, "--cmdline",
                      "console=ttyS0 quiet"], None
    if not os.access("/usr/share/seabios/bios-256k.bin", os.R_OK):
        return 77, "SKIP: install Debian's seabios (tools/setup does)"
    if shutil.which("grub-mkimage") is None:
        return 77, "SKIP: install Debian's grub-pc-bin (tools/setup does)"
    disk = os.path.join(work, "linux.img")
    built = subprocess.run([os.path.join(tree, "tools/grub-image"), "--linux", bzimage, disk,
                            "--initrd", initrd, "--cmdline", "console=ttyS0 quiet"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        return 1, f"FAIL: tools/grub-image: {built.stderr.strip()}"
    return run + ["--bios", "seabios", "--disk", f"path={disk}"], None


def main():
    bulkhead, tree = sys.argv[1], sys.argv[2]
    bios = sys.argv[3:] == ["--bios"]
    with tempfile.TemporaryDirectory() as work:
        command, message = guest_command(bulkhead, tree, bios, work)
        if message is not None:
            print(message)
            return command
        return boot(command, bios)


def boot(command, bios):
    marker = f"bulkhead-e2e-{os.getpid()}"
    guest = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
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
            guest.stdin.write(
                f"echo {marker}-$((6 * 7)); uname -s; cat /proc/cmdline\nreboot -f\n".encode())
            guest.stdin.flush()
            typed = True
    else:
        guest.kill()
    status = guest.wait()
    text = output.decode(errors="replace")
    failures = []
    if bios and "BOOT_IMAGE=/vmlinuz console=ttyS0" not in text:
        failures.append("Linux's command line is not the one GRUB passes (BOOT_IMAGE=...)")
    if "terminate called" in text:
        failures.append("a process of the VM died of an uncaught exception")
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
    print("ok: booted%s, ran a command through the serial console, ended with status 0" %
          (" through SeaBIOS and GRUB" if bios else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
