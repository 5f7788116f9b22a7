// The core's process exit statuses. A guest ending through debug-exit gives (v << 1) | 1, an odd
// number; the core's own outcomes are even, so the two never collide.
#pragma once

namespace bulkhead {

constexpr int EXIT_POWER_OFF = 0;      // the guest powered the machine off
constexpr int EXIT_BAD_INPUT = 2;      // bad command line, image or configuration
constexpr int EXIT_GUEST_CRASHED = 4;  // triple fault, emulation failure, halted for good
constexpr int EXIT_HOST_FAILURE = 6;   // a system call or KVM itself failed
constexpr int EXIT_INTERRUPTED = 130;  // SIGINT or SIGTERM

}  // namespace bulkhead
