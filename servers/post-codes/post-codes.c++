#include "servers/post-codes/post-codes.h"

#include <cstdio>

namespace bulkhead {

std::string PostCodes::write(uint8_t code) {
  state.last = code;
  ++state.written;
  char line[16];
  snprintf(line, sizeof(line), "post 0x%02x\n", code);
  return line;
}

}  // namespace bulkhead
