@0xeb2daaece1e1537d;
# The control socket: a running VM's Cap'n Proto RPC interface (bulkhead run --control PATH),
# used by bulkhead-ctl and tests. Served on a unix socket; the bootstrap capability is Control.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::protocol");

struct DeviceStatus {
  kind @0 :Text;
  pid @1 :Int32;           # the current server process, or -1
  restarts @2 :UInt32;
  fenced @3 :Bool;
  reads @4 :UInt64;        # guest accesses forwarded
  writes @5 :UInt64;
  irqChanges @6 :UInt64;
  faultsFired @7 :UInt64;
  staleAnswers @8 :UInt64; # answers repeated by restarted servers, ignored
}

interface Control {
  devices @0 () -> (devices :List(DeviceStatus));

  loadFaults @1 (plan :Text) -> ();
  # Parses a fault plan (text form) and applies it to the devices it names, replacing any plan
  # in force; every device's fault sequence starts afresh. Fails with one line naming the
  # problem.

  faults @2 () -> (plan :Text, enabled :Bool);
  # The plan last loaded (its text) and whether it is in force.

  enableFaults @3 (enabled :Bool) -> ();
  # Takes the loaded plan out of force (false) or puts it back (true).

  clearFaults @4 () -> ();
  # Forgets the plan.

  inspect @5 (vcpu :UInt32, what :Inspect, address :UInt64, count :UInt32)
      -> (text :Text, data :Data);
  # A view of the guest as one vCPU sees it, taken with every vCPU paused (docs/debugging.md).
  # `address` and `count` as `what` needs them; memory comes back in `data`.
}

enum Inspect {
  registers @0;       # general, segment, control and descriptor-table registers
  walk @1;            # the page walk of linear `address`
  gdt @2;
  idt @3;
  ldt @4;
  disassemble @5;     # `count` instructions from linear `address`
  memory @6;          # `count` bytes from linear `address`
  physicalMemory @7;  # `count` bytes from guest-physical `address`
}
