// The one place KJ's exceptions become the core's absl::Status: at the RPC boundary with device
// servers and at the event loop's listeners. The description loses KJ's "remote exception: "
// and "failed: " prefixes, which say nothing to a user.
#pragma once

#include <string>

#include <absl/status/status.h>
#include <kj/exception.h>

namespace bulkhead {

std::string describeException(const kj::Exception& exception);
// kFailedPrecondition with the description: a peer or the host refused something.
absl::Status statusFromException(const kj::Exception& exception);

}  // namespace bulkhead
