// PostCodes without a guest: what a write logs and what a read returns.
#include "servers/post-codes/post-codes.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

TEST(PostCodes, EachWriteIsOneLineWithTheCode) {
  PostCodes codes;
  EXPECT_EQ(codes.write(0x2c), "post 0x2c\n");
  EXPECT_EQ(codes.write(0x00), "post 0x00\n");
  EXPECT_EQ(codes.state.written, 2u);
}

TEST(PostCodes, AReadReturnsTheLastCodeAndAllOnesBeforeAny) {
  PostCodes codes;
  EXPECT_EQ(codes.read(), 0xff);
  codes.write(0x55);
  EXPECT_EQ(codes.read(), 0x55);
}

TEST(PostCodes, TheDeclaredStateCarriesTheLastCodeAcrossARestart) {
  PostCodes before;
  before.write(0x42);
  PostCodes after;
  after.state = before.state;  // what the SDK restores from the state region
  EXPECT_EQ(after.read(), 0x42);
  EXPECT_EQ(after.state.written, 1u);
}

}  // namespace
}  // namespace bulkhead
