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
  pio @0;        # x86 port I/O, addresses 0..0xffff
  mmio @1;       # guest-physical memory-mapped I/O
  pciConfig @2;  # the device's PCI configuration space beyond the standard header, 0x40..0xff
  bar0 @3;       # an offset into one of the device's PCI BARs (wherever the guest put it)
  bar1 @4;
  bar2 @5;
  bar3 @6;
  bar4 @7;
  bar5 @8;
}

const pciInterruptLine :UInt8 = 255;
# The `irq` reply's line for a PCI function's INTx pin; the core routes it to the GSI it chose.

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

struct PciFunction {
  # A device that is a PCI function. The core emulates the standard type-0 header (0x00-0x3f)
  # from this description, places and moves the BARs, and forwards config accesses to
  # 0x40-0xff (capabilities) to the server as `pciConfig` accesses.
  vendorId @0 :UInt16;
  deviceId @1 :UInt16;
  classCode @2 :UInt32;  # base class, subclass, programming interface: 0x010000 = SCSI storage
  revision @3 :UInt8;
  subsystemVendorId @4 :UInt16;
  subsystemId @5 :UInt16;
  capabilities @6 :UInt8;  # offset of the first capability in 0x40..0xfc, or 0 for none
  interruptPin @7 :Bool;   # uses INTA# (raised as `pciInterruptLine`)
  bars @8 :List(Bar);
  msix :group {
    # MSI-X, when `vectors` > 0. The server serves the capability (in its config space) and the
    # table and pending bits (in BAR `bar`); the core only needs to know where the table is,
    # so that the guest's writes to it are synchronous (the route a write makes is in place
    # before the guest goes on), and how many vectors to route.
    vectors @9 :UInt16;      # at most 32
    bar @10 :UInt8;
    tableOffset @11 :UInt64; # the table's offset in the BAR (16 bytes per vector)
  }
}

struct Bar {
  index @0 :UInt8;  # 0..5
  size @1 :UInt64;  # a power of two: at least 16 (memory) or 4 (I/O), at most 1 GiB
  io @2 :Bool;      # an I/O BAR (else 32-bit memory)
}

struct Doorbell {
  # A register the guest writes to ring a bell (a virtqueue notification). The core turns each
  # into an ioeventfd where the host has them, so the write never leaves the kernel; otherwise
  # it arrives as an ordinary write request.
  bar @0 :UInt8;
  offset @1 :UInt64;
  size @2 :UInt8;    # 1, 2 or 4; or 0: any write at `offset` rings it, whatever its value (on
                     # KVM an MMIO one is then a fast MMIO ioeventfd: no instruction decoding)
  value @3 :UInt64;  # the value written (the queue index)
}

struct DmaWindow {
  # Part of guest RAM the device may read and write: `size` bytes of `memory` from `offset`,
  # seen by the guest at `guestPhysical`.
  memory @0 :FileDescriptor;
  offset @1 :UInt64;
  guestPhysical @2 :UInt64;
  size @3 :UInt64;
}

interface Device {
  # Exported by every device server as its bootstrap capability.

  attach @0 (channel :Channel, options :List(Option), backends :List(FileDescriptor),
             faults :Faults.FaultPlan, dma :List(DmaWindow))
      -> (name :Text, ranges :List(Range), irqLines :List(UInt8), pci :PciFunction,
          doorbells :List(Doorbell));
  # Called once, right after the server starts (and again for each restarted incarnation, with
  # the same channel: the server resumes from the state region's last commit). `backends` are the host-side files the device
  # may use (a serial line's output and input, say); the server may open nothing itself.
  # The reply says which address ranges and interrupt lines the device wants; the core checks
  # them before it routes anything there. `faults` holds the rules of the VM's fault plan that
  # name this device (docs/fault-injection.md). `dma` is empty except for devices that do DMA
  # (virtio): they get guest RAM, and nothing else of the host.

  setFaults @1 (faults :Faults.FaultPlan) -> ();
  # Replaces the device's fault rules on a running VM (bulkhead-ctl faults load/clear).

  wire @2 (doorbells :List(FileDescriptor), interrupt :FileDescriptor,
           resample :FileDescriptor, vectors :List(FileDescriptor)) -> ();
  # After attach, for a device that asked for doorbells or is a PCI function with an interrupt
  # pin: one eventfd per doorbell (signalled by the guest's write), and for INTx an irqfd the
  # server signals to raise the line and the resample eventfd KVM signals when the guest ends
  # the interrupt (the server raises again if it is still pending). `interrupt` is absent where
  # the host has no irqfd; the server then uses `irq` replies on `pciInterruptLine`. The core
  # keeps these across restarts: a doorbell rung while the server was down is still counted.
  # `vectors`: for MSI-X, one irqfd per vector, which sends the message the core last routed
  # for it (`msiRoute`); empty where the host has no irqfd, and the server sends `msi` replies.
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
      generation @13 :UInt32;  # of the plan the rule is in (FaultPlan.generation)
    }
    msiRoute :group {
      # The guest programmed MSI-X table entry `vector`: its message is now this (an address
      # 0xfeeXXXXX, else the vector sends nothing).
      vector @9 :UInt16;
      address @10 :UInt64;
      data @11 :UInt32;
    }
    msi :group {
      # Send vector `vector`'s message (where the host has no irqfd for it).
      vector @12 :UInt16;
    }
  }
}
