// The text form of a fault plan (docs/fault-injection.md), parsed into protocols/faults.capnp.
//
//   # a comment
//   seed 42
//   rule flip-lsr device=serial on=read address=0x3fd nth=3 count=1 action=flip:0x20
//   rule drop-tx  device=serial on=write address=0x3f8 probability=0.01 action=drop
//   rule arm      device=serial on=irq value=1 once set=armed action=delay-irq:100
//   rule kill     device=serial on=write when=armed nth=2 once action=crash
#pragma once

#include <string>

#include <absl/status/status.h>
#include <capnp/message.h>

#include "faults.capnp.h"

namespace bulkhead {

// Fills `plan` from `text`. An error (kInvalidArgument) is one line naming the line number and
// what is wrong, or the limit of the fault engine the plan is over (rules per device, states).
absl::Status parseFaultPlan(const std::string& text, protocol::FaultPlan::Builder plan);

// Copies into `out` the seed and the rules of `plan` that name device `kind`, in order.
void selectFaultRules(protocol::FaultPlan::Reader plan, const std::string& kind,
                      protocol::FaultPlan::Builder out);

// The text form of one action, as the parser reads it ("flip:0x20").
std::string describeFaultAction(protocol::FaultAction::Reader action);

}  // namespace bulkhead
