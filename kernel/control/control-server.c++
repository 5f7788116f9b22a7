#include "kernel/control/control-server.h"

#include <kj/debug.h>

#include "kernel/guestview/inspect.h"
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

kj::Promise<void> ControlServer::inspect(InspectContext context) {
  auto params = context.getParams();
  if (!vm.pauseVcpus(std::chrono::milliseconds(2000))) {
    KJ_FAIL_REQUIRE(kj::str("the vCPUs did not pause within 2 s"));
  }
  KJ_DEFER(vm.resumeVcpus());
  absl::StatusOr<ArchState> snapshot = vm.snapshot(params.getVcpu());
  if (!snapshot.ok()) {
    std::string message(snapshot.status().message());
    KJ_FAIL_REQUIRE(kj::str(message.c_str()));
  }
  GuestInspector inspector(*snapshot, vm.memory());
  auto results = context.getResults();
  absl::StatusOr<std::string> text = std::string();
  switch (params.getWhat()) {
    case protocol::Inspect::REGISTERS:
      text = inspector.registers();
      break;
    case protocol::Inspect::WALK:
      text = inspector.walk(params.getAddress());
      break;
    case protocol::Inspect::GDT:
      text = inspector.table(TableKind::GDT);
      break;
    case protocol::Inspect::IDT:
      text = inspector.table(TableKind::IDT);
      break;
    case protocol::Inspect::LDT:
      text = inspector.table(TableKind::LDT);
      break;
    case protocol::Inspect::DISASSEMBLE:
      text = inspector.disassemble(params.getAddress(), params.getCount());
      break;
    case protocol::Inspect::MEMORY:
    case protocol::Inspect::PHYSICAL_MEMORY: {
      absl::StatusOr<std::string> bytes =
          inspector.memory(params.getAddress(), params.getCount(),
                           params.getWhat() == protocol::Inspect::PHYSICAL_MEMORY);
      if (!bytes.ok()) {
        text = bytes.status();
        break;
      }
      results.setData(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes->data()), bytes->size()));
      break;
    }
    default:
      KJ_FAIL_REQUIRE(kj::str("unknown view"));
  }
  if (!text.ok()) {
    std::string message(text.status().message());
    KJ_FAIL_REQUIRE(kj::str(message.c_str()));
  }
  results.setText(*text);
  return kj::READY_NOW;
}

}  // namespace bulkhead
