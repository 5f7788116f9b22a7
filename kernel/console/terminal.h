// The host terminal as a VM's console (--serial stdio with a terminal on standard input), as
// `qemu -nographic` users know it: raw input while the VM runs, so Ctrl-C, Ctrl-Z, arrows and
// Tab reach the guest; output as the guest writes it; and Ctrl-A as an escape prefix:
//
//   Ctrl-A x        quit (the VM ends with status 130, as on SIGINT)
//   Ctrl-A c        switch to the monitor and back: a prompt taking bulkhead-ctl's commands
//   Ctrl-A h        these keys
//   Ctrl-A Ctrl-A   a Ctrl-A for the guest
//
// The core reads the terminal and hands the guest's bytes to the serial server through a pipe
// (the server never sees the terminal). The terminal's settings are restored on every exit
// path the process lives through: a normal end, a signal that ends the VM, an uncaught error or
// a crash (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT). After a SIGKILL, `stty sane` restores it.
#pragma once

#include <termios.h>

#include <kj/async-unix.h>
#include <kj/io.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernel/control/commands.h"

namespace bulkhead {

// Ctrl-A escapes in typed bytes; pure, so the unit tests drive it byte by byte.
class EscapeReader {
 public:
  enum class Key { GUEST, QUIT, MONITOR, HELP, NONE };
  // What `byte` means: GUEST (send `byte` on), an escape, or NONE (the prefix itself, or an
  // unknown escape, which is dropped).
  Key take(uint8_t byte);

 private:
  bool escaped = false;
};

// The monitor's line editor: printable bytes, Backspace, Ctrl-U (erase the line), Ctrl-C
// (abandon it), Enter (run it).
class MonitorLine {
 public:
  // Takes one byte; returns what to echo. `done` becomes true with the finished line in `line`.
  std::string take(uint8_t byte, bool& done, std::string& line);

 private:
  std::string text;
};

// The monitor's command words: `line` split at spaces.
std::vector<std::string> commandWords(const std::string& line);

class TerminalConsole {
 public:
  // The console on standard input, when it is a terminal whose foreground this process is;
  // nullptr otherwise.
  static std::unique_ptr<TerminalConsole> open();
  ~TerminalConsole();

  // The end the serial server reads the guest's input from (taken once).
  kj::AutoCloseFd takeGuestInput() { return kj::mv(guestRead); }

  struct Hooks {
    std::function<void(const std::string& why)> quit;
    std::function<kj::Promise<CommandResult>(std::vector<std::string>)> command;
  };
  // Puts the terminal in raw mode and serves it until the VM ends.
  kj::Promise<void> serve(kj::UnixEventPort& port, Hooks hooks);
  // Puts the terminal back as it was (also done by the destructor).
  void restore();

 private:
  TerminalConsole(kj::AutoCloseFd guestRead, kj::AutoCloseFd guestWrite);
  kj::Promise<void> readLoop();
  kj::Promise<void> flushLoop();
  void typed(uint8_t byte);
  void runMonitorLine(const std::string& line);
  void show(const std::string& text);
  void flushGuest();

  kj::AutoCloseFd guestRead, guestWrite;
  std::unique_ptr<kj::UnixEventPort::FdObserver> terminal, pipe;
  Hooks hooks;
  EscapeReader escapes;
  MonitorLine monitorLine;
  bool monitoring = false;
  bool commandRunning = false;
  std::string toGuest;  // typed bytes the pipe has not taken yet
  kj::Promise<void> pending = kj::READY_NOW;
};

}  // namespace bulkhead
