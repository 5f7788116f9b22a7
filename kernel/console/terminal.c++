#include "kernel/console/terminal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>

#include <absl/strings/str_split.h>

namespace bulkhead {

namespace {

constexpr uint8_t CTRL_A = 0x01, CTRL_C = 0x03, CTRL_U = 0x15, BACKSPACE = 0x08, DEL = 0x7f;
constexpr size_t MAX_TYPED_AHEAD = 1 << 20;  // typed bytes waiting for the serial server

const char* const HELP = R"(
Ctrl-A x        quit (the VM ends with status 130)
Ctrl-A c        switch between the guest's console and the monitor
Ctrl-A h        this help
Ctrl-A Ctrl-A   send Ctrl-A to the guest
)";
const char* const PROMPT = "(bulkhead) ";

// The settings to put back, for the normal path and for the fatal-signal handler alike.
struct termios savedSettings;
std::atomic<bool> terminalRaw{false};

void restoreTerminal() {
  if (terminalRaw.exchange(false)) tcsetattr(STDIN_FILENO, TCSANOW, &savedSettings);
}

void restoreAndDie(int signal) {
  restoreTerminal();  // tcsetattr is async-signal-safe
  ::signal(signal, SIG_DFL);
  raise(signal);
}

void restoreOnEveryExit() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  atexit(restoreTerminal);
  struct sigaction action = {};
  action.sa_handler = restoreAndDie;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND | SA_NODEFER;
  for (int signal : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) sigaction(signal, &action, nullptr);
}

void writeAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the terminal went away: nothing more to show
    done += n;
  }
}

}  // namespace

EscapeReader::Key EscapeReader::take(uint8_t byte) {
  if (!escaped) {
    if (byte != CTRL_A) return Key::GUEST;
    escaped = true;
    return Key::NONE;
  }
  escaped = false;
  switch (byte) {
    case CTRL_A:
      return Key::GUEST;
    case 'x':
    case 'X':
      return Key::QUIT;
    case 'c':
    case 'C':
      return Key::MONITOR;
    case 'h':
    case 'H':
    case '?':
      return Key::HELP;
    default:
      return Key::NONE;
  }
}

std::string MonitorLine::take(uint8_t byte, bool& done, std::string& line) {
  done = false;
  if (byte == '\r' || byte == '\n') {
    done = true;
    line = std::move(text);
    text.clear();
    return "\r\n";
  }
  if (byte == BACKSPACE || byte == DEL) {
    if (text.empty()) return "";
    text.pop_back();
    return "\b \b";
  }
  if (byte == CTRL_U || byte == CTRL_C) {
    std::string erase;
    for (size_t i = 0; i < text.size(); ++i) erase += "\b \b";
    text.clear();
    return byte == CTRL_C ? "^C\r\n" + std::string(PROMPT) : erase;
  }
  if (byte < 0x20 || byte > 0x7e || text.size() >= 4096) return "";
  text += static_cast<char>(byte);
  return std::string(1, static_cast<char>(byte));
}

std::vector<std::string> commandWords(const std::string& line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

std::unique_ptr<TerminalConsole> TerminalConsole::open() {
  if (!isatty(STDIN_FILENO)) return nullptr;
  // A VM started in the background (`bulkhead run ... &`) leaves the terminal alone: changing
  // its settings would stop it with SIGTTOU.
  if (tcgetpgrp(STDIN_FILENO) != getpgrp()) return nullptr;
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) != 0) return nullptr;
  kj::AutoCloseFd readEnd(ends[0]), writeEnd(ends[1]);
  // Both ends are non-blocking: the server reads until EAGAIN, the core never waits on it.
  fcntl(ends[0], F_SETFL, O_NONBLOCK);
  fcntl(ends[1], F_SETFL, O_NONBLOCK);
  return std::unique_ptr<TerminalConsole>(new TerminalConsole(kj::mv(readEnd), kj::mv(writeEnd)));
}

TerminalConsole::TerminalConsole(kj::AutoCloseFd guestRead, kj::AutoCloseFd guestWrite)
    : guestRead(kj::mv(guestRead)), guestWrite(kj::mv(guestWrite)) {}

TerminalConsole::~TerminalConsole() { restore(); }

void TerminalConsole::restore() { restoreTerminal(); }

