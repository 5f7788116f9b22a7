// The device table: what the core grants each kind of device server and which host backend it
// opens for it. The rows are kernel/machine/device-kinds.table (the build reads the same file to
// know which server folders to build), so adding a device is its folder and one row.
//
// A kind outside the table (a test's or a third party's server, found through
// $BULKHEAD_SERVER_DIR) gets no rights and no backend.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <absl/status/statusor.h>

namespace bulkhead {

enum class HostBackend { NONE, STDIO, STDERR, FILE, DISK, NET };

struct DeviceKind {
  std::string kind;         // servers/<kind>/bulkhead-<kind>
  bool mayExit = false;     // may end the VM
  bool dma = false;         // sees guest RAM through DMA windows
  bool interrupts = false;  // may raise interrupts (ISA lines, INTx, MSI-X)
  HostBackend backend = HostBackend::NONE;
  std::string alias;  // "--disk", or "" for none
};

// The table, parsed; an error names a malformed row (a unit test holds every row to it).
absl::StatusOr<std::vector<DeviceKind>> deviceKinds();

// The row for `kind`, or what a kind outside the table gets.
DeviceKind deviceKind(std::string_view kind);

}  // namespace bulkhead
