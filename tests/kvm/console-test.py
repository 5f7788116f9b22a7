#!/usr/bin/env python3
"""The console on a terminal (kernel/console/terminal.h), driven through a pseudo-terminal that
is bulkhead's controlling terminal, as a shell would give it: raw input (no local echo; Ctrl-C
and Ctrl-Z reach the guest, not the VM), the Ctrl-A escapes, the monitor running bulkhead-ctl's
commands, Ctrl-A x quitting with status 130, and the terminal's settings put back after a quit,
a SIGTERM and a crash (SIGABRT).

usage: console-test.py BULKHEAD GUEST_FOLDER
"""
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time


class Console:
    def __init__(self, bulkhead, guests):
        self.master, slave = os.openpty()
        self.slave = slave
        self.before = termios.tcgetattr(slave)

        def controlling_terminal():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.vm = subprocess.Popen(
            [bulkhead, "run", "--accel", "emu", "--kernel", guests + "/echo.elf", "--device",
             "debug-exit"], stdin=slave, stdout=slave, stderr=slave,
            preexec_fn=controlling_terminal)
        self.output = b""

    def expect(self, text, seconds=20):
        deadline = time.monotonic() + seconds
        while text.encode() not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError("never saw %r; the terminal showed:\n%s"
                                     % (text, self.output.decode(errors="replace")))
            try:
                self.output += os.read(self.master, 65536)
            except OSError:
                raise AssertionError("the terminal closed before %r; it showed:\n%s"
                                     % (text, self.output.decode(errors="replace")))

    def type(self, data):
        os.write(self.master, data)

    def mark(self):
        self.output = b""

    def finish(self, seconds=10):
        status = self.vm.wait(seconds)
        # Drain what is left so the final lines can be checked.
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        return status

    def settings_restored(self):
        return termios.tcgetattr(self.slave) == self.before


def check(condition, message, console):
    if not condition:
        raise AssertionError(message + "; the terminal showed:\n"
                             + console.output.decode(errors="replace"))


def main():
    bulkhead, guests = sys.argv[1], sys.argv[2]

    console = Console(bulkhead, guests)
    console.expect("echo ready")
    console.expect("Ctrl-A x quits")
    check(not console.settings_restored(), "the terminal is not in raw mode while the VM runs",
          console)
    console.mark()
    console.type(b"ab")
    console.expect("[61]\r\n[62]")
    check(b"ab" not in console.output, "typed text was echoed by the host terminal", console)
    console.type(b"\x03\x1a")  # Ctrl-C, Ctrl-Z: the guest's
    console.expect("[03]\r\n[1a]")
    check(console.vm.poll() is None, "Ctrl-C or Ctrl-Z ended the VM", console)
    console.type(b"\x01\x01")  # Ctrl-A Ctrl-A: one Ctrl-A for the guest
    console.expect("[01]")
    console.type(b"\x01h")
    console.expect("Ctrl-A c")
    console.mark()
    console.type(b"\x01c")
    console.expect("(bulkhead) ")
    console.mark()
    console.type(b"devices\r")
    console.expect("serving\r\n(bulkhead) ")
    check(b"serial" in console.output, "the monitor's devices did not list serial", console)
    console.type(b"bogus\r")
    console.expect("unknown command bogus")
    console.type(b"\x01c")
    console.mark()
    console.type(b"z")
    console.expect("[7a]")
    check(b"[64]" not in console.output, "monitor typing reached the guest", console)
    console.type(b"\x01x")
    status = console.finish()
    check(status == 130, "Ctrl-A x ended the VM with status %s, not 130" % status, console)
    check(b"quit from the console" in console.output, "Ctrl-A x said nothing", console)
    check(console.settings_restored(), "the terminal was left raw after Ctrl-A x", console)

    for name, stop, expected in (("SIGTERM", signal.SIGTERM, 130),
                                 ("a crash (SIGABRT)", signal.SIGABRT, -signal.SIGABRT)):
        console = Console(bulkhead, guests)
        console.expect("echo ready")
        console.vm.send_signal(stop)
        status = console.finish()
        check(status == expected, "after %s the VM ended with %s" % (name, status), console)
        check(console.settings_restored(), "the terminal was left raw after " + name, console)
    print("console: ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as failure:
        print("FAIL: %s" % failure)
        sys.exit(1)
