// bulkhead-ctl: talks to a running VM's control socket (bulkhead run --control SOCKET).
#include <cstdio>
#include <string>
#include <vector>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "control.capnp.h"
#include "kernel/base/kj-status.h"
#include "kernel/control/commands.h"

namespace {

// Each answer waits at most this long: a socket that is not Bulkhead's may never answer.
constexpr unsigned ANSWER_SECONDS = 5;

template <typename P>
auto answer(kj::AsyncIoContext& io, P&& promise) {
  return io.provider->getTimer().timeoutAfter(ANSWER_SECONDS * kj::SECONDS, kj::mv(promise));
}

const char* const USAGE_HEAD = R"(bulkhead-ctl: control a running bulkhead VM

usage: bulkhead-ctl SOCKET COMMAND, where COMMAND is one of
)";
const char* const USAGE_TAIL = R"(
The views pause every vCPU for a moment, so what they show is consistent. The same commands
work in the console's monitor (Ctrl-A c under --serial stdio on a terminal).

SOCKET is the path given to `bulkhead run --control`. Fault plans: docs/fault-injection.md.
)";

int fail(const std::string& message, int status = 2) {
  fprintf(stderr, "bulkhead-ctl: %s\n", message.c_str());
  return status;
}

int run(const std::string& socket, const std::vector<std::string>& command) {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> stream;
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                 stream = io.provider->getNetwork()
                              .parseAddress(kj::str("unix:", socket))
                              .wait(io.waitScope)
                              ->connect()
                              .wait(io.waitScope);
               })) {
    return fail("cannot connect to " + socket + " (is bulkhead running with --control " + socket +
                "?)");
  }
  capnp::TwoPartyClient client(*stream);
  auto control = client.bootstrap().castAs<bulkhead::protocol::Control>();
  bulkhead::CommandResult result;
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                 result =
                     answer(io, bulkhead::runControlCommand(control, command)).wait(io.waitScope);
               })) {
    if (exception->getType() == kj::Exception::Type::DISCONNECTED ||
        exception->getType() == kj::Exception::Type::OVERLOADED) {
      // A socket that is not Bulkhead's, or a VM that ended or hangs, gives no Cap'n Proto answer.
      return fail(socket + " did not answer as a Bulkhead control socket within " +
                  std::to_string(ANSWER_SECONDS) +
                  " s (did the VM end, or is it another kind of "
                  "socket?)");
    }
    return fail(bulkhead::describeException(*exception), 1);
  }
  if (!result.error.empty()) return fail(result.error + "; see bulkhead-ctl --help");
  fputs(result.text.c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> arguments(argv + 1, argv + argc);
  if (arguments.empty() || arguments[0] == "--help" || arguments[0] == "-h") {
    FILE* out = arguments.empty() ? stderr : stdout;
    fprintf(out, "%s%s%s", USAGE_HEAD, bulkhead::CONTROL_COMMANDS_HELP, USAGE_TAIL);
    return arguments.empty() ? 2 : 0;
  }
  if (arguments.size() < 2) return fail("no command given; see bulkhead-ctl --help");
  return run(arguments[0], std::vector<std::string>(arguments.begin() + 1, arguments.end()));
}
