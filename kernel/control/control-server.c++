#include "kernel/control/control-server.h"

#include <kj/debug.h>

#include "kernel/vm.h"

namespace bulkhead {

kj::Promise<void> ControlServer::devices(DevicesContext context) {
  const auto& processes = vm.devices();
  auto list = context.getResults().initDevices(processes.size());
  for (size_t i = 0; i < processes.size(); ++i) {
    DeviceProcess& process = *processes[i];
    const RemoteDeviceCounters& counters = process.device().counters();
    auto entry = list[i];
    entry.setKind(process.kind());
    entry.setPid(process.pid());
    entry.setRestarts(process.restarts());
    entry.setFenced(process.device().fenced());
    entry.setReads(counters.reads.load());
    entry.setWrites(counters.writes.load());
    entry.setIrqChanges(counters.irqChanges.load());
    entry.setFaultsFired(counters.faultsFired.load());
    entry.setStaleAnswers(counters.staleAnswers.load());
  }
  return kj::READY_NOW;
}

kj::Promise<void> ControlServer::loadFaults(LoadFaultsContext context) {
  absl::Status status = vm.loadFaults(context.getParams().getPlan());
  if (!status.ok()) {
    std::string message(status.message());
    KJ_FAIL_REQUIRE(kj::str(message.c_str()));
  }
  return vm.applyFaults();
}

kj::Promise<void> ControlServer::faults(FaultsContext context) {
  context.getResults().setPlan(vm.faultPlanText());
  context.getResults().setEnabled(vm.faultsEnabled());
  return kj::READY_NOW;
}

kj::Promise<void> ControlServer::enableFaults(EnableFaultsContext context) {
  vm.setFaultsEnabled(context.getParams().getEnabled());
  return vm.applyFaults();
}

kj::Promise<void> ControlServer::clearFaults(ClearFaultsContext context) {
  KJ_REQUIRE(vm.loadFaults("").ok());
  return vm.applyFaults();
}

}  // namespace bulkhead
