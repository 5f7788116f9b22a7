// bulkhead: parse the command line, build the machine it describes, run it.
#include <cstdio>
#include <string>
#include <vector>

#include <kj/async-unix.h>

#include "demo-guest.h"
#include "kernel/base/log.h"
#include "kernel/exit-status.h"
#include "kernel/machine/machine.h"
#include "kernel/options.h"

namespace bulkhead {
namespace {

int exitStatusFor(const absl::Status& status) {
  bool badInput = status.code() == absl::StatusCode::kInvalidArgument ||
                  status.code() == absl::StatusCode::kNotFound;
  return badInput ? EXIT_BAD_INPUT : EXIT_HOST_FAILURE;
}

int run(Options options) {
  std::vector<uint8_t> kernelImage;
  if (options.command == Options::Command::DEMO) {
    kernelImage.assign(DEMO_GUEST, DEMO_GUEST + sizeof(DEMO_GUEST));
    options.kernel = "demo";
    options.devices.push_back({"debug-exit", {}});
  }
  // Each ends the VM cleanly (its control socket removed, its servers stopped).
  for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) kj::UnixEventPort::captureSignal(signal);
  kj::AsyncIoContext io = kj::setupAsyncIo();
  absl::StatusOr<std::unique_ptr<Vm>> vm = buildMachine(options, std::move(kernelImage), io);
  if (!vm.ok()) {
    logLine(vm.status().message());
    return exitStatusFor(vm.status());
  }
  return (*vm)->run();
}

}  // namespace
}  // namespace bulkhead

int main(int argc, char** argv) {
  std::vector<std::string> arguments(argv + 1, argv + argc);
  absl::StatusOr<bulkhead::Options> options = bulkhead::parseOptions(arguments);
  if (!options.ok()) {
    bulkhead::logLine(options.status().message());
    return bulkhead::EXIT_BAD_INPUT;
  }
  switch (options->command) {
    case bulkhead::Options::Command::HELP:
      fputs(bulkhead::usageText(), stdout);
      return 0;
    case bulkhead::Options::Command::VERSION:
      puts("bulkhead " BULKHEAD_VERSION);
      return 0;
    case bulkhead::Options::Command::RUN:
    case bulkhead::Options::Command::DEMO:
      return bulkhead::run(std::move(*options));
  }
  return bulkhead::EXIT_BAD_INPUT;
}
