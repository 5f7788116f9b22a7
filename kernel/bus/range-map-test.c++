#include "kernel/bus/range-map.h"

#include <gtest/gtest.h>

namespace bulkhead {
namespace {

TEST(RangeMap, FindsTheOwnerOfEveryAddressInARange) {
  RangeMap<int> map;
  ASSERT_TRUE(map.add(0x3f8, 8, 1).ok());
  EXPECT_EQ(map.find(0x3f7), nullptr);
  ASSERT_NE(map.find(0x3f8), nullptr);
  EXPECT_EQ(map.find(0x3f8)->value, 1);
  EXPECT_EQ(map.find(0x3ff)->value, 1);
  EXPECT_EQ(map.find(0x400), nullptr);
}

TEST(RangeMap, RefusesAZeroSize) {
  RangeMap<int> map;
  EXPECT_EQ(map.add(0x10, 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.size(), 0u);
}

TEST(RangeMap, RefusesWrapAroundButAllowsTheTopOfTheSpace) {
  RangeMap<int> map;
  EXPECT_EQ(map.add(~0ull - 3, 8, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(map.add(~0ull - 3, 4, 2).ok());
  EXPECT_EQ(map.find(~0ull)->value, 2);
}

TEST(RangeMap, RefusesEveryKindOfOverlap) {
  RangeMap<int> map;
  ASSERT_TRUE(map.add(0x100, 0x10, 1).ok());
  EXPECT_EQ(map.add(0x100, 0x10, 2).code(), absl::StatusCode::kAlreadyExists);  // same
  EXPECT_EQ(map.add(0xf8, 0x10, 2).code(), absl::StatusCode::kAlreadyExists);   // tail inside
  EXPECT_EQ(map.add(0x10f, 0x10, 2).code(), absl::StatusCode::kAlreadyExists);  // head inside
  EXPECT_EQ(map.add(0x104, 0x4, 2).code(), absl::StatusCode::kAlreadyExists);   // contained
  EXPECT_EQ(map.add(0x0, 0x1000, 2).code(), absl::StatusCode::kAlreadyExists);  // containing
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(map.find(0x104)->value, 1);
}

TEST(RangeMap, AcceptsAdjacentRanges) {
  RangeMap<int> map;
  ASSERT_TRUE(map.add(0x100, 0x10, 1).ok());
  EXPECT_TRUE(map.add(0xf0, 0x10, 2).ok());
  EXPECT_TRUE(map.add(0x110, 0x10, 3).ok());
  EXPECT_EQ(map.find(0xff)->value, 2);
  EXPECT_EQ(map.find(0x100)->value, 1);
  EXPECT_EQ(map.find(0x110)->value, 3);
}

}  // namespace
}  // namespace bulkhead
