// What a device author writes against: one class with the device logic. The SDK runs it in its
// own process, speaks the channel to the core, and calls these methods in guest order.
//
// docs/device-servers.md walks through writing a device with this interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <kj/async-io.h>
#include <kj/function.h>
#include <kj/memory.h>
#include <kj/string.h>

#include "channel/device-description.h"
#include "sandbox.h"

namespace bulkhead::sdk {

// The device's description (Space, IoRange, PciFunction, Doorbell) is the channel's own, shared
// with the core: channel/device-description.h.
using bulkhead::barSpace;
using bulkhead::Doorbell;
using bulkhead::IoRange;
using bulkhead::PciBar;
using bulkhead::PciFunction;
using bulkhead::PciMsix;
using bulkhead::Space;

class DmaMemory;

// What the SDK offers a device while it runs.
class DeviceHost {
 public:
  virtual ~DeviceHost() noexcept(false) = default;
  // Drives one of the device's declared interrupt lines. Repeating a level sends nothing.
  virtual void setIrq(uint8_t line, bool level) = 0;
  // Ends the VM with `status` (granted only to devices the core starts with that right).
  virtual void requestVmExit(uint8_t status) = 0;
  // Appends bytes for the host (a serial line's output). They reach the host exactly once:
  // they are committed with the request that produced them and the core forwards them.
  virtual void writeOutput(kj::ArrayPtr<const uint8_t> bytes) = 0;
  // Calls `onReadable` on the device's thread whenever `fd` (a backend) has data. The callback
  // reads until the descriptor would block and returns false to stop watching (end of file).
  virtual void watchReadable(int fd, kj::Function<bool()> onReadable) = 0;
  // Calls `callback` once, on the device's thread, after `delay` (a backend that was full).
  virtual void after(std::chrono::microseconds delay, kj::Function<void()> callback) = 0;
  // Drives the PCI function's INTx line (devices whose PciFunction has interruptPin).
  virtual void setPciInterrupt(bool level) = 0;
  // MSI-X (devices whose PciFunction has msix.vectors): the guest wrote table entry `vector`,
  // whose message is now (`address`, `data`); call it from the table write itself (those
  // writes are synchronous), so the route is in place before the guest goes on. Then
  // signalMsi() sends the vector's message; the device keeps masked vectors pending itself.
  virtual void routeMsi(unsigned vector, uint64_t address, uint32_t data) = 0;
  virtual void signalMsi(unsigned vector) = 0;
  // The guest RAM the core granted this device (empty for devices without DMA).
  virtual DmaMemory& dma() = 0;
  // Tells the SDK the device changed its declared state outside a request (a doorbell or a
  // backend), so it is checkpointed before anything else happens.
  virtual void stateChanged() = 0;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual std::vector<IoRange> ranges() = 0;
  virtual std::vector<uint8_t> irqLines() { return {}; }
  // A PCI function returns its identity; other devices return nothing.
  virtual std::optional<PciFunction> pciFunction() { return std::nullopt; }
  virtual std::vector<Doorbell> doorbells() { return {}; }
  // The doorbells' eventfds, in the order of doorbells(), once the core has wired them (after
  // every start, including a restart). Empty where the host has no ioeventfd.
  virtual void doorbellsReady(std::vector<int> eventfds) {}
  // `address` is absolute; `size` is 1, 2, 4 or 8. Called in the order the guest made them.
  virtual uint64_t read(Space space, uint64_t address, unsigned size) = 0;
  virtual void write(Space space, uint64_t address, unsigned size, uint64_t value) = 0;
  // Push buffered host output out; the SDK calls it when the request ring runs dry and before
  // completing a synchronous request.
  virtual void flush() {}

  // The device's whole state: the bytes of one trivially copyable struct (at most 2 KiB). The
  // SDK checkpoints it after every request and writes it back into place when a restarted
  // server resumes, then calls stateRestored(). Empty for a device with no state.
  virtual kj::ArrayPtr<uint8_t> declaredState() { return nullptr; }
  // After a restore: check the state (a crashed or hostile predecessor wrote it) and repair
  // what is impossible.
  virtual void stateRestored() {}
};

// The bytes of a declared state struct.
template <typename T>
kj::ArrayPtr<uint8_t> stateBytes(T& state) {
  static_assert(std::is_trivially_copyable_v<T>, "declared state must be trivially copyable");
  return kj::arrayPtr(reinterpret_cast<uint8_t*>(&state), sizeof(T));
}

struct DeviceConfig {
  std::map<std::string, std::string> options;  // from the core's --device KIND,key=value,...
  std::vector<int> backends;                   // host files the core opened for this device
};

// Builds the device once the core has attached. Throws (KJ_REQUIRE) on a bad configuration.
using DeviceFactory = kj::Function<kj::Own<Device>(const DeviceConfig&, DeviceHost&)>;

// The whole server: call from main(). The channel socket is file descriptor 3.
int runDeviceServer(kj::StringPtr name, DeviceFactory factory, SandboxNeeds needs = {});

// Serves one device over `stream` until the peer hangs up. runDeviceServer() runs this on file
// descriptor 3 inside the sandbox (sdk/sandbox.h); tests run it in process, unsandboxed, over a
// capability pipe.
kj::Promise<void> serveDevice(kj::AsyncIoContext& io, kj::Own<kj::AsyncCapabilityStream> stream,
                              kj::StringPtr name, DeviceFactory factory, bool sandboxed,
                              SandboxNeeds needs = {});

// Refuses (KJ_REQUIRE) any option not in `known`, naming it and the ones that exist.
void requireKnownOptions(const DeviceConfig& config, std::initializer_list<const char*> known);

// Parses an unsigned number option ("0x3f8" or "1016"); `fallback` when absent.
uint64_t numberOption(const DeviceConfig& config, const std::string& key, uint64_t fallback);

}  // namespace bulkhead::sdk
