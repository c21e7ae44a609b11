// Split ring specifics: setup validation, every malformed-ring case with its
// exact outcome, index wrap-around and EVENT_IDX.
#include "virtio/split_queue.h"

#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using spec::kDescFlagIndirect;
using spec::kDescFlagNext;
using spec::kDescFlagWrite;
using spec::SplitDesc;
using testing::Buffer;
using testing::SplitDriver;
using testing::TestGuestMemory;
using Queue = SplitQueue<GuestMemoryMap>;

class SplitQueueTest : public ::testing::Test {
 protected:
  void Start(uint32_t size = 8, testing::DriverOptions options = {},
             QueueState state = {}) {
    driver_.emplace(mem_, size, options);
    auto q = Queue::Create(mem_.map(), driver_->config(), state);
    ASSERT_TRUE(q.ok()) << q.status();
    queue_.emplace(*std::move(q));
  }
  // Pops expecting a broken ring with error `e`, and checks it stays broken.
  void ExpectBroken(RingError e) {
    EXPECT_EQ(queue_->Pop(chain_), PopStatus::kBroken);
    EXPECT_EQ(queue_->error(), e) << RingErrorName(queue_->error());
    EXPECT_TRUE(IsRingError(queue_->error()));
    EXPECT_EQ(queue_->Pop(chain_), PopStatus::kBroken);
  }
  // Pops expecting a chain that carries chain error `e`; the queue goes on.
  void ExpectBadChain(RingError e) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    EXPECT_EQ(chain_.error(), e) << RingErrorName(chain_.error());
    EXPECT_FALSE(IsRingError(chain_.error()));
    EXPECT_EQ(queue_->error(), RingError::kNone);
  }
  // A good chain after a bad one proves the queue kept going.
  void ExpectQueueStillWorks() {
    auto id = driver_->Add({Buffer{mem_.Alloc(8), 8, true}});
    ASSERT_TRUE(id.has_value());
    driver_->Kick();
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    EXPECT_TRUE(chain_.ok());
    EXPECT_EQ(chain_.token().id, *id);
  }

  TestGuestMemory mem_;
  std::optional<SplitDriver> driver_;
  std::optional<Queue> queue_;
  DescriptorChain chain_;
};

// --- Setup validation ---------------------------------------------------------

TEST_F(SplitQueueTest, CreateRejectsBadSizes) {
  SplitDriver d(mem_, 8);
  for (uint32_t size : {0u, 3u, 12u, 65536u, 32769u}) {
    QueueConfig cfg = d.config();
    cfg.size = size;
    auto q = Queue::Create(mem_.map(), cfg);
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << size;
  }
}

TEST_F(SplitQueueTest, CreateAcceptsMaximumSize) {
  TestGuestMemory big({{.gpa = 0, .size = 2 << 20}});
  SplitDriver d(big, 32768);
  auto q = Queue::Create(big.map(), d.config());
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->size(), 32768u);
}

TEST_F(SplitQueueTest, CreateRejectsMisalignedParts) {
  SplitDriver d(mem_, 8);
  QueueConfig cfg = d.config();
  cfg.desc_addr += 8;  // needs 16
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
  cfg = d.config();
  cfg.driver_addr += 1;  // needs 2
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
  cfg = d.config();
  cfg.device_addr += 2;  // needs 4
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
}

TEST_F(SplitQueueTest, CreateRejectsRingsOutsideMemory) {
  SplitDriver d(mem_, 8);
  const uint64_t end = mem_.map().regions()[0].gpa + mem_.map().regions()[0].size;
  QueueConfig cfg = d.config();
  cfg.desc_addr = end - 64;  // 128-byte table runs past the end
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
  cfg = d.config();
  cfg.device_addr = 0xffff'ffff'ffff'fff0;  // would wrap
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
  cfg = d.config();
  cfg.driver_addr = 0;  // below the only region
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
}

TEST_F(SplitQueueTest, CreateRejectsRingSpanningTwoRegions) {
  TestGuestMemory two({{.gpa = 0x1000, .size = 0x1000}, {.gpa = 0x2000, .size = 0x1000}});
  SplitDriver d(two, 8);
  QueueConfig cfg = d.config();
  cfg.desc_addr = 0x2000 - 64;  // 128 bytes: half in each region
  auto q = Queue::Create(two.map(), cfg);
  EXPECT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("descriptor table"), std::string::npos);
}

