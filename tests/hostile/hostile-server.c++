// bulkhead-hostile: a device server that attacks, for the tests of the sandbox and of the core's
// checks. It claims ports 0x510-0x513; each guest read there performs the attack named by the
// option attack=NAME and answers what it saw (an errno, or 0xaa when the attack worked).
//
// Attacks on the host (the sandbox must refuse or kill): open, kvm, socket, ptrace, execve,
// memory. Attacks on the core through the channel (the core must fence the device): garbage,
// oversize, future, index, irq, exit. A hang the core's watchdog must end: take-and-hang (the
// server takes the request off the ring, never answers, and hangs). And for the core's restart
// of a server that dies while starting: abort-at-start (the server dies (SIGABRT) while it
// attaches, every time) and abort-at-wire (it is a PCI function, and its first incarnation dies
// when the core wires it, after the core has placed it on the buses).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <kj/debug.h>

#include "channel/channel.h"
#include "servers/sdk/device.h"

namespace bulkhead {
namespace {

constexpr uint64_t WORKED = 0xaa;

uint64_t outcome(int result) { return result >= 0 ? WORKED : static_cast<uint64_t>(errno); }

// A ring of the channel, found the way a compromised server would: among its own descriptors.
char* channelRing(bool reply) {
  for (int fd = 3; fd < 64; ++fd) {
    struct stat info;
    if (fstat(fd, &info) != 0 ||
        static_cast<size_t>(info.st_size) != channelBytes(DEFAULT_RING_SLOTS)) {
      continue;
    }
    void* base = mmap(nullptr, info.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base != MAP_FAILED)
      return static_cast<char*>(base) + (reply ? channelReplyOffset(DEFAULT_RING_SLOTS) : 0);
  }
  return nullptr;
}

// Writes a slot by hand: `words` as payload, `claimedWords` as its length, then publishes it.
void forge(kj::ArrayPtr<const uint64_t> words, uint32_t claimedWords) {
  char* base = channelRing(/*reply=*/true);
  KJ_REQUIRE(base != nullptr, "no reply ring among the server's descriptors");
  auto* header = reinterpret_cast<RingHeader*>(base);
  auto* slots = reinterpret_cast<RingSlot*>(base + sizeof(RingHeader));
  uint64_t head = header->head.load();
  RingSlot& slot = slots[head & (DEFAULT_RING_SLOTS - 1)];
  memcpy(slot.payload, words.begin(), words.size() * sizeof(uint64_t));
  slot.words = claimedWords;
  slot.seq.store(head);
  header->head.store(head + 1);
}

template <typename Fill>
void forgeMessage(Fill&& fill) {
  capnp::MallocMessageBuilder builder;
  fill(builder.initRoot<protocol::Reply>());
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
  auto words = kj::arrayPtr(reinterpret_cast<const uint64_t*>(flat.begin()), flat.size());
  forge(words, words.size());
}

class HostileDevice final : public sdk::Device {
 public:
  HostileDevice(const sdk::DeviceConfig& config, sdk::DeviceHost&) {
    auto it = config.options.find("attack");
    KJ_REQUIRE(it != config.options.end(), "bulkhead-hostile needs attack=NAME");
    attack = it->second;
    if (attack == "abort-at-start") abort();
  }
  std::vector<sdk::IoRange> ranges() override { return {{sdk::Space::PIO, 0x510, 4}}; }
  std::optional<sdk::PciFunction> pciFunction() override {
    if (attack != "abort-at-wire") return std::nullopt;
    return sdk::PciFunction{.vendorId = 0x1234, .deviceId = 0xbad0, .classCode = 0xff0000};
  }
  void stateRestored() override { restarted = true; }
  void doorbellsReady(std::vector<int>) override {
    if (attack == "abort-at-wire" && !restarted) abort();
  }

  uint64_t read(sdk::Space, uint64_t, unsigned) override {
    if (attack == "open") return outcome(open("/etc/passwd", O_RDONLY));
    if (attack == "kvm") return outcome(open("/dev/kvm", O_RDWR));
    if (attack == "socket") return outcome(socket(AF_INET, SOCK_STREAM, 0));
    if (attack == "ptrace") return outcome(ptrace(PTRACE_ATTACH, getppid(), nullptr, nullptr));
    if (attack == "execve") {
      char* argv[] = {const_cast<char*>("sh"), nullptr};
      return outcome(execve("/bin/sh", argv, nullptr));
    }
    if (attack == "memory") return *reinterpret_cast<volatile uint64_t*>(0x10000);
    if (attack == "abort-at-wire") return 0x5a;  // a running server answers honestly
    if (attack == "take-and-hang") {
      // Takes every request off the ring, answers none, and hangs: only a vCPU waits now. (Not
      // SIGSTOP: the server is its PID namespace's init, which ignores signals it sends itself.)
      auto* requests = reinterpret_cast<RingHeader*>(channelRing(/*reply=*/false));
      KJ_REQUIRE(requests != nullptr, "no request ring among the server's descriptors");
      requests->tail.store(requests->head.load());
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    attackChannel();
    // Give the core time to see the forged message before the honest answer follows.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return 0x1234;
  }
  void write(sdk::Space, uint64_t, unsigned, uint64_t) override {}

 private:
  void attackChannel() {
    if (attack == "garbage") {
      uint64_t junk[8];
      for (int i = 0; i < 8; ++i) junk[i] = 0x9e3779b97f4a7c15ull * (i + 1);
      forge(kj::arrayPtr(junk, 8), 8);
    } else if (attack == "oversize") {
      uint64_t word = 0;
      forge(kj::arrayPtr(&word, 1), 1000);
    } else if (attack == "future") {
      forgeMessage([](protocol::Reply::Builder reply) {
        auto done = reply.initReadDone();
        done.setSeq(1ull << 40);
        done.setValue(1);
      });
    } else if (attack == "index") {
      char* base = channelRing(/*reply=*/true);
      KJ_REQUIRE(base != nullptr, "no reply ring among the server's descriptors");
      auto* header = reinterpret_cast<RingHeader*>(base);
      header->head.store(header->tail.load() + 100000);
    } else if (attack == "irq") {
      forgeMessage([](protocol::Reply::Builder reply) {
        auto irq = reply.initIrq();
        irq.setLine(9);
        irq.setLevel(true);
      });
    } else if (attack == "exit") {
      forgeMessage([](protocol::Reply::Builder reply) { reply.initExitVm().setStatus(0); });
    } else {
      KJ_FAIL_REQUIRE("unknown attack", attack);
    }
  }

  std::string attack;
  bool restarted = false;
};

}  // namespace
}  // namespace bulkhead

int main() {
  return bulkhead::sdk::runDeviceServer(
      "hostile", [](const bulkhead::sdk::DeviceConfig& config, bulkhead::sdk::DeviceHost& host) {
        return kj::heap<bulkhead::HostileDevice>(config, host);
      });
}
