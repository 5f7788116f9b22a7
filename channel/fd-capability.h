// A FileDescriptor capability (protocols/device.capnp) that hands one file descriptor to the
// peer through Cap'n Proto's SCM_RIGHTS support. The descriptor stays owned by the caller, who
// must keep it open until the call carrying the capability has completed.
#pragma once

#include "device.capnp.h"

namespace bulkhead {

class FdCapability final : public protocol::FileDescriptor::Server {
 public:
  explicit FdCapability(int fd) : fd(fd) {}
  kj::Maybe<int> getFd() override { return fd; }

 private:
  int fd;
};

}  // namespace bulkhead