TEST_F(SplitQueueTest, CreateRejectsStateWithTooManyInFlight) {
  SplitDriver d(mem_, 8);
  EXPECT_FALSE(Queue::Create(mem_.map(), d.config(), {.next_avail = 9, .next_used = 0}).ok());
  EXPECT_TRUE(Queue::Create(mem_.map(), d.config(), {.next_avail = 8, .next_used = 0}).ok());
  // Wrapped: 3 - 65531 = 8 (mod 2^16).
  EXPECT_TRUE(Queue::Create(mem_.map(), d.config(), {.next_avail = 3, .next_used = 65531}).ok());
}

// --- Ring errors ----------------------------------------------------------------

TEST_F(SplitQueueTest, HeadIndexOutOfRange) {
  Start();
  driver_->PostHead(8);
  ExpectBroken(RingError::kDescriptorIndexOutOfRange);
}

// PrefetchAhead() follows guest indices and addresses before Pop() has
// validated them: out-of-range heads, buffers outside memory and indirect
// tables ahead must be skipped without a stray access (ASan) or any change.
TEST_F(SplitQueueTest, PrefetchAheadSkipsHostileEntries) {
  Start(16);
  const uint64_t b = mem_.Alloc(8);
  driver_->WriteDesc(0, {.addr = b, .len = 8, .flags = kDescFlagWrite, .next = 0});
  driver_->WriteDesc(1, {.addr = 0x9000'0000, .len = 8, .flags = kDescFlagWrite, .next = 0});
  driver_->WriteDesc(2, {.addr = ~uint64_t{0} - 3, .len = 8, .flags = kDescFlagWrite, .next = 0});
  driver_->WriteDesc(3, {.addr = 0x7000'0000, .len = 32, .flags = kDescFlagIndirect, .next = 0});
  // Heads: good ones first, then the hostile ones 4 and 8 ahead of them.
  const uint16_t heads[] = {0, 0, 0, 0, 1, 2, 3, 0, 9999, 1, 2, 3};
  for (uint16_t h : heads) driver_->PostHead(h);
  for (int i = 0; i < 4; ++i) {
    const QueueState before = queue_->state();
    queue_->PrefetchAhead(true);
    queue_->PrefetchAhead(false);
    EXPECT_EQ(queue_->state().next_avail, before.next_avail);
    EXPECT_EQ(queue_->state().next_used, before.next_used);
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    EXPECT_TRUE(chain_.ok());
  }
}

TEST_F(SplitQueueTest, NextIndexOutOfRange) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  driver_->WriteDesc(0, {.addr = b, .len = 8, .flags = kDescFlagNext, .next = 8});
  driver_->PostHead(0);
  ExpectBroken(RingError::kDescriptorIndexOutOfRange);
}

TEST_F(SplitQueueTest, LoopIsDetected) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  driver_->WriteDesc(0, {.addr = b, .len = 8, .flags = kDescFlagNext, .next = 1});
  driver_->WriteDesc(1, {.addr = b, .len = 8, .flags = kDescFlagNext, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kChainTooLong);
}

TEST_F(SplitQueueTest, SelfLoopIsDetected) {
  Start();
  driver_->WriteDesc(3, {.addr = mem_.Alloc(8), .len = 8, .flags = kDescFlagNext, .next = 3});
  driver_->PostHead(3);
  ExpectBroken(RingError::kChainTooLong);
}

TEST_F(SplitQueueTest, ChainUsingEveryDescriptorIsAccepted) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  for (uint16_t i = 0; i < 8; ++i) {
    driver_->WriteDesc(i, {.addr = b, .len = 1,
                           .flags = static_cast<uint16_t>(i < 7 ? kDescFlagNext : 0),
                           .next = static_cast<uint16_t>(i + 1)});
  }
  driver_->PostHead(0);
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_TRUE(chain_.ok());
  EXPECT_EQ(chain_.descriptor_count(), 8u);
}

TEST_F(SplitQueueTest, AvailIndexTooFarAhead) {
  Start();
  driver_->SetAvailIdx(9);  // 9 new entries in an 8-entry ring
  ExpectBroken(RingError::kAvailIndexTooFarAhead);
}

TEST_F(SplitQueueTest, AvailIndexExactlyOneRingAheadIsFine) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  for (int i = 0; i < 8; ++i) driver_->Add({Buffer{b, 8, true}});
  driver_->Kick();
  for (int i = 0; i < 8; ++i) ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_EQ(queue_->Pop(chain_), PopStatus::kEmpty);
}

TEST_F(SplitQueueTest, RepostingHeadsStillInFlightIsDetected) {
  Start(4);
  const uint64_t b = mem_.Alloc(8);
  for (uint16_t i = 0; i < 4; ++i) {
    driver_->WriteDesc(i, {.addr = b, .len = 8, .flags = kDescFlagWrite, .next = 0});
    driver_->PostHead(i);
  }
  for (int i = 0; i < 4; ++i) ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  // Nothing pushed back, yet the driver posts a fifth chain.
  driver_->PostHead(0);
  ExpectBroken(RingError::kAvailIndexTooFarAhead);
}

TEST_F(SplitQueueTest, IndirectWithoutFeature) {
  Start(8, {.indirect = false});
  const uint64_t table = mem_.Alloc(16, 16);
  mem_.Store(table, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = 0, .next = 0});
  driver_->WriteDesc(0, {.addr = table, .len = 16, .flags = kDescFlagIndirect, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kIndirectNotNegotiated);
}

class SplitIndirectLengthTest : public SplitQueueTest,
                                public ::testing::WithParamInterface<uint32_t> {};

TEST_P(SplitIndirectLengthTest, BadIndirectTableLength) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(1 << 20, 16);
  driver_->WriteDesc(0, {.addr = table, .len = GetParam(), .flags = kDescFlagIndirect, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kIndirectTableBadLength);
}

INSTANTIATE_TEST_SUITE_P(Lengths, SplitIndirectLengthTest,
                         ::testing::Values(0u, 8u, 17u, 33u,
                                           // one entry more than 32768
                                           (32768u + 1) * 16));

TEST_F(SplitQueueTest, IndirectTableOutsideMemory) {
  Start(8, {.indirect = true});
  driver_->WriteDesc(0, {.addr = 0x7000'0000, .len = 32, .flags = kDescFlagIndirect, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kIndirectTableOutOfRange);
}

TEST_F(SplitQueueTest, NestedIndirect) {
  Start(8, {.indirect = true});
  const uint64_t inner = mem_.Alloc(16, 16);
  const uint64_t outer = mem_.Alloc(32, 16);
  mem_.Store(inner, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = 0, .next = 0});
  mem_.Store(outer, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = kDescFlagNext, .next = 1});
  mem_.Store(outer + 16, SplitDesc{.addr = inner, .len = 16, .flags = kDescFlagIndirect, .next = 0});
  driver_->WriteDesc(0, {.addr = outer, .len = 32, .flags = kDescFlagIndirect, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kNestedIndirect);
}

TEST_F(SplitQueueTest, IndirectWithNext) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(16, 16);
  mem_.Store(table, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = 0, .next = 0});
  driver_->WriteDesc(0, {.addr = table, .len = 16,
                         .flags = kDescFlagIndirect | kDescFlagNext, .next = 1});
  driver_->WriteDesc(1, {.addr = mem_.Alloc(8), .len = 8, .flags = 0, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kIndirectWithNext);
}

TEST_F(SplitQueueTest, IndirectNotAtHead) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(16, 16);
  mem_.Store(table, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = 0, .next = 0});
  driver_->WriteDesc(0, {.addr = mem_.Alloc(8), .len = 8, .flags = kDescFlagNext, .next = 1});
  driver_->WriteDesc(1, {.addr = table, .len = 16, .flags = kDescFlagIndirect, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kIndirectNotAtHead);
}

