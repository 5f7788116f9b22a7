#!/usr/bin/env python3
"""The README's doc test: runs every command in its ```sh blocks as written, from a scratch
folder that sees the checkout's build/ and tools/, and checks what each line's comment says:

  exit status N              the command's status (0 when not said)
  prints "TEXT"              its output (stdout and stderr) contains TEXT
  type "TEXT" at "PROMPT"    once PROMPT appears, TEXT and a newline go to its standard input
  runs until Ctrl-C          it runs in the background while the block's next lines run; then
                             it gets SIGINT and must end with status 130
  waits for ...              it runs in the background; at the end of the block it must end by
                             itself (with the status and output said)

A background command is ready when its --control socket exists or it has printed something.
One line is not run: `tools/setup test`, which is the CI run this test is part of.

usage: readme-test.py SOURCE_ROOT BUILD_ROOT
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

NOT_RUN = {"tools/setup test": "it is the CI run this test belongs to"}
TIMEOUT = 600


class Line:
    def __init__(self, number, text):
        self.number = number
        match = re.search(r"\s+#\s", text)
        self.command = (text[:match.start()] if match else text).strip()
        comment = text[match.end():] if match else ""
        status = re.search(r"exit status (\d+)", comment)
        self.status = int(status.group(1)) if status else 0
        self.prints = re.findall(r'prints "([^"]*)"', comment)
        typed = re.search(r'type "([^"]*)" at "([^"]*)"', comment)
        self.typed = typed.groups() if typed else None
        self.until_interrupt = "runs until Ctrl-C" in comment
        self.background = self.until_interrupt or "waits for" in comment
        if self.until_interrupt:
            self.status = 130


def blocks(readme):
    """The ```sh blocks, each a list of Lines (continued lines joined)."""
    found, current, pending = [], None, ""
    for number, raw in enumerate(open(readme), 1):
        text = raw.rstrip("\n")
        if current is None:
            if text.strip() == "```sh":
                current = []
            continue
        if text.strip() == "```":
            found.append(current)
            current = None
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text, pending = pending + text, ""
        if text.strip():
            current.append(Line(number, text))
    return found


class Process:
    """A command whose output is collected as it comes (so a prompt can be waited for)."""

    def __init__(self, line, folder):
        self.line = line
        self.child = subprocess.Popen(["bash", "-c", line.command], cwd=folder,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
        self.output = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        while True:
            chunk = self.child.stdout.read1(65536)
            if not chunk:
                return
            with self.lock:
                self.output += chunk

    def text(self):
        with self.lock:
            return self.output.decode(errors="replace")

    def wait_for(self, predicate, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate() or self.child.poll() is not None:
                return predicate()
            time.sleep(0.05)
        return False

    def finish(self, seconds):
        try:
            status = self.child.wait(seconds)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
            return "did not end within %d s" % seconds
        self.reader.join(5)
        return check(self.line, status, self.text())


def check(line, status, output):
    if status != line.status:
        return "exit status %d, the README says %d" % (status, line.status)
    for text in line.prints:
        if text not in output:
            return "did not print \"%s\"" % text
    return None


def run_block(block, folder, failures):
    background = []
    for line in block:
        if line.command in NOT_RUN:
            print("README:%d: not run (%s): %s" % (line.number, NOT_RUN[line.command],
                                                   line.command))
            continue
        started = time.monotonic()
        process = Process(line, folder)
        if line.background:
            control = re.search(r"--control (\S+)", line.command)
            socket = os.path.join(folder, control.group(1)) if control else None
            ready = process.wait_for(lambda: bool(process.text()) or
                                     (socket is not None and os.path.exists(socket)), 30)
            if not ready:
                failures.append((line, "was not ready within 30 s: " + process.text()))
            background.append(process)
            continue
        if line.typed:
            text, prompt = line.typed
            if process.wait_for(lambda: prompt in process.text(), TIMEOUT):
                process.child.stdin.write(text.encode() + b"\n")
                process.child.stdin.flush()
        process.child.stdin.close()
        problem = process.finish(TIMEOUT)
        print("README:%d (%.1f s): %s" % (line.number, time.monotonic() - started, line.command),
              flush=True)
        if problem:
            failures.append((line, problem + "\n" + process.text()[-3000:]))
    for process in background:
        if process.line.until_interrupt:
            process.child.send_signal(signal.SIGINT)
        process.child.stdin.close()
        problem = process.finish(60)
        if problem:
            failures.append((process.line, problem + "\n" + process.text()[-3000:]))


def main():
    source, build = sys.argv[1], sys.argv[2]
    readme = os.path.join(source, "README.md")
    failures = []
    found = blocks(readme)
    if not found:
        print("FAIL: no ```sh blocks in %s" % readme)
        return 1
    with tempfile.TemporaryDirectory(prefix="bulkhead-readme-") as folder:
        os.symlink(build, os.path.join(folder, "build"))
        os.symlink(os.path.join(source, "tools"), os.path.join(folder, "tools"))
        for block in found:
            run_block(block, folder, failures)
    for line, problem in failures:
        print("FAIL README:%d: %s\n  %s" % (line.number, line.command, problem))
    ran = sum(len(b) for b in found) - len(NOT_RUN)
    print("readme: %d commands, %d failed" % (ran, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
