// The control commands in words, as bulkhead-ctl and the console's monitor both take them:
// "devices", "stats", "faults load PLAN", "regs", "walk VADDR", ... (commands.c++ has the
// list). Parsing and printing live here once; the caller supplies the Control capability (a
// socket's, or the VM's own in the monitor).
#pragma once

#include <kj/async.h>

#include <string>
#include <vector>

#include "control.capnp.h"

namespace bulkhead {

// One line per command: "  devices              each device: ...", for help texts.
extern const char* const CONTROL_COMMANDS_HELP;

struct CommandResult {
  std::string text;   // what the command prints
  std::string error;  // why it was refused (bad words, unreadable plan file); "" if it ran
};

// Runs `words` against `control`. Bad words resolve to an `error`; a failed call rejects.
kj::Promise<CommandResult> runControlCommand(protocol::Control::Client& control,
                                             const std::vector<std::string>& words);

}  // namespace bulkhead
