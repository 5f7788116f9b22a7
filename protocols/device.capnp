@0x8aadb8a217cb9bc7;
# The device channel: how the core and one device server talk.
#
# Setup and control travel as Cap'n Proto RPC over a unix socketpair (two-party, with file
# descriptor passing). Guest accesses travel through a shared-memory ring of fixed-size slots,
# each slot holding one `Request` (core -> server) or one `Reply` (server -> core) message.
# docs/channel.md describes the ring layout and the wake-up protocol.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::protocol");
using Faults = import "faults.capnp";

enum Space {
  pio @0;   # x86 port I/O, addresses 0..0xffff
  mmio @1;  # guest-physical memory-mapped I/O
}

struct Range {
  # An address range a device claims. The core refuses overlaps, zero sizes and wrap-around.
  space @0 :Space;
  base @1 :UInt64;
  size @2 :UInt64;
  synchronous @3 :Bool;  # writes wait for the device instead of being posted
}

struct Option {
  key @0 :Text;
  value @1 :Text;
}

interface FileDescriptor {
  # A capability that carries exactly one file descriptor (SCM_RIGHTS); it has no methods.
}

struct Channel {
  ring @0 :FileDescriptor;      # memfd holding both rings (docs/channel.md)
  ringSlots @1 :UInt32;         # slots per ring, a power of two
  toDevice @2 :FileDescriptor;  # eventfd the core signals when the server sleeps
  toCore @3 :FileDescriptor;    # eventfd the server signals when the core sleeps
  state @4 :FileDescriptor;     # memfd of the device's state region (docs/recovery.md)
}

interface Device {
  # Exported by every device server as its bootstrap capability.

  attach @0 (channel :Channel, options :List(Option), backends :List(FileDescriptor),
             faults :Faults.FaultPlan)
      -> (name :Text, ranges :List(Range), irqLines :List(UInt8));
  # Called once, right after the server starts (and again for each restarted incarnation, with
  # the same channel: the server resumes from the state region's last commit). `backends` are the host-side files the device
  # may use (a serial line's output and input, say); the server may open nothing itself.
  # The reply says which address ranges and interrupt lines the device wants; the core checks
  # them before it routes anything there. `faults` holds the rules of the VM's fault plan that
  # name this device (docs/fault-injection.md).

  setFaults @1 (faults :Faults.FaultPlan) -> ();
  # Replaces the device's fault rules on a running VM (bulkhead-ctl faults load/clear).
}

struct Access {
  space @0 :Space;
  address @1 :UInt64;
  size @2 :UInt8;   # 1, 2, 4 or 8
  value @3 :UInt64; # writes only
}

struct Request {
  # One slot of the core -> server ring.
  seq @0 :UInt64;
  union {
    read @1 :Access;
    write @2 :Access;
    writeSync @3 :Access;  # a write the core waits for (synchronous ranges)
    flush @4 :Void;        # complete everything before this, flush host output, then reply
  }
}

struct Reply {
  # One slot of the server -> core ring.
  union {
    readDone :group {
      seq @0 :UInt64;
      value @1 :UInt64;
    }
    done :group {
      # Completion of a writeSync or flush request.
      seq @2 :UInt64;
    }
    irq :group {
      line @3 :UInt8;
      level @4 :Bool;
    }
    exitVm :group {
      # Only honoured from devices the core started with the right to end the VM (debug-exit).
      status @5 :UInt8;
    }
    output @6 :Void;  # new bytes were committed to the state region's output log
    faultFired :group {
      # A fault rule fired on the device's `event`th event (for counters, logs and replay).
      rule @7 :UInt16;
      event @8 :UInt64;
    }
  }
}
