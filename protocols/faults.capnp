@0xd7c5fdfe2db1c539;
# Fault plans: what to break on which device's channel, when, from which seed.
# The text form users write is described in docs/fault-injection.md; the core parses it into
# this schema and hands each device server its rules.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::protocol");

struct FaultPlan {
  seed @0 :UInt64;             # every random choice in the plan derives from it
  rules @1 :List(FaultRule);
  generation @2 :UInt32;
  # Which of the VM's plans this is (each load, enable, disable or clear makes a new one): a
  # server reports each fired rule with it, so a rule of the plan it had before a change reached
  # it is not taken for the new plan's rule of the same number.
}

enum FaultEvent {
  access @0;  # any read or write the guest makes to the device
  read @1;
  write @2;
  irq @3;     # the device changes one of its interrupt lines
  dma @4;     # the device moves data to or from guest RAM (address: guest-physical; value: bytes)
}

struct FaultRule {
  name @0 :Text;
  device @1 :Text;          # the device kind the rule applies to (serial, debug-exit, ...)
  on @2 :FaultEvent;

  # Matching. An event matches when all of the given conditions hold.
  address @3 :UInt64;       # port or MMIO address (irq: the line)
  hasAddress @4 :Bool;
  value @5 :UInt64;         # the value written (irq: 1 raise, 0 lower)
  hasValue @6 :Bool;
  fromEvent @7 :UInt64;     # a window over the device's event count, inclusive; 0 = open
  toEvent @8 :UInt64;
  whenState @9 :Text;       # only while the device's fault state is this; "" = any

  # Firing, among matching events.
  nth @10 :UInt64 = 1;      # the first firing: at the nth match
  every @11 :UInt64;        # then every k-th match after it; 0 = no more
  count @12 :UInt64;        # at most this many firings; 0 = no limit
  probability @13 :Float64 = 1.0;  # chance of firing when due, drawn from the seeded generator

  setState @14 :Text;       # after firing, the device's fault state becomes this; "" = unchanged
  action @15 :FaultAction;
}

struct FaultAction {
  union {
    drop @0 :Void;          # the device never sees the access; a read answers all-ones
    delay @1 :UInt32;       # microseconds before the device handles the access
    answer @2 :UInt64;      # a read answers this value (the device still sees the read)
    flip @3 :UInt64;        # a read answers its true value XOR this mask
    corrupt @4 :UInt64;     # a write reaches the device XOR this mask
    loseIrq @5 :Void;       # the interrupt-line change never reaches the interrupt controller
    duplicateIrq @6 :Void;  # a raise is delivered twice (raise, lower, raise)
    delayIrq @7 :UInt32;    # microseconds before the change is delivered
    spuriousIrq @8 :Void;   # a raise-and-lower pulse of the device's line, out of nowhere
    crash @9 :Void;         # the server aborts (the supervisor restarts it, or fences)
    hang @10 :Void;         # the server stops serving (the watchdog notices)
    dmaRefuse @11 :Void;    # the transfer fails (the device sees a DMA error)
    dmaShort @12 :UInt32;   # only the first N bytes of the transfer happen
    dmaFlip @13 :UInt64;    # the first 8 bytes transferred arrive XOR this mask
    # Done by the core's supervisor, not by the server, on the guest's access:
    kill @14 :Void;         # SIGKILL the server
    stop @15 :Void;         # SIGSTOP the server (a hang only the watchdog can end)
    sever @16 :Void;        # cut the server's control connection (it exits)
  }
}
