// Starting one device server process and attaching it to the VM.
//
// The core forks the server binary with one end of a unix socketpair as file descriptor 3 (and
// nothing else but stderr), asks it over Cap'n Proto RPC to attach to a fresh channel (ring
// memfd and eventfds, passed as file descriptors), checks what address ranges and interrupt
// lines it wants, and registers them on the bus. The server dies with the core (parent-death
// signal) and when its channel closes.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "kernel/bus/io-bus.h"
#include "kernel/supervisor/remote-device.h"

namespace bulkhead {

struct DeviceSpec {
  std::string kind;  // names the server binary: bulkhead-<kind>
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<kj::AutoCloseFd> backends;  // host files the device may use
  bool mayExit = false;                   // may end the VM (debug-exit)
};

// Where the server binary for `kind` is: $BULKHEAD_SERVER_DIR, then the build tree's
// servers/<kind>/ beside the core's own directory, then the core's own directory.
absl::StatusOr<std::string> findServer(const std::string& kind);

class DeviceProcess {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceProcess>> start(kj::AsyncIoContext& io,
                                                              DeviceSpec spec, DeviceSink& sink,
                                                              IoBus& bus);
  ~DeviceProcess();

  RemoteDevice& device() { return *remote; }
  pid_t pid() const { return childPid; }
  const std::string& kind() const { return deviceKind; }

  // Resolves when the server's channel closes (it exited or was killed).
  kj::Promise<void> onDisconnect() { return network->onDisconnect(); }
  // Closes the channel and reaps the process, killing it if it lingers. Returns its status line.
  std::string stop();

 private:
  DeviceProcess() = default;

  std::string deviceKind;
  pid_t childPid = -1;
  kj::Own<kj::AsyncCapabilityStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  std::unique_ptr<RemoteDevice> remote;
};

}  // namespace bulkhead
