// The machine builder: the one place that says what a VM is made of. From the parsed command
// line it creates the VM, gives it the platform of its machine type (the same for every boot
// path), starts the devices asked for with their host backends opened as the device table
// says (device-kinds.h), loads the guest and checks the fault plan.
//
//   --machine pc       PIC pair, PIT, IOAPIC and local APICs (the backend's), CMOS/RTC and
//                      i8042 servers, the PCI host bridge; fw_cfg for --bios; the MP table for
//                      Linux guests
//   --machine minimal  the interrupt controllers and PCI host bridge only: just the devices
//                      asked for (tiny test guests)
//
// docs/machine.md lists the devices, ports and interrupts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <kj/async-io.h>

#include "kernel/options.h"
#include "kernel/vm.h"

namespace bulkhead {

// A DeviceSpec for `kind` with the rights its row of the device table grants (no backend).
DeviceSpec deviceSpecFor(const std::string& kind,
                         std::vector<std::pair<std::string, std::string>> options = {});

// `kernelImage`: the guest's bytes when they come from elsewhere (the demo); empty to read
// options.kernel. Bad input is kInvalidArgument (or kNotFound), with one line saying what is
// wrong; other codes are the host's failures.
absl::StatusOr<std::unique_ptr<Vm>> buildMachine(const Options& options,
                                                 std::vector<uint8_t> kernelImage,
                                                 kj::AsyncIoContext& io);

}  // namespace bulkhead
