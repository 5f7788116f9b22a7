// The restart benchmark: how long a guest waits when its device server dies.
//
// A guest reads the UART scratch register (a round trip to the serial server) and then writes
// an in-process marker port, in a loop. The benchmark SIGKILLs the serial server over and over
// and, for each kill at time T0, takes the second marker after T0 (the first may belong to a
// read the old server answered just before it died) minus the loop's usual period: the time
// from the server's death to the first request served by its successor.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "kernel/boot/multiboot.h"
#include "kernel/machine/machine.h"
#include "kernel/vm.h"

namespace bulkhead {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t MAX_MARKERS = 4 << 20;

class Markers final : public IoHandler {
 public:
  Markers() : times(MAX_MARKERS) {}
  uint64_t read(Space, uint64_t, unsigned) override { return 0; }
  void write(Space, uint64_t, unsigned, uint64_t, bool) override {
    size_t i = count.load(std::memory_order_relaxed);
    if (i < times.size()) {
      times[i] = Clock::now().time_since_epoch().count();
      count.store(i + 1, std::memory_order_release);
    }
  }
  std::vector<int64_t> times;
  std::atomic<size_t> count{0};
};

pid_t serialServer() {
  std::string tasks = "/proc/" + std::to_string(getpid()) + "/task";
  DIR* dir = opendir(tasks.c_str());
  pid_t found = -1;
  while (dir != nullptr) {
    dirent* entry = readdir(dir);
    if (entry == nullptr) break;
    std::ifstream children(tasks + "/" + entry->d_name + "/children");
    pid_t child;
    while (children >> child) {
      std::ifstream comm("/proc/" + std::to_string(child) + "/comm");
      std::string name;
      std::getline(comm, name);
      if (name == "bulkhead-serial") found = child;
    }
  }
  if (dir != nullptr) closedir(dir);
  return found;
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

int run(const char* guestPath, int restarts, const std::string& accel) {
  std::ifstream file(guestPath, std::ios::binary);
  std::vector<uint8_t> image((std::istreambuf_iterator<char>(file)),
                             std::istreambuf_iterator<char>());
  Markers markers;
  std::atomic<Vm*> running{nullptr};
  std::atomic<int> setupStatus{-1};
  std::thread vmThread([&]() {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    VmConfig config;
    config.accel = accel;
    auto vm = Vm::create(config, io);
    if (!vm.ok()) {
      fprintf(stderr, "restart-bench: %s\n", std::string(vm.status().message()).c_str());
      setupStatus = 77;
      return;
    }
    (*vm)->bus().add(Space::PIO, 0x5f0, 1, Route{&markers, false, "marker"}).IgnoreError();
    DeviceSpec serial = deviceSpecFor("serial");
    serial.output = kj::AutoCloseFd(open("/dev/null", O_WRONLY | O_CLOEXEC));
    serial.policy.maxRestarts = 1000000;
    auto state = loadMultiboot((*vm)->memory(), kj::arrayPtr(image.data(), image.size()), "", {});
    if (!state.ok() || !(*vm)->setBootState(*state).ok() ||
        !(*vm)->addDevice(std::move(serial)).ok()) {
      fprintf(stderr, "restart-bench: cannot set up the VM\n");
      setupStatus = 1;
      return;
    }
    running = vm->get();
    setupStatus = 0;
    (*vm)->run();
  });
  while (setupStatus.load() < 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (setupStatus.load() != 0) {
    vmThread.join();
    return setupStatus.load();
  }
  while (markers.count.load() < 1000) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  // The loop's usual period, before any kill.
  size_t settled = markers.count.load();
  double period = static_cast<double>(markers.times[settled - 1] - markers.times[settled - 1001]) /
                  1000.0 / 1e6;
  std::vector<double> latencies;
  for (int i = 0; i < restarts; ++i) {
    pid_t server = -1;
    for (int wait = 0; wait < 1000 && server < 0; ++wait) {
      server = serialServer();
      if (server < 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (server <= 0) break;  // no server came back (never kill(-1, ...): that is every process)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // let it run a while
    size_t before = markers.count.load(std::memory_order_acquire);
    int64_t killedAt = Clock::now().time_since_epoch().count();
    kill(server, SIGKILL);
    size_t index = before;
    int seen = 0;
    for (int wait = 0; wait < 5000 && seen < 2; ++wait) {
      size_t now = markers.count.load(std::memory_order_acquire);
      for (; index < now && seen < 2; ++index) {
        if (markers.times[index] > killedAt && ++seen == 2) {
          latencies.push_back(static_cast<double>(markers.times[index] - killedAt) / 1e6 - period);
        }
      }
      if (seen < 2) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  running.load()->requestExit(0, "");
  vmThread.join();
  if (latencies.size() != static_cast<size_t>(restarts)) {
    fprintf(stderr, "restart-bench: only %zu of %d restarts were seen\n", latencies.size(),
            restarts);
    return 1;
  }
  printf("restarts: %d (SIGKILL of the serial server while the guest makes round trips; %s)\n",
         restarts, accel == "emu" ? "software CPU" : "KVM where usable");
  printf("guest loop period without kills: %.3f ms\n", period);
  printf(
      "death to first served request: median %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms "
      "(target: median <= 1 ms, p99 <= 5 ms)\n",
      percentile(latencies, 0.5), percentile(latencies, 0.9), percentile(latencies, 0.99),
      percentile(latencies, 1.0));
  return 0;
}

}  // namespace
}  // namespace bulkhead

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: restart-bench GUEST [RESTARTS [ACCEL]]\n");
    return 2;
  }
  return bulkhead::run(argv[1], argc > 2 ? atoi(argv[2]) : 120, argc > 3 ? argv[3] : "");
}
