// For device tests without a guest: a DeviceHost whose guest RAM is a host buffer, and helpers
// that play the driver's part of a split virtqueue.
#pragma once

#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "device.h"
#include "dma-memory.h"
#include "virtio-pci.h"

namespace bulkhead::sdk::virtio::testing {

constexpr uint64_t RAM_BASE = 0x100000;
constexpr uint64_t RAM_BYTES = 1 << 20;
// Where the driver side puts queue 0 and its buffers.
constexpr uint64_t DESCRIPTORS = RAM_BASE;
constexpr uint64_t AVAIL = RAM_BASE + 0x1000;
constexpr uint64_t USED = RAM_BASE + 0x2000;
constexpr uint64_t DATA = RAM_BASE + 0x10000;
// For devices with a receive queue 0 and a transmit queue 1 (startTwoQueues): queue 1 goes where
// start() puts queue 0, queue 0 here.
constexpr uint64_t RX_DESCRIPTORS = RAM_BASE + 0x4000;
constexpr uint64_t RX_AVAIL = RAM_BASE + 0x5000;
constexpr uint64_t RX_USED = RAM_BASE + 0x6000;

class TestHost final : public DeviceHost {
 public:
  TestHost() : ram(RAM_BYTES) { memory.addBuffer(ram.data(), RAM_BASE, RAM_BYTES); }
  ~TestHost() noexcept override = default;

  void setIrq(uint8_t, bool) override {}
  void requestVmExit(uint8_t) override {}
  void writeOutput(kj::ArrayPtr<const uint8_t> bytes) override {
    output.append(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  }
  void watchReadable(int, kj::Function<bool()>) override {}
  void after(std::chrono::microseconds, kj::Function<void()> callback) override {
    later.push_back(kj::mv(callback));
  }
  // Runs what after() scheduled (tests decide when time has passed).
  void runLater() {
    auto due = kj::mv(later);
    later.clear();
    for (auto& callback : due) callback();
  }
  std::vector<kj::Function<void()>> later;
  void setPciInterrupt(bool level) override {
    interrupt = level;
    if (level) ++raised;
  }
  void routeMsi(unsigned vector, uint64_t address, uint32_t data) override {
    routes[vector] = {address, data};
  }
  void signalMsi(unsigned vector) override { messages.push_back(vector); }
  DmaMemory& dma() override { return memory; }
  void stateChanged() override {
    ++checkpoints;
    if (onStateChanged) onStateChanged();
  }
  std::function<void()> onStateChanged;  // a test's look at each commit

  uint8_t* at(uint64_t address) { return ram.data() + (address - RAM_BASE); }
  template <typename T>
  void put(uint64_t address, T value) {
    memcpy(at(address), &value, sizeof(T));
  }
  template <typename T>
  T get(uint64_t address) {
    T value;
    memcpy(&value, at(address), sizeof(T));
    return value;
  }

  std::vector<uint8_t> ram;
  std::string output;
  DmaMemory memory;
  bool interrupt = false;
  unsigned raised = 0;
  std::map<unsigned, std::pair<uint64_t, uint32_t>> routes;  // MSI-X vector -> message
  std::vector<unsigned> messages;                            // MSI-X vectors signalled
  unsigned checkpoints = 0;
};

// Plays the driver: negotiates, sets up queue 0 (size 16) and submits chains.
class TestDriver {
 public:
  static constexpr uint16_t SIZE = 16;
  TestDriver(TestHost& host, VirtioPciDevice& device) : host(host), device(device) {}

  void bar(uint64_t offset, unsigned size, uint64_t value) {
    device.write(barSpace(0), offset, size, value);
  }
  uint64_t bar(uint64_t offset, unsigned size) { return device.read(barSpace(0), offset, size); }

  // Returns the device status after DRIVER_OK (FEATURES_OK cleared if refused).
  uint8_t start(uint64_t features) {
    negotiate(features);
    setQueue(0, DESCRIPTORS, AVAIL, USED);
    bar(0x14, 1, 1 | 2 | 4 | 8);
    return bar(0x14, 1);
  }

  // VERSION_1 only; queue 0 at RX_*, queue 1 where start() puts queue 0.
  void startTwoQueues() {
    negotiate(F_VERSION_1);
    setQueue(0, RX_DESCRIPTORS, RX_AVAIL, RX_USED);
    setQueue(1, DESCRIPTORS, AVAIL, USED);
    bar(0x14, 1, 1 | 2 | 4 | 8);
  }

  void negotiate(uint64_t features) {
    bar(0x14, 1, 0);
    bar(0x14, 1, 1 | 2);
    bar(0x08, 4, 0);
    bar(0x0c, 4, static_cast<uint32_t>(features));
    bar(0x08, 4, 1);
    bar(0x0c, 4, features >> 32);
    bar(0x14, 1, 1 | 2 | 8);
  }

  void setQueue(uint16_t index, uint64_t descriptors, uint64_t avail, uint64_t used) {
    bar(0x16, 2, index);
    bar(0x18, 2, SIZE);
    bar(0x20, 8, descriptors);
    bar(0x28, 8, avail);
    bar(0x30, 8, used);
    bar(0x1c, 2, 1);
  }

  struct Piece {
    uint64_t address;
    uint32_t length;
    bool writable;
  };
  // Writes a chain at descriptor `first` and makes it available; does not notify.
  void offer(const std::vector<Piece>& pieces, uint16_t first = 0) {
    for (size_t i = 0; i < pieces.size(); ++i) {
      uint64_t at = DESCRIPTORS + 16 * ((first + i) % SIZE);
      host.put<uint64_t>(at, pieces[i].address);
      host.put<uint32_t>(at + 8, pieces[i].length);
      uint16_t flags = (pieces[i].writable ? 2 : 0) | (i + 1 < pieces.size() ? 1 : 0);
      host.put<uint16_t>(at + 12, flags);
      host.put<uint16_t>(at + 14, (first + i + 1) % SIZE);
    }
    host.put<uint16_t>(AVAIL + 4 + 2 * (availIndex % SIZE), first);
    host.put<uint16_t>(AVAIL + 2, ++availIndex);
  }
  uint16_t usedIndex() { return host.get<uint16_t>(USED + 2); }
  uint32_t usedLength(uint16_t index) {
    return host.get<uint32_t>(USED + 4 + 8 * (index % SIZE) + 4);
  }

  TestHost& host;
  VirtioPciDevice& device;
  uint16_t availIndex = 0;
};

}  // namespace bulkhead::sdk::virtio::testing
