// Packed ring specifics: setup validation, every malformed-ring case with its
// exact outcome, wrap counters, buffer IDs, used descriptor flags and event
// suppression.
#include "virtio/packed_queue.h"

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
using spec::PackedDesc;
using testing::Buffer;
using testing::PackedDriver;
using testing::TestGuestMemory;
using Queue = PackedQueue<GuestMemoryMap>;

class PackedQueueTest : public ::testing::Test {
 protected:
  void Start(uint32_t size = 8, testing::DriverOptions options = {},
             QueueState state = {}) {
    driver_.emplace(mem_, size, options);
    auto q = Queue::Create(mem_.map(), driver_->config(), state);
    ASSERT_TRUE(q.ok()) << q.status();
    queue_.emplace(*std::move(q));
  }
  void ExpectBroken(RingError e) {
    EXPECT_EQ(queue_->Pop(chain_), PopStatus::kBroken);
    EXPECT_EQ(queue_->error(), e) << RingErrorName(queue_->error());
    EXPECT_TRUE(IsRingError(queue_->error()));
    EXPECT_EQ(queue_->Pop(chain_), PopStatus::kBroken);
  }
  void ExpectBadChain(RingError e) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    EXPECT_EQ(chain_.error(), e) << RingErrorName(chain_.error());
    EXPECT_FALSE(IsRingError(chain_.error()));
    EXPECT_EQ(queue_->error(), RingError::kNone);
  }
  PackedDesc Desc(uint64_t addr, uint32_t len, uint16_t flags, uint16_t id = 0) {
    return {.addr = addr, .len = len, .id = id, .flags = flags};
  }
  uint16_t UsedFlagsAt(uint16_t offset) {
    return mem_.Load<uint16_t>(driver_->desc_gpa(offset) + 14);
  }

  TestGuestMemory mem_;
  std::optional<PackedDriver> driver_;
  std::optional<Queue> queue_;
  DescriptorChain chain_;
};

// --- Setup validation ---------------------------------------------------------

TEST_F(PackedQueueTest, CreateAcceptsAnySizeUpTo32768) {
  for (uint32_t size : {1u, 3u, 100u, 257u}) {
    PackedDriver d(mem_, size);
    EXPECT_TRUE(Queue::Create(mem_.map(), d.config()).ok()) << size;
  }
  PackedDriver d(mem_, 8);
  QueueConfig cfg = d.config();
  for (uint32_t size : {0u, 32769u, 65536u}) {
    cfg.size = size;
    EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok()) << size;
  }
}

TEST_F(PackedQueueTest, CreateRejectsMisalignedOrMissingParts) {
  PackedDriver d(mem_, 8);
  QueueConfig cfg = d.config();
  cfg.desc_addr += 8;
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
  cfg = d.config();
  cfg.driver_addr += 2;
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
  cfg = d.config();
  cfg.device_addr = 0x4000'0000;
  EXPECT_FALSE(Queue::Create(mem_.map(), cfg).ok());
}

TEST_F(PackedQueueTest, CreateValidatesResumeState) {
  PackedDriver d(mem_, 8);
  EXPECT_FALSE(Queue::Create(mem_.map(), d.config(), {.next_avail = 8}).ok());
  EXPECT_FALSE(Queue::Create(mem_.map(), d.config(), {.next_used = 9}).ok());
  // avail one full ring ahead of used (other wrap, same offset): allowed.
  EXPECT_TRUE(Queue::Create(mem_.map(), d.config(),
                            {.next_avail = 2, .next_used = 2,
                             .avail_wrap = false, .used_wrap = true})
                  .ok());
  // avail two slots *behind* used in the same round: read forwards, it is
  // 14 of the 16 (offset, wrap) positions ahead, more than a ring.
  EXPECT_FALSE(Queue::Create(mem_.map(), d.config(),
                             {.next_avail = 1, .next_used = 3,
                              .avail_wrap = true, .used_wrap = true})
                   .ok());
  // avail in the next round, behind used's offset: 6 ahead, fine.
  EXPECT_TRUE(Queue::Create(mem_.map(), d.config(),
                            {.next_avail = 1, .next_used = 3,
                             .avail_wrap = false, .used_wrap = true})
                  .ok());
}

// --- Availability and wrap counters ----------------------------------------------

