// The control socket's server side: protocols/control.capnp on a unix socket, served from the
// VM's event loop (so it may touch the device processes directly).
#pragma once

#include <capnp/rpc-twoparty.h>

#include "control.capnp.h"

namespace bulkhead {

class Vm;

class ControlServer final : public protocol::Control::Server {
 public:
  explicit ControlServer(Vm& vm) : vm(vm) {}

  kj::Promise<void> devices(DevicesContext context) override;
  kj::Promise<void> loadFaults(LoadFaultsContext context) override;
  kj::Promise<void> faults(FaultsContext context) override;
  kj::Promise<void> enableFaults(EnableFaultsContext context) override;
  kj::Promise<void> clearFaults(ClearFaultsContext context) override;
  kj::Promise<void> inspect(InspectContext context) override;

 private:
  Vm& vm;
};

}  // namespace bulkhead
