// The exit benchmark: one guest, one run, three kinds of port exits side by side.
//
//   in-process: a read the core answers itself (the baseline: KVM exit + bus lookup)
//   round trip: a read of the UART scratch register, answered by the serial server process
//   posted:     a write of the same register, queued on the ring without waiting
//
// Prints the time per exit of each and the ratios to the baseline. Figures taken on a nested,
// PVM-backed KVM say nothing about real hardware; the ratios are what to compare.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "kernel/boot/multiboot.h"
#include "kernel/machine/machine.h"
#include "kernel/vm.h"

namespace bulkhead {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint16_t MARKER_PORT = 0x5f0;
constexpr uint16_t BASELINE_PORT = 0x5f1;

class Markers final : public IoHandler {
 public:
  uint64_t read(Space, uint64_t, unsigned) override { return 0; }
  void write(Space, uint64_t, unsigned, uint64_t value, bool) override {
    if (value < times.size()) times[value] = Clock::now();
  }
  std::vector<Clock::time_point> times = std::vector<Clock::time_point>(5);
};

int run(const char* guestPath, uint64_t count) {
  std::ifstream file(guestPath, std::ios::binary);
  std::vector<uint8_t> image((std::istreambuf_iterator<char>(file)),
                             std::istreambuf_iterator<char>());
  if (image.empty()) {
    fprintf(stderr, "exit-bench: cannot read %s\n", guestPath);
    return 2;
  }
  kj::AsyncIoContext io = kj::setupAsyncIo();
  auto vm = Vm::create(VmConfig{}, io);
  if (!vm.ok()) {
    fprintf(stderr, "exit-bench: %s\n", std::string(vm.status().message()).c_str());
    return 77;  // skipped: no KVM
  }
  Markers markers;
  (*vm)->bus().add(Space::PIO, MARKER_PORT, 1, Route{&markers, false, "marker"}).IgnoreError();
  (*vm)->bus().add(Space::PIO, BASELINE_PORT, 1, Route{&markers, false, "baseline"}).IgnoreError();
  DeviceSpec serial = deviceSpecFor("serial");
  serial.output = kj::AutoCloseFd(open("/dev/null", O_WRONLY | O_CLOEXEC));
  DeviceSpec exit = deviceSpecFor("debug-exit");
  for (DeviceSpec* spec : {&serial, &exit}) {
    absl::Status added = (*vm)->addDevice(std::move(*spec));
    if (!added.ok()) {
      fprintf(stderr, "exit-bench: %s\n", std::string(added.message()).c_str());
      return 1;
    }
  }
  auto state = loadMultiboot((*vm)->memory(), kj::arrayPtr(image.data(), image.size()),
                             "bench count=" + std::to_string(count), {});
  if (!state.ok() || !(*vm)->setBootState(*state).ok()) {
    fprintf(stderr, "exit-bench: cannot load %s\n", guestPath);
    return 1;
  }
  int status = (*vm)->run();
  if (status != 1) {
    fprintf(stderr, "exit-bench: guest ended with status %d\n", status);
    return 1;
  }
  auto perExit = [&](int phase) {
    return std::chrono::duration<double, std::nano>(markers.times[phase + 1] - markers.times[phase])
               .count() /
           count;
  };
  double baseline = perExit(1), roundTrip = perExit(2), posted = perExit(3);
  printf("exits per kind: %llu\n", static_cast<unsigned long long>(count));
  printf("in-process read   %8.0f ns/exit   1.00x (baseline)\n", baseline);
  printf("round-trip read   %8.0f ns/exit   %.2fx   (target <= 1.5x)\n", roundTrip,
         roundTrip / baseline);
  printf("posted write      %8.0f ns/exit   %.2fx   (target <= 1.1x)\n", posted, posted / baseline);
  return 0;
}

}  // namespace
}  // namespace bulkhead

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: exit-bench GUEST [COUNT]\n");
    return 2;
  }
  return bulkhead::run(argv[1], argc > 2 ? strtoull(argv[2], nullptr, 0) : 20000);
}
