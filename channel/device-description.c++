#include "channel/device-description.h"

namespace bulkhead {

void encodePciFunction(const PciFunction& function, protocol::PciFunction::Builder wire) {
  wire.setVendorId(function.vendorId);
  wire.setDeviceId(function.deviceId);
  wire.setClassCode(function.classCode);
  wire.setRevision(function.revision);
  wire.setSubsystemVendorId(function.subsystemVendorId);
  wire.setSubsystemId(function.subsystemId);
  wire.setCapabilities(function.capabilities);
  wire.setInterruptPin(function.interruptPin);
  auto msix = wire.initMsix();
  msix.setVectors(function.msix.vectors);
  msix.setBar(function.msix.bar);
  msix.setTableOffset(function.msix.tableOffset);
  auto bars = wire.initBars(function.bars.size());
  for (size_t i = 0; i < function.bars.size(); ++i) {
    bars[i].setIndex(function.bars[i].index);
    bars[i].setSize(function.bars[i].size);
    bars[i].setIo(function.bars[i].io);
  }
}

PciFunction decodePciFunction(protocol::PciFunction::Reader wire) {
  PciFunction function;
  function.vendorId = wire.getVendorId();
  function.deviceId = wire.getDeviceId();
  function.classCode = wire.getClassCode();
  function.revision = wire.getRevision();
  function.subsystemVendorId = wire.getSubsystemVendorId();
  function.subsystemId = wire.getSubsystemId();
  function.capabilities = wire.getCapabilities();
  function.interruptPin = wire.getInterruptPin();
  for (auto bar : wire.getBars()) {
    function.bars.push_back(PciBar{bar.getIndex(), bar.getSize(), bar.getIo()});
  }
  auto msix = wire.getMsix();
  function.msix = PciMsix{msix.getVectors(), msix.getBar(), msix.getTableOffset()};
  return function;
}

void encodeDoorbell(const Doorbell& bell, protocol::Doorbell::Builder wire) {
  wire.setBar(bell.bar);
  wire.setOffset(bell.offset);
  wire.setSize(bell.size);
  wire.setValue(bell.value);
}

Doorbell decodeDoorbell(protocol::Doorbell::Reader wire) {
  return Doorbell{wire.getBar(), wire.getOffset(), wire.getSize(), wire.getValue()};
}

}  // namespace bulkhead