TEST_F(PackedQueueTest, ZeroedRingIsEmpty) {
  Start();
  EXPECT_EQ(queue_->Pop(chain_), PopStatus::kEmpty);
}

TEST_F(PackedQueueTest, StaleDescriptorFromPreviousRoundIsNotAvailable) {
  Start(4);
  const uint64_t b = mem_.Alloc(8);
  // One full round: 4 chains, all used and reaped.
  for (int i = 0; i < 4; ++i) driver_->Add({Buffer{b, 8, true}});
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    queue_->Push(chain_.token(), 8);
  }
  queue_->Publish();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(driver_->Reap().has_value());
  // Slot 0 still holds a used descriptor from round 1; in round 2 (wrap 0)
  // it is not available.
  EXPECT_EQ(queue_->Pop(chain_), PopStatus::kEmpty);
  // A descriptor marked available with the *old* wrap bits is not either.
  mem_.Store<uint16_t>(driver_->desc_gpa(0) + 14, spec::kDescFlagAvail);
  EXPECT_EQ(queue_->Pop(chain_), PopStatus::kEmpty);
  // With round-2 bits (AVAIL=0, USED=1) it is.
  mem_.Store<uint16_t>(driver_->desc_gpa(0) + 14, spec::kDescFlagUsed | kDescFlagWrite);
  EXPECT_EQ(queue_->Pop(chain_), PopStatus::kChain);
}

TEST_F(PackedQueueTest, ChainWrapsAroundRingEnd) {
  Start(4);
  const uint64_t b = mem_.Alloc(8);
  driver_->Add({Buffer{b, 8, true}});
  driver_->Add({Buffer{b, 8, true}});
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    queue_->Push(chain_.token(), 8);
  }
  queue_->Publish();
  driver_->Reap();
  driver_->Reap();
  // A 3-descriptor chain in slots 2, 3, 0 (the last in the next round).
  auto id = driver_->Add({Buffer{b, 1, false}, Buffer{b, 2, true}, Buffer{b, 3, true}});
  ASSERT_TRUE(id.has_value());
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_TRUE(chain_.ok());
  EXPECT_EQ(chain_.token().id, *id);
  EXPECT_EQ(chain_.token().ring_slots, 3);
  EXPECT_EQ(chain_.writable_bytes(), 5u);
  EXPECT_EQ(queue_->state().next_avail, 1);
  EXPECT_FALSE(queue_->state().avail_wrap);
}