TEST_F(SplitQueueTest, IndirectNextOutOfTable) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(32, 16);
  mem_.Store(table, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = kDescFlagNext, .next = 2});
  mem_.Store(table + 16, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = 0, .next = 0});
  driver_->WriteDesc(0, {.addr = table, .len = 32, .flags = kDescFlagIndirect, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kDescriptorIndexOutOfRange);
}

TEST_F(SplitQueueTest, IndirectLoop) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(32, 16);
  mem_.Store(table, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = kDescFlagNext, .next = 1});
  mem_.Store(table + 16, SplitDesc{.addr = mem_.Alloc(8), .len = 8, .flags = kDescFlagNext, .next = 0});
  driver_->WriteDesc(0, {.addr = table, .len = 32, .flags = kDescFlagIndirect, .next = 0});
  driver_->PostHead(0);
  ExpectBroken(RingError::kChainTooLong);
}

TEST_F(SplitQueueTest, IndirectTableLargerThanQueueIsAccepted) {
  // Linux uses indirect tables longer than the ring (e.g. seg_max 254 on a
  // 128-entry queue); only the spec's 32768-entry limit applies.
  Start(4, {.indirect = true, .max_indirect = 64});
  std::vector<Buffer> bufs(40, Buffer{mem_.Alloc(8), 8, false});
  ASSERT_TRUE(driver_->Add(bufs, /*indirect=*/true).has_value());
  driver_->Kick();
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_TRUE(chain_.ok());
  EXPECT_EQ(chain_.descriptor_count(), 40u);
}