kj::Promise<void> TerminalConsole::serve(kj::UnixEventPort& port, Hooks serveHooks) {
  hooks = std::move(serveHooks);
  if (tcgetattr(STDIN_FILENO, &savedSettings) == 0) {
    restoreOnEveryExit();
    struct termios raw = savedSettings;
    // Input raw, as cfmakeraw() makes it; output still turns \n into \r\n (as QEMU keeps it),
    // so the core's own messages stay readable.
    raw.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_lflag &= ~(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag = (raw.c_cflag & ~(CSIZE | PARENB)) | CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) terminalRaw = true;
  }
  writeAll(STDERR_FILENO, "bulkhead: Ctrl-A x quits, Ctrl-A h lists the console's keys\r\n");
  terminal = std::make_unique<kj::UnixEventPort::FdObserver>(
      port, STDIN_FILENO, kj::UnixEventPort::FdObserver::OBSERVE_READ);
  pipe = std::make_unique<kj::UnixEventPort::FdObserver>(
      port, guestWrite.get(), kj::UnixEventPort::FdObserver::OBSERVE_WRITE);
  return readLoop().exclusiveJoin(flushLoop());
}

kj::Promise<void> TerminalConsole::readLoop() {
  return terminal->whenBecomesReadable().then([this]() -> kj::Promise<void> {
    // Everything typed so far (the observer is edge-triggered).
    for (;;) {
      struct pollfd ready = {STDIN_FILENO, POLLIN, 0};
      if (poll(&ready, 1, 0) <= 0 || !(ready.revents & POLLIN)) break;
      uint8_t buffer[4096];
      ssize_t n = read(STDIN_FILENO, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return kj::NEVER_DONE;  // the terminal hung up: SIGHUP ends the VM
      for (ssize_t i = 0; i < n; ++i) typed(buffer[i]);
    }
    flushGuest();
    return readLoop();
  });
}

kj::Promise<void> TerminalConsole::flushLoop() {
  return pipe->whenBecomesWritable().then([this]() {
    flushGuest();
    return flushLoop();
  });
}

void TerminalConsole::typed(uint8_t byte) {
  switch (escapes.take(byte)) {
    case EscapeReader::Key::NONE:
      return;
    case EscapeReader::Key::QUIT:
      show("\r\n");
      hooks.quit("quit from the console (Ctrl-A x)");
      return;
    case EscapeReader::Key::HELP:
      show(std::string(HELP) + (monitoring ? PROMPT : ""));
      return;
    case EscapeReader::Key::MONITOR:
      monitoring = !monitoring;
      show(monitoring ? "\r\nbulkhead monitor: the commands of bulkhead-ctl (help lists them); "
                        "Ctrl-A c goes back to the guest\r\n" +
                            std::string(PROMPT)
                      : "\r\n");
      return;
    case EscapeReader::Key::GUEST:
      break;
  }
  if (!monitoring) {
    if (toGuest.size() < MAX_TYPED_AHEAD) toGuest += static_cast<char>(byte);
    return;
  }
  if (commandRunning) return;  // one command at a time: keys typed meanwhile are dropped
  bool done = false;
  std::string line;
  show(monitorLine.take(byte, done, line));
  if (done) runMonitorLine(line);
}

void TerminalConsole::runMonitorLine(const std::string& line) {
  std::vector<std::string> words = commandWords(line);
  if (words.empty()) {
    show(PROMPT);
    return;
  }
  if (words[0] == "help") {
    std::string text = std::string("commands:\n") + CONTROL_COMMANDS_HELP + HELP;
    show(text + PROMPT);
    return;
  }
  if (words[0] == "quit" || words[0] == "q") {
    hooks.quit("quit from the console's monitor");
    return;
  }
  commandRunning = true;
  pending = hooks.command(words)
                .then(
                    [this](CommandResult result) {
                      show(result.error.empty() ? result.text
                                                : result.error + "; type help for the commands\n");
                    },
                    [this](kj::Exception&& exception) {
                      show(std::string("the command failed: ") + exception.getDescription().cStr() +
                           "\n");
                    })
                .then([this]() {
                  commandRunning = false;
                  show(PROMPT);
                })
                .eagerlyEvaluate(nullptr);
}

void TerminalConsole::show(const std::string& text) {
  // The terminal's output still turns \n into \r\n.
  writeAll(STDOUT_FILENO, text);
}

void TerminalConsole::flushGuest() {
  while (!toGuest.empty()) {
    ssize_t n = write(guestWrite.get(), toGuest.data(), toGuest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // full: the pipe observer calls again when it has room
    toGuest.erase(0, n);
  }
}

}  // namespace bulkhead
