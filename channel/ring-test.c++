#include "channel/ring.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace bulkhead {
namespace {

class RingTest : public ::testing::Test {
 protected:
  void init(uint32_t slots, uint64_t firstSeq) {
    memory.assign(ringBytes(slots) / 8 + 1, 0);
    ringInit(memory.data(), slots, firstSeq);
    this->slots = slots;
  }
  RingHeader& header() { return *reinterpret_cast<RingHeader*>(memory.data()); }
  RingSlot& slotAt(uint64_t seq) {
    auto* slotsBase =
        reinterpret_cast<RingSlot*>(reinterpret_cast<char*>(memory.data()) + sizeof(RingHeader));
    return slotsBase[seq & (slots - 1)];
  }
  static RingStatus popValue(RingConsumer& consumer, uint64_t& value, uint64_t& seq) {
    uint64_t out[RING_SLOT_WORDS];
    size_t words = 0;
    RingStatus status = consumer.pop(kj::arrayPtr(out, RING_SLOT_WORDS), words, seq);
    if (status == RingStatus::OK) value = words == 1 ? out[0] : ~0ull;
    return status;
  }

  std::vector<uint64_t> memory;
  uint32_t slots = 0;
};

TEST_F(RingTest, DeliversInOrderWithSequenceNumbers) {
  init(8, 100);
  RingProducer producer(memory.data(), 8);
  RingConsumer consumer(memory.data(), 8);
  for (uint64_t i = 0; i < 5; ++i) {
    uint64_t value = i * 11;
    ASSERT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::OK);
  }
  for (uint64_t i = 0; i < 5; ++i) {
    uint64_t value, seq;
    ASSERT_EQ(popValue(consumer, value, seq), RingStatus::OK);
    EXPECT_EQ(value, i * 11);
    EXPECT_EQ(seq, 100 + i);
  }
  uint64_t value, seq;
  EXPECT_EQ(popValue(consumer, value, seq), RingStatus::EMPTY);
}

TEST_F(RingTest, ReportsFullThenAcceptsAgainAfterAPop) {
  init(4, 0);
  RingProducer producer(memory.data(), 4);
  RingConsumer consumer(memory.data(), 4);
  uint64_t value = 7;
  for (int i = 0; i < 4; ++i) ASSERT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::OK);
  EXPECT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::FULL);
  uint64_t got, seq;
  ASSERT_EQ(popValue(consumer, got, seq), RingStatus::OK);
  EXPECT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::OK);
  EXPECT_EQ(producer.pending(), 4u);
}

TEST_F(RingTest, SequenceNumbersWrapAroundTheTopOf64Bits) {
  init(4, ~0ull - 5);
  RingProducer producer(memory.data(), 4);
  RingConsumer consumer(memory.data(), 4);
  uint64_t expectedSeq = ~0ull - 5;
  for (uint64_t i = 0; i < 20; ++i) {
    ASSERT_EQ(producer.push(kj::arrayPtr(&i, 1)), RingStatus::OK);
    uint64_t value, seq;
    ASSERT_EQ(popValue(consumer, value, seq), RingStatus::OK);
    EXPECT_EQ(value, i);
    EXPECT_EQ(seq, expectedSeq++);
  }
  EXPECT_LT(consumer.nextSeq(), 100u);  // it did wrap
}

TEST_F(RingTest, ConsumerRefusesAProducerIndexTooFarAhead) {
  init(4, 0);
  RingConsumer consumer(memory.data(), 4);
  header().head.store(5);  // five messages in a four-slot ring: a lie
  uint64_t value, seq;
  EXPECT_EQ(popValue(consumer, value, seq), RingStatus::CORRUPT);
}

TEST_F(RingTest, ConsumerRefusesASlotWithTheWrongSequenceNumber) {
  init(4, 0);
  RingProducer producer(memory.data(), 4);
  RingConsumer consumer(memory.data(), 4);
  uint64_t value = 1;
  ASSERT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::OK);
  slotAt(0).seq.store(3);
  uint64_t seq;
  EXPECT_EQ(popValue(consumer, value, seq), RingStatus::CORRUPT);
}

TEST_F(RingTest, ConsumerRefusesAnOversizedSlot) {
  init(4, 0);
  RingProducer producer(memory.data(), 4);
  RingConsumer consumer(memory.data(), 4);
  uint64_t value = 1;
  ASSERT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::OK);
  slotAt(0).words = RING_SLOT_WORDS + 1;
  uint64_t seq;
  EXPECT_EQ(popValue(consumer, value, seq), RingStatus::CORRUPT);
}

TEST_F(RingTest, ProducerRefusesAConsumerIndexAheadOfItself) {
  init(4, 0);
  RingProducer producer(memory.data(), 4);
  header().tail.store(3);  // consumer claims to have read what was never written
  uint64_t value = 1;
  EXPECT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::CORRUPT);
}

TEST_F(RingTest, ProducerRefusesAPayloadLargerThanASlot) {
  init(4, 0);
  RingProducer producer(memory.data(), 4);
  std::vector<uint64_t> big(RING_SLOT_WORDS + 1, 0);
  EXPECT_EQ(producer.push(kj::arrayPtr(big.data(), big.size())), RingStatus::CORRUPT);
}

TEST_F(RingTest, SleepingConsumerIsWokenOnceAndNotWhenAwake) {
  init(4, 0);
  RingProducer producer(memory.data(), 4);
  RingConsumer consumer(memory.data(), 4);
  uint64_t value = 1;
  ASSERT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::OK);
  EXPECT_FALSE(producer.consumerNeedsWake());  // consumer never said it sleeps
  EXPECT_FALSE(consumer.prepareSleep());       // a message waits: must not sleep
  uint64_t seq;
  ASSERT_EQ(popValue(consumer, value, seq), RingStatus::OK);
  EXPECT_TRUE(consumer.prepareSleep());
  ASSERT_EQ(producer.push(kj::arrayPtr(&value, 1)), RingStatus::OK);
  EXPECT_TRUE(producer.consumerNeedsWake());
  EXPECT_FALSE(producer.consumerNeedsWake());  // one wake-up per sleep
}

TEST(RingSlots, OnlyPowersOfTwoWithinBounds) {
  EXPECT_FALSE(ringSlotsValid(0));
  EXPECT_FALSE(ringSlotsValid(1));
  EXPECT_TRUE(ringSlotsValid(2));
  EXPECT_FALSE(ringSlotsValid(6));
  EXPECT_TRUE(ringSlotsValid(256));
  EXPECT_FALSE(ringSlotsValid(1u << 17));
}

}  // namespace
}  // namespace bulkhead