// --- Chain errors: the request fails, the queue goes on ------------------------

TEST_F(SplitQueueTest, ReadableAfterWritable) {
  Start();
  driver_->Add({Buffer{mem_.Alloc(8), 8, true}, Buffer{mem_.Alloc(8), 8, false}});
  driver_->Kick();
  ExpectBadChain(RingError::kReadableAfterWritable);
  EXPECT_EQ(chain_.descriptor_count(), 2u);
  queue_->Push(chain_.token(), 0);
  ExpectQueueStillWorks();
}

TEST_F(SplitQueueTest, BufferOutsideMemory) {
  Start();
  driver_->Add({Buffer{mem_.Alloc(8), 8, false}, Buffer{0x9000'0000, 8, true}});
  driver_->Kick();
  ExpectBadChain(RingError::kBufferOutOfRange);
  ExpectQueueStillWorks();
}

TEST_F(SplitQueueTest, BufferRunningPastEndOfMemory) {
  Start();
  const auto& r = mem_.map().regions()[0];
  driver_->Add({Buffer{r.gpa + r.size - 4, 8, true}});
  driver_->Kick();
  ExpectBadChain(RingError::kBufferOutOfRange);
}

TEST_F(SplitQueueTest, BufferAddressOverflow) {
  Start();
  driver_->Add({Buffer{0xffff'ffff'ffff'fff0, 0x20, true}});
  driver_->Kick();
  ExpectBadChain(RingError::kBufferAddressOverflow);
  ExpectQueueStillWorks();
}

TEST_F(SplitQueueTest, ChainLargerThan4GiB) {
  Start();
  driver_->Add({Buffer{mem_.Alloc(16), 16, false}, Buffer{mem_.Alloc(8), 0xffff'fff0, true}});
  driver_->Kick();
  ExpectBadChain(RingError::kChainTooLarge);
}

TEST_F(SplitQueueTest, TooManySegments) {
  Start();
  DescriptorChain small(2);
  const uint64_t b = mem_.Alloc(8);
  driver_->Add({Buffer{b, 1, false}, Buffer{b, 1, false}, Buffer{b, 1, true}});
  driver_->Kick();
  ASSERT_EQ(queue_->Pop(small), PopStatus::kChain);
  EXPECT_EQ(small.error(), RingError::kTooManySegments);
  EXPECT_EQ(small.descriptor_count(), 3u);
}

TEST_F(SplitQueueTest, ZeroLengthDescriptorAddsNoSegment) {
  Start();
  driver_->Add({Buffer{mem_.Alloc(8), 0, false}, Buffer{mem_.Alloc(8), 8, true}});
  driver_->Kick();
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_TRUE(chain_.ok());
  EXPECT_EQ(chain_.readable().size(), 0u);
  EXPECT_EQ(chain_.writable_bytes(), 8u);
}

TEST_F(SplitQueueTest, BufferSpanningAdjacentRegionsGivesTwoSegments) {
  TestGuestMemory two({{.gpa = 0x10000, .size = 0x10000}, {.gpa = 0x20000, .size = 0x10000}});
  SplitDriver d(two, 8);
  auto q = Queue::Create(two.map(), d.config());
  ASSERT_TRUE(q.ok());
  d.Add({Buffer{0x20000 - 100, 300, true}});
  d.Kick();
  ASSERT_EQ(q->Pop(chain_), PopStatus::kChain);
  ASSERT_TRUE(chain_.ok());
  ASSERT_EQ(chain_.writable().size(), 2u);
  EXPECT_EQ(chain_.writable()[0].iov_base, two.Host(0x20000 - 100));
  EXPECT_EQ(chain_.writable()[0].iov_len, 100u);
  EXPECT_EQ(chain_.writable()[1].iov_base, two.Host(0x20000));
  EXPECT_EQ(chain_.writable()[1].iov_len, 200u);
}

TEST_F(SplitQueueTest, PushWithoutPopIsRefused) {
  Start();
  queue_->Push({.id = 0, .ring_slots = 1}, 0);
  EXPECT_EQ(queue_->error(), RingError::kUsedOverflow);
  EXPECT_EQ(queue_->Pop(chain_), PopStatus::kBroken);
  EXPECT_FALSE(driver_->Reap().has_value());
}

// --- Wrap-around and EVENT_IDX --------------------------------------------------

TEST_F(SplitQueueTest, IndicesWrapAt65535) {
  driver_.emplace(mem_, 8);
  driver_->SetAvailIdx(65533);
  // The used ring's idx must agree with the resumed state.
  mem_.Store<uint16_t>(driver_->used_gpa() + 2, 65533);
  auto q = Queue::Create(mem_.map(), driver_->config(),
                         {.next_avail = 65533, .next_used = 65533});
  ASSERT_TRUE(q.ok());
  queue_.emplace(*std::move(q));
  // The harness driver reaps from used index 0; start it at 65533 as well by
  // reaping through a fresh driver state is not possible, so check raw.
  const uint64_t b = mem_.Alloc(8);
  for (uint16_t i = 0; i < 6; ++i) {
    driver_->WriteDesc(i, {.addr = b, .len = 8, .flags = kDescFlagWrite, .next = 0});
    driver_->PostHead(i);
  }
  for (uint16_t i = 0; i < 6; ++i) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain) << i;
    EXPECT_EQ(chain_.token().id, i);
    queue_->Push(chain_.token(), i);
  }
  EXPECT_EQ(queue_->Pop(chain_), PopStatus::kEmpty);
  queue_->Publish();
  EXPECT_EQ(queue_->state().next_avail, 3);  // 65533 + 6
  EXPECT_EQ(mem_.Load<uint16_t>(driver_->used_gpa() + 2), 3);
  // Used elements landed in slots 65533 % 8 = 5, 6, 7, 0, 1, 2.
  for (uint16_t i = 0; i < 6; ++i) {
    const auto e = mem_.Load<spec::SplitUsedElem>(driver_->used_gpa() + 4 + 8 * ((5 + i) % 8));
    EXPECT_EQ(e.id, i);
    EXPECT_EQ(e.len, i);
  }
}

TEST_F(SplitQueueTest, EventIdxInterruptsOnlyWhenUsedEventPassed) {
  Start(8, {.event_idx = true});
  const uint64_t used_event = driver_->avail_gpa() + spec::SplitUsedEventOffset(8);
  const uint64_t b = mem_.Alloc(8);
  for (int i = 0; i < 4; ++i) driver_->Add({Buffer{b, 8, true}});
  driver_->Kick();
  // The driver wants an interrupt only once used->idx passes 2.
  mem_.Store<uint16_t>(used_event, 2);
  std::vector<UsedToken> t;
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    t.push_back(chain_.token());
  }
  queue_->Push(t[0], 0);
  queue_->Push(t[1], 0);
  EXPECT_FALSE(queue_->Publish());  // used idx 0 -> 2: slot 2 not yet used
  queue_->Push(t[2], 0);
  EXPECT_TRUE(queue_->Publish());   // 2 -> 3 covers used_event 2
  queue_->Push(t[3], 0);
  EXPECT_FALSE(queue_->Publish());  // 3 -> 4: already past
}

TEST_F(SplitQueueTest, EventIdxAcrossIndexWrap) {
  // used_event just below the 65535 -> 0 wrap; a batch straddling it must
  // interrupt.
  driver_.emplace(mem_, 8, testing::DriverOptions{.event_idx = true});
  driver_->SetAvailIdx(65534);
  auto q = Queue::Create(mem_.map(), driver_->config(),
                         {.next_avail = 65534, .next_used = 65534});
  ASSERT_TRUE(q.ok());
  queue_.emplace(*std::move(q));
  mem_.Store<uint16_t>(driver_->avail_gpa() + spec::SplitUsedEventOffset(8), 65535);
  const uint64_t b = mem_.Alloc(8);
  for (uint16_t i = 0; i < 3; ++i) {
    driver_->WriteDesc(i, {.addr = b, .len = 8, .flags = kDescFlagWrite, .next = 0});
    driver_->PostHead(i);
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    queue_->Push(chain_.token(), 0);
  }
  EXPECT_TRUE(queue_->Publish());  // 65534 -> 1 covers 65535
}

TEST_F(SplitQueueTest, EventIdxEnableNotificationWritesAvailEvent) {
  Start(8, {.event_idx = true});
  const uint64_t avail_event = driver_->used_gpa() + spec::SplitAvailEventOffset(8);
  const uint64_t b = mem_.Alloc(8);
  driver_->Add({Buffer{b, 8, true}});
  driver_->Add({Buffer{b, 8, true}});
  driver_->Kick();
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_FALSE(queue_->EnableNotification());
  EXPECT_EQ(mem_.Load<uint16_t>(avail_event), 2);
  // The driver's next kick is wanted (its new index passes avail_event)...
  driver_->Add({Buffer{b, 8, true}});
  EXPECT_TRUE(driver_->Kick());
  // ...but not the one after, until the device re-enables.
  driver_->Add({Buffer{b, 8, true}});
  EXPECT_FALSE(driver_->Kick());
}

TEST_F(SplitQueueTest, NoInterruptFlagWithoutEventIdx) {
  Start();
  mem_.Store<uint16_t>(driver_->avail_gpa(), spec::kAvailFlagNoInterrupt);
  driver_->Add({Buffer{mem_.Alloc(8), 8, true}});
  driver_->Kick();
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  queue_->Push(chain_.token(), 0);
  EXPECT_FALSE(queue_->Publish());
}

TEST_F(SplitQueueTest, DisableNotificationSetsNoNotify) {
  Start();
  queue_->DisableNotification();
  EXPECT_EQ(mem_.Load<uint16_t>(driver_->used_gpa()), spec::kUsedFlagNoNotify);
  queue_->EnableNotification();
  EXPECT_EQ(mem_.Load<uint16_t>(driver_->used_gpa()), 0);
}

}  // namespace
}  // namespace virtio

namespace virtio {
namespace {

TEST_F(SplitQueueTest, ZeroLengthWritableBeforeReadableIsStillCaught) {
  Start();
  driver_->Add({Buffer{mem_.Alloc(8), 0, true}, Buffer{mem_.Alloc(8), 8, false}});
  driver_->Kick();
  ExpectBadChain(RingError::kReadableAfterWritable);
}

TEST_F(SplitQueueTest, CreateRejectsMisalignedHostMapping) {
  // The guest address is aligned but the glue mapped it at an odd host
  // address: ring fields could not be accessed atomically.
  auto backing = std::make_unique<uint8_t[]>(0x10000 + 16);
  uint8_t* host = backing.get();
  while (reinterpret_cast<uintptr_t>(host) % 16 != 1) ++host;
  auto map = GuestMemoryMap::Create({{GuestRegion{.gpa = 0x10000, .size = 0x10000, .host = host}}});
  ASSERT_TRUE(map.ok());
  QueueConfig cfg{.size = 8, .desc_addr = 0x10000, .driver_addr = 0x11000, .device_addr = 0x12000};
  auto q = Queue::Create(*map, cfg);
  EXPECT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("host address"), std::string::npos) << q.status();
}

}  // namespace
}  // namespace virtio