TEST_F(PackedQueueTest, BufferIdComesFromLastDescriptor) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  driver_->PlaceRaw({{Desc(b, 8, kDescFlagNext, 111), Desc(b, 8, kDescFlagWrite, 222)}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_EQ(chain_.token().id, 222);
  EXPECT_EQ(chain_.token().ring_slots, 2);
}

TEST_F(PackedQueueTest, UsedDescriptorFlagsAndLength) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  auto read_id = driver_->Add({Buffer{b, 8, false}});
  auto write_id = driver_->Add({Buffer{b, 8, true}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  const UsedToken first = chain_.token();
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  const UsedToken second = chain_.token();
  queue_->Push(first, 0);
  queue_->Push(second, 5);
  // Before Publish the batch head is not yet used.
  EXPECT_EQ(UsedFlagsAt(0) & spec::kDescFlagUsed, 0);
  queue_->Publish();
  const uint16_t used_bits = spec::kDescFlagAvail | spec::kDescFlagUsed;
  EXPECT_EQ(UsedFlagsAt(0), used_bits);                   // nothing written
  EXPECT_EQ(UsedFlagsAt(1), used_bits | kDescFlagWrite);  // 5 bytes written
  EXPECT_EQ(mem_.Load<uint16_t>(driver_->desc_gpa(0) + 12), *read_id);
  EXPECT_EQ(mem_.Load<uint32_t>(driver_->desc_gpa(1) + 8), 5u);
  EXPECT_EQ(mem_.Load<uint16_t>(driver_->desc_gpa(1) + 12), *write_id);
}

// Under IN_ORDER a run of zero-length pushes is one used descriptor: the
// last buffer's ID at the run's first slot, the slots after it untouched.
// A push with a length ends the run and gets its own descriptor.
TEST_F(PackedQueueTest, InOrderFoldsZeroLengthRunsIntoOneUsedDescriptor) {
  Start(16, {.in_order = true});
  const uint64_t b = mem_.Alloc(64);
  // Slots: A 0, B 1-2, C 3, D 4, E 5-7.
  std::vector<uint16_t> ids;
  ids.push_back(*driver_->Add({Buffer{b, 8, false}}));
  ids.push_back(*driver_->Add({Buffer{b, 8, false}, Buffer{b + 8, 8, false}}));
  ids.push_back(*driver_->Add({Buffer{b, 8, true}}));
  ids.push_back(*driver_->Add({Buffer{b, 8, false}}));
  ids.push_back(*driver_->Add({Buffer{b, 8, false}, Buffer{b + 8, 8, false},
                               Buffer{b + 16, 8, false}}));
  std::vector<UsedToken> popped;
  while (queue_->Pop(chain_) == PopStatus::kChain)
    popped.push_back(chain_.token());
  ASSERT_EQ(popped.size(), 5u);
  const uint16_t avail_flags_before = UsedFlagsAt(1);
  queue_->Push(popped[0], 0);
  queue_->Push(popped[1], 0);
  queue_->Push(popped[2], 3);
  queue_->Push(popped[3], 0);
  queue_->Push(popped[4], 0);
  EXPECT_EQ(queue_->state().next_used, 8);
  EXPECT_TRUE(queue_->Publish());
  const uint16_t used_bits = spec::kDescFlagAvail | spec::kDescFlagUsed;
  auto id_at = [&](uint16_t slot) {
    return mem_.Load<uint16_t>(driver_->desc_gpa(slot) + 12);
  };
  EXPECT_EQ(UsedFlagsAt(0), used_bits);  // A and B
  EXPECT_EQ(id_at(0), ids[1]);
  EXPECT_EQ(UsedFlagsAt(1), avail_flags_before);  // B's slots left alone
  EXPECT_EQ(UsedFlagsAt(3), used_bits | kDescFlagWrite);  // C, 3 bytes
  EXPECT_EQ(id_at(3), ids[2]);
  EXPECT_EQ(UsedFlagsAt(4), used_bits);  // D and E
  EXPECT_EQ(id_at(4), ids[4]);
  EXPECT_NE(UsedFlagsAt(5) & spec::kDescFlagUsed, spec::kDescFlagUsed);
  // The driver, knowing its avail order, reaps all five.
  const uint32_t want_len[] = {0, 0, 3, 0, 0};
  for (int i = 0; i < 5; ++i) {
    const auto used = driver_->Reap();
    ASSERT_TRUE(used.has_value()) << i;
    EXPECT_EQ(used->id, ids[i]);
    EXPECT_EQ(used->len, want_len[i]);
  }
  EXPECT_FALSE(driver_->Reap().has_value());
  EXPECT_EQ(driver_->device_error(), "");
}

// Without IN_ORDER every push has its own used descriptor.
TEST_F(PackedQueueTest, WithoutInOrderEveryBufferHasAUsedDescriptor) {
  Start(8);
  const uint64_t b = mem_.Alloc(8);
  for (int i = 0; i < 3; ++i) driver_->Add({Buffer{b, 8, false}});
  std::vector<UsedToken> popped;
  while (queue_->Pop(chain_) == PopStatus::kChain)
    popped.push_back(chain_.token());
  for (const UsedToken& t : popped) queue_->Push(t, 0);
  queue_->Publish();
  for (uint16_t slot = 0; slot < 3; ++slot) {
    EXPECT_EQ(UsedFlagsAt(slot), spec::kDescFlagAvail | spec::kDescFlagUsed);
    EXPECT_EQ(mem_.Load<uint16_t>(driver_->desc_gpa(slot) + 12),
              popped[slot].id);
  }
}

// --- Ring errors ----------------------------------------------------------------

TEST_F(PackedQueueTest, EndlessNextChain) {
  Start(4);
  const uint64_t b = mem_.Alloc(8);
  driver_->PlaceRaw({{Desc(b, 8, kDescFlagNext), Desc(b, 8, kDescFlagNext),
                      Desc(b, 8, kDescFlagNext), Desc(b, 8, kDescFlagNext)}});
  ExpectBroken(RingError::kChainTooLong);
}

TEST_F(PackedQueueTest, ChainUsingWholeRingIsAccepted) {
  Start(4);
  const uint64_t b = mem_.Alloc(8);
  driver_->PlaceRaw({{Desc(b, 8, kDescFlagNext), Desc(b, 8, kDescFlagNext),
                      Desc(b, 8, kDescFlagNext), Desc(b, 8, 0, 7)}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_EQ(chain_.token().ring_slots, 4);
  EXPECT_EQ(chain_.token().id, 7);
}

TEST_F(PackedQueueTest, ChainLongerThanFreeSlots) {
  Start(4);
  const uint64_t b = mem_.Alloc(8);
  driver_->Add({Buffer{b, 8, true}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);  // one slot in flight
  // Three more NEXT descriptors would need the in-flight slot too.
  driver_->PlaceRaw({{Desc(b, 8, kDescFlagNext), Desc(b, 8, kDescFlagNext),
                      Desc(b, 8, kDescFlagNext)}});
  ExpectBroken(RingError::kChainTooLong);
}

TEST_F(PackedQueueTest, MoreAvailableThanRingHolds) {
  Start(2);
  const uint64_t b = mem_.Alloc(8);
  driver_->PlaceRaw({{Desc(b, 8, 0, 0)}});
  driver_->PlaceRaw({{Desc(b, 8, 0, 1)}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  // The driver overwrites slot 0 while the device still holds it.
  driver_->PlaceRaw({{Desc(b, 8, 0, 2)}});
  ExpectBroken(RingError::kAvailIndexTooFarAhead);
}

TEST_F(PackedQueueTest, IndirectWithoutFeature) {
  Start(8, {.indirect = false});
  const uint64_t table = mem_.Alloc(16, 16);
  mem_.Store(table, Desc(mem_.Alloc(8), 8, 0));
  driver_->PlaceRaw({{Desc(table, 16, kDescFlagIndirect)}});
  ExpectBroken(RingError::kIndirectNotNegotiated);
}

class PackedIndirectLengthTest : public PackedQueueTest,
                                 public ::testing::WithParamInterface<uint32_t> {};

TEST_P(PackedIndirectLengthTest, BadIndirectTableLength) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(1 << 20, 16);
  driver_->PlaceRaw({{Desc(table, GetParam(), kDescFlagIndirect)}});
  ExpectBroken(RingError::kIndirectTableBadLength);
}

INSTANTIATE_TEST_SUITE_P(Lengths, PackedIndirectLengthTest,
                         ::testing::Values(0u, 4u, 24u, 100u, (32768u + 1) * 16));

// PrefetchAhead() reads descriptors Pop() has not validated yet: buffers
// outside memory, address overflow and indirect tables ahead, and slots
// across the wrap, must be skipped without a stray access (ASan) or any
// change to the ring's state.
TEST_F(PackedQueueTest, PrefetchAheadSkipsHostileEntries) {
  Start(8, {.indirect = true});
  const uint64_t b = mem_.Alloc(8);
  for (int round = 0; round < 3; ++round) {
    driver_->PlaceRaw({{Desc(b, 8, kDescFlagWrite, 1)}});
    driver_->PlaceRaw({{Desc(b, 8, kDescFlagWrite, 2)}});
    driver_->PlaceRaw({{Desc(0x9000'0000, 8, kDescFlagWrite, 3)}});
    driver_->PlaceRaw({{Desc(~uint64_t{0} - 3, 8, kDescFlagWrite, 4)}});
    driver_->PlaceRaw({{Desc(0x5000'0000, 32, kDescFlagIndirect, 5)}});
    for (int i = 0; i < 5; ++i) {
      const QueueState before = queue_->state();
      queue_->PrefetchAhead(true);
      queue_->PrefetchAhead(false);
      const QueueState after = queue_->state();
      EXPECT_EQ(after.next_avail, before.next_avail);
      EXPECT_EQ(after.avail_wrap, before.avail_wrap);
      const PopStatus st = queue_->Pop(chain_);
      if (i == 4) {
        ASSERT_EQ(st, PopStatus::kBroken);  // the indirect table
        Start(8, {.indirect = true});
        break;
      }
      ASSERT_EQ(st, PopStatus::kChain);
      queue_->Push(chain_.token(), 0);
      queue_->Publish();
    }
  }
}

TEST_F(PackedQueueTest, IndirectTableOutsideMemory) {
  Start(8, {.indirect = true});
  driver_->PlaceRaw({{Desc(0x5000'0000, 32, kDescFlagIndirect)}});
  ExpectBroken(RingError::kIndirectTableOutOfRange);
}

TEST_F(PackedQueueTest, NestedIndirect) {
  Start(8, {.indirect = true});
  const uint64_t inner = mem_.Alloc(16, 16), outer = mem_.Alloc(32, 16);
  mem_.Store(inner, Desc(mem_.Alloc(8), 8, 0));
  mem_.Store(outer, Desc(mem_.Alloc(8), 8, 0));
  mem_.Store(outer + 16, Desc(inner, 16, kDescFlagIndirect));
  driver_->PlaceRaw({{Desc(outer, 32, kDescFlagIndirect)}});
  ExpectBroken(RingError::kNestedIndirect);
}

TEST_F(PackedQueueTest, IndirectWithNext) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(16, 16);
  mem_.Store(table, Desc(mem_.Alloc(8), 8, 0));
  driver_->PlaceRaw({{Desc(table, 16, kDescFlagIndirect | kDescFlagNext),
                      Desc(mem_.Alloc(8), 8, 0)}});
  ExpectBroken(RingError::kIndirectWithNext);
}

TEST_F(PackedQueueTest, IndirectNotAtHead) {
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(16, 16);
  mem_.Store(table, Desc(mem_.Alloc(8), 8, 0));
  driver_->PlaceRaw({{Desc(mem_.Alloc(8), 8, kDescFlagNext), Desc(table, 16, kDescFlagIndirect)}});
  ExpectBroken(RingError::kIndirectNotAtHead);
}

TEST_F(PackedQueueTest, IndirectIgnoresNextAndIdInsideTable) {
  // Inside a packed indirect table only WRITE matters; entries are
  // consecutive whatever NEXT says (§2.8.7).
  Start(8, {.indirect = true});
  const uint64_t table = mem_.Alloc(48, 16), b = mem_.Alloc(8);
  mem_.Store(table, Desc(b, 1, 0, 999));
  mem_.Store(table + 16, Desc(b, 2, kDescFlagNext, 5));
  mem_.Store(table + 32, Desc(b, 3, kDescFlagWrite));
  driver_->PlaceRaw({{Desc(table, 48, kDescFlagIndirect, 4)}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_TRUE(chain_.ok());
  EXPECT_EQ(chain_.readable_bytes(), 3u);
  EXPECT_EQ(chain_.writable_bytes(), 3u);
  EXPECT_EQ(chain_.token().id, 4);
  EXPECT_EQ(chain_.token().ring_slots, 1);
}

// --- Chain errors ---------------------------------------------------------------

TEST_F(PackedQueueTest, BadBufferMidChainStillConsumesWholeChain) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  driver_->PlaceRaw({{Desc(b, 8, kDescFlagNext), Desc(0x6000'0000, 8, kDescFlagNext | kDescFlagWrite),
                      Desc(b, 8, kDescFlagWrite, 3)}});
  ExpectBadChain(RingError::kBufferOutOfRange);
  EXPECT_EQ(chain_.token().ring_slots, 3);
  EXPECT_EQ(chain_.token().id, 3);
  EXPECT_EQ(queue_->state().next_avail, 3);
  queue_->Push(chain_.token(), 0);
  // The next chain is found right after the bad one.
  auto id = driver_->Add({Buffer{b, 8, true}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  EXPECT_TRUE(chain_.ok());
  EXPECT_EQ(chain_.token().id, *id);
}

TEST_F(PackedQueueTest, ReadableAfterWritable) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  driver_->Add({Buffer{b, 8, true}, Buffer{b, 8, false}});
  ExpectBadChain(RingError::kReadableAfterWritable);
}

TEST_F(PackedQueueTest, AddressOverflow) {
  Start();
  driver_->Add({Buffer{0xffff'ffff'ffff'ff00, 0x1000, false}});
  ExpectBadChain(RingError::kBufferAddressOverflow);
}

TEST_F(PackedQueueTest, ChainLargerThan4GiB) {
  Start(8, {.indirect = true});
  driver_->Add({Buffer{mem_.Alloc(16), 16, false}, Buffer{mem_.Alloc(8), 0xffff'fff0, true}},
               /*indirect=*/true);
  ExpectBadChain(RingError::kChainTooLarge);
}

TEST_F(PackedQueueTest, PushMoreSlotsThanInFlightIsRefused) {
  Start();
  driver_->Add({Buffer{mem_.Alloc(8), 8, true}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  queue_->Push({.id = chain_.token().id, .ring_slots = 2}, 0);
  EXPECT_EQ(queue_->error(), RingError::kUsedOverflow);
}

// --- Event suppression -------------------------------------------------------------

TEST_F(PackedQueueTest, DriverEventDisableAndEnable) {
  Start();
  const uint64_t b = mem_.Alloc(8);
  mem_.Store<uint16_t>(driver_->driver_event_gpa() + 2, spec::kRingEventFlagsDisable);
  driver_->Add({Buffer{b, 8, true}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  queue_->Push(chain_.token(), 0);
  EXPECT_FALSE(queue_->Publish());
  mem_.Store<uint16_t>(driver_->driver_event_gpa() + 2, spec::kRingEventFlagsEnable);
  driver_->Add({Buffer{b, 8, true}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  queue_->Push(chain_.token(), 0);
  EXPECT_TRUE(queue_->Publish());
}

TEST_F(PackedQueueTest, DriverEventDescMode) {
  Start(4, {.event_idx = true});
  const uint64_t b = mem_.Alloc(8);
  // Interrupt only when the used descriptor at offset 2 of round 1 is written.
  mem_.Store<uint16_t>(driver_->driver_event_gpa(), 2 | spec::kEventWrapBit);
  mem_.Store<uint16_t>(driver_->driver_event_gpa() + 2, spec::kRingEventFlagsDesc);
  for (int i = 0; i < 4; ++i) driver_->Add({Buffer{b, 8, true}});
  std::vector<UsedToken> t;
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    t.push_back(chain_.token());
  }
  queue_->Push(t[0], 0);
  queue_->Push(t[1], 0);
  EXPECT_FALSE(queue_->Publish());  // slots 0, 1
  queue_->Push(t[2], 0);
  EXPECT_TRUE(queue_->Publish());   // slot 2
  queue_->Push(t[3], 0);
  EXPECT_FALSE(queue_->Publish());  // slot 3
}

TEST_F(PackedQueueTest, DriverEventDescModeAcrossWrap) {
  Start(4, {.event_idx = true});
  const uint64_t b = mem_.Alloc(8);
  for (int i = 0; i < 3; ++i) driver_->Add({Buffer{b, 8, true}});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
    queue_->Push(chain_.token(), 0);
  }
  queue_->Publish();
  for (int i = 0; i < 3; ++i) driver_->Reap();
  // Event at offset 0 of round 2 (wrap counter 0).
  mem_.Store<uint16_t>(driver_->driver_event_gpa(), 0);
  mem_.Store<uint16_t>(driver_->driver_event_gpa() + 2, spec::kRingEventFlagsDesc);
  driver_->Add({Buffer{b, 8, true}});  // slot 3, round 1
  driver_->Add({Buffer{b, 8, true}});  // slot 0, round 2
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  queue_->Push(chain_.token(), 0);
  EXPECT_FALSE(queue_->Publish());  // slot 3 of round 1
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  queue_->Push(chain_.token(), 0);
  EXPECT_TRUE(queue_->Publish());   // slot 0 of round 2
}

TEST_F(PackedQueueTest, DescModeWithoutEventIdxActsAsEnable) {
  Start(4, {.event_idx = false});
  mem_.Store<uint16_t>(driver_->driver_event_gpa(), 3 | spec::kEventWrapBit);
  mem_.Store<uint16_t>(driver_->driver_event_gpa() + 2, spec::kRingEventFlagsDesc);
  driver_->Add({Buffer{mem_.Alloc(8), 8, true}});
  ASSERT_EQ(queue_->Pop(chain_), PopStatus::kChain);
  queue_->Push(chain_.token(), 0);
  EXPECT_TRUE(queue_->Publish());
}

TEST_F(PackedQueueTest, DeviceEventSuppressionFlags) {
  Start();
  queue_->DisableNotification();
  EXPECT_EQ(mem_.Load<uint16_t>(driver_->device_event_gpa() + 2), spec::kRingEventFlagsDisable);
  EXPECT_FALSE(queue_->EnableNotification());
  EXPECT_EQ(mem_.Load<uint16_t>(driver_->device_event_gpa() + 2), spec::kRingEventFlagsEnable);
}

}  // namespace
}  // namespace virtio
