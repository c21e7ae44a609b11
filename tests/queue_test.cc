// Behaviour shared by both ring layouts, tested once through the VirtQueue
// API and the driver-side harness: chains come back with the right segments,
// batching, indirect tables, notification suppression, state and resume.
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::PackedLayout;
using testing::SplitLayout;
using testing::TestGuestMemory;

template <typename Layout>
class QueueTest : public ::testing::Test {
 protected:
  using Driver = typename Layout::Driver;
  using Queue = typename Layout::Queue;

  void SetUp(uint32_t size, testing::DriverOptions options) {
    driver_.emplace(mem_, size, options);
    auto q = Queue::Create(mem_.map(), driver_->config());
    ASSERT_TRUE(q.ok()) << q.status();
    queue_.emplace(*std::move(q));
  }
  void SetUp() override { SetUp(16, {.event_idx = false, .indirect = true}); }

  TestGuestMemory mem_;
  std::optional<Driver> driver_;
  std::optional<Queue> queue_;
  DescriptorChain chain_;
};

using Layouts = ::testing::Types<SplitLayout, PackedLayout>;
using testing::LayoutNames;
TYPED_TEST_SUITE(QueueTest, Layouts, LayoutNames);

TYPED_TEST(QueueTest, EmptyQueuePopsNothing) {
  EXPECT_EQ(this->queue_->Pop(this->chain_), PopStatus::kEmpty);
  EXPECT_FALSE(this->queue_->Publish());
}

TYPED_TEST(QueueTest, ChainRoundTripWithSegmentsInOrder) {
  auto& mem = this->mem_;
  const uint64_t hdr = mem.Alloc(16), data = mem.Alloc(100), status = mem.Alloc(1);
  mem.Fill(hdr, 0x11, 16);
  auto id = this->driver_->Add({Buffer{hdr, 16, false}, Buffer{data, 100, true},
                                Buffer{status, 1, true}});
  ASSERT_TRUE(id.has_value());
  EXPECT_TRUE(this->driver_->Kick());

  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  const DescriptorChain& c = this->chain_;
  ASSERT_TRUE(c.ok()) << RingErrorName(c.error());
  EXPECT_EQ(c.token().id, *id);
  ASSERT_EQ(c.readable().size(), 1u);
  ASSERT_EQ(c.writable().size(), 2u);
  EXPECT_EQ(c.readable()[0].iov_base, mem.Host(hdr));
  EXPECT_EQ(c.readable()[0].iov_len, 16u);
  EXPECT_EQ(c.writable()[0].iov_base, mem.Host(data));
  EXPECT_EQ(c.writable()[1].iov_base, mem.Host(status));
  EXPECT_EQ(c.readable_bytes(), 16u);
  EXPECT_EQ(c.writable_bytes(), 101u);
  EXPECT_EQ(c.descriptor_count(), 3u);
  EXPECT_EQ(this->queue_->in_flight(), TypeParam::kName == std::string("packed") ? 3u : 1u);

  std::vector<uint8_t> out(101, 0x5a);
  EXPECT_EQ(c.CopyToWritable(0, out.data(), out.size()), 101u);
  this->queue_->Push(c.token(), 101);
  EXPECT_TRUE(this->queue_->Publish());
  EXPECT_EQ(this->queue_->in_flight(), 0u);

  auto used = this->driver_->Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, *id);
  EXPECT_EQ(used->len, 101u);
  EXPECT_EQ(mem.template Load<uint8_t>(status), 0x5a);
  EXPECT_EQ(this->driver_->device_error(), "");
  EXPECT_FALSE(this->driver_->Reap().has_value());
}

TYPED_TEST(QueueTest, IndirectChain) {
  auto& mem = this->mem_;
  const uint64_t a = mem.Alloc(8), b = mem.Alloc(24), c = mem.Alloc(4);
  auto id = this->driver_->Add(
      {Buffer{a, 8, false}, Buffer{b, 24, false}, Buffer{c, 4, true}},
      /*indirect=*/true);
  ASSERT_TRUE(id.has_value());
  this->driver_->Kick();
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  ASSERT_TRUE(this->chain_.ok()) << RingErrorName(this->chain_.error());
  EXPECT_EQ(this->chain_.readable_bytes(), 32u);
  EXPECT_EQ(this->chain_.writable_bytes(), 4u);
  EXPECT_EQ(this->chain_.token().id, *id);
  EXPECT_EQ(this->queue_->in_flight(), 1u);
  this->queue_->Push(this->chain_.token(), 4);
  this->queue_->Publish();
  auto used = this->driver_->Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, *id);
  EXPECT_EQ(this->driver_->device_error(), "");
}

TYPED_TEST(QueueTest, CopyHelpersCrossSegments) {
  auto& mem = this->mem_;
  const uint64_t a = mem.Alloc(3), b = mem.Alloc(5), w1 = mem.Alloc(2),
                 w2 = mem.Alloc(6);
  const uint8_t src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  mem.Write(a, src, 3);
  mem.Write(b, src + 3, 5);
  this->driver_->Add({Buffer{a, 3, false}, Buffer{b, 5, false},
                      Buffer{w1, 2, true}, Buffer{w2, 6, true}});
  this->driver_->Kick();
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  uint8_t got[8] = {};
  EXPECT_EQ(this->chain_.CopyFromReadable(1, got, 8), 7u);  // short: 8 - 1
  EXPECT_EQ(0, std::memcmp(got, src + 1, 7));
  EXPECT_EQ(this->chain_.CopyFromReadable(8, got, 1), 0u);
  const uint8_t pattern[4] = {9, 8, 7, 6};
  EXPECT_EQ(this->chain_.CopyToWritable(1, pattern, 4), 4u);
  EXPECT_EQ(mem.template Load<uint8_t>(w1 + 1), 9);
  EXPECT_EQ(mem.template Load<uint8_t>(w2), 8);
  EXPECT_EQ(mem.template Load<uint8_t>(w2 + 2), 6);
  EXPECT_EQ(this->chain_.CopyToWritable(6, pattern, 4), 2u);
}

TYPED_TEST(QueueTest, BatchPublishesOnceAndOutOfOrderCompletion) {
  auto& mem = this->mem_;
  std::vector<uint16_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(*this->driver_->Add({Buffer{mem.Alloc(8), 8, true}}));
  }
  this->driver_->Kick();
  std::vector<UsedToken> tokens;
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
    tokens.push_back(this->chain_.token());
  }
  EXPECT_EQ(this->queue_->Pop(this->chain_), PopStatus::kEmpty);
  // Complete in reverse; nothing visible before Publish().
  for (int i = 4; i >= 0; --i) this->queue_->Push(tokens[i], i);
  EXPECT_FALSE(this->driver_->Reap().has_value());
  EXPECT_TRUE(this->queue_->Publish());
  for (int i = 4; i >= 0; --i) {
    auto used = this->driver_->Reap();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->id, ids[i]);
    EXPECT_EQ(used->len, static_cast<uint32_t>(i));
  }
  EXPECT_EQ(this->driver_->device_error(), "");
}

TYPED_TEST(QueueTest, WrapsManyTimes) {
  // 16-entry ring, 40 rounds of 3 chains of varying length: exercises index
  // wrap-around (packed wrap counters flip every 16 slots).
  auto& mem = this->mem_;
  const uint64_t buf = mem.Alloc(64);
  for (int round = 0; round < 40; ++round) {
    std::vector<uint16_t> ids;
    for (int k = 0; k < 3; ++k) {
      std::vector<Buffer> bufs(1 + (round + k) % 4, Buffer{buf, 4, true});
      auto id = this->driver_->Add(bufs);
      ASSERT_TRUE(id.has_value());
      ids.push_back(*id);
    }
    this->driver_->Kick();
    for (int k = 0; k < 3; ++k) {
      ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
      ASSERT_TRUE(this->chain_.ok());
      EXPECT_EQ(this->chain_.writable_bytes(), 4u * (1 + (round + k) % 4));
      this->queue_->Push(this->chain_.token(), 1);
    }
    this->queue_->Publish();
    for (int k = 0; k < 3; ++k) {
      auto used = this->driver_->Reap();
      ASSERT_TRUE(used.has_value());
      EXPECT_EQ(used->id, ids[k]);
    }
  }
  EXPECT_EQ(this->driver_->device_error(), "");
  EXPECT_EQ(this->queue_->error(), RingError::kNone);
}

TYPED_TEST(QueueTest, DisabledNotificationsSuppressKicks) {
  auto& mem = this->mem_;
  this->queue_->DisableNotification();
  this->driver_->Add({Buffer{mem.Alloc(8), 8, true}});
  EXPECT_FALSE(this->driver_->Kick());
  // Re-enabling reports the buffer that arrived meanwhile.
  EXPECT_TRUE(this->queue_->EnableNotification());
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  EXPECT_FALSE(this->queue_->EnableNotification());
  this->driver_->Add({Buffer{mem.Alloc(8), 8, true}});
  EXPECT_TRUE(this->driver_->Kick());
}

// A polled queue keeps the driver's kicks off whatever the device asks, and
// hands back a wait for a kick that would never come when polling stops.
TYPED_TEST(QueueTest, PolledQueueKeepsKicksSuppressed) {
  for (const bool event_idx : {false, true}) {
    SCOPED_TRACE(event_idx ? "event_idx" : "flags");
    this->SetUp(16, {.event_idx = event_idx, .indirect = true});
    auto& mem = this->mem_;
    auto& q = *this->queue_;
    auto& d = *this->driver_;
    auto pop_all = [&] {
      int n = 0;
      while (q.Pop(this->chain_) == PopStatus::kChain) {
        q.Push(this->chain_.token(), 0);
        ++n;
      }
      q.Publish();
      while (d.Reap().has_value()) {
      }
      return n;
    };
    EXPECT_FALSE(q.EnableNotification());
    EXPECT_FALSE(q.SetPolled(true));
    EXPECT_TRUE(q.polled());
    for (int round = 0; round < 40; ++round) {  // past a 16-entry ring twice
      d.Add({Buffer{mem.Alloc(8), 8, true}});
      EXPECT_FALSE(d.Kick()) << "round " << round;
      // The device waits for buffers: told they are there, no kick asked.
      EXPECT_TRUE(q.EnableNotification());
      d.Add({Buffer{mem.Alloc(8), 8, true}});
      EXPECT_FALSE(d.Kick()) << "round " << round;
      EXPECT_EQ(pop_all(), 2);
      EXPECT_FALSE(q.EnableNotification());
    }
    // Polling stops while the device waits and a buffer came: the caller
    // must process the queue, and kicks are on again.
    d.Add({Buffer{mem.Alloc(8), 8, true}});
    EXPECT_FALSE(d.Kick());
    EXPECT_TRUE(q.SetPolled(false));
    EXPECT_FALSE(q.polled());
    EXPECT_EQ(pop_all(), 1);
    EXPECT_FALSE(q.EnableNotification());
    d.Add({Buffer{mem.Alloc(8), 8, true}});
    EXPECT_TRUE(d.Kick());
    EXPECT_EQ(pop_all(), 1);
    // A device that did not ask for kicks does not get them back.
    EXPECT_FALSE(q.SetPolled(true));
    q.DisableNotification();
    d.Add({Buffer{mem.Alloc(8), 8, true}});
    EXPECT_FALSE(d.Kick());
    EXPECT_FALSE(q.SetPolled(false));
    EXPECT_EQ(pop_all(), 1);
    EXPECT_EQ(d.device_error(), "");
    EXPECT_EQ(q.error(), RingError::kNone);
  }
}

TYPED_TEST(QueueTest, DriverSuppressesInterrupts) {
  auto& mem = this->mem_;
  this->driver_->DisableInterrupts();
  this->driver_->Add({Buffer{mem.Alloc(8), 8, true}});
  this->driver_->Kick();
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  this->queue_->Push(this->chain_.token(), 0);
  EXPECT_FALSE(this->queue_->Publish());
  EXPECT_FALSE(this->driver_->InterruptExpected());
  EXPECT_TRUE(this->driver_->EnableInterrupts());  // one is already pending
  ASSERT_TRUE(this->driver_->Reap().has_value());
  this->driver_->Add({Buffer{mem.Alloc(8), 8, true}});
  this->driver_->Kick();
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  this->queue_->Push(this->chain_.token(), 0);
  EXPECT_TRUE(this->queue_->Publish());
  EXPECT_TRUE(this->driver_->InterruptExpected());
}

TYPED_TEST(QueueTest, ResumeFromState) {
  auto& mem = this->mem_;
  for (int i = 0; i < 3; ++i) this->driver_->Add({Buffer{mem.Alloc(8), 8, true}});
  this->driver_->Kick();
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  this->queue_->Push(this->chain_.token(), 8);
  this->queue_->Publish();
  const QueueState state = this->queue_->state();
  // A new device-side queue resumes where the old one stopped.
  auto resumed = TypeParam::Queue::Create(mem.map(), this->driver_->config(), state);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  int popped = 0;
  while (resumed->Pop(this->chain_) == PopStatus::kChain) {
    resumed->Push(this->chain_.token(), 8);
    ++popped;
  }
  EXPECT_EQ(popped, 2);
  resumed->Publish();
  int reaped = 0;
  while (this->driver_->Reap()) ++reaped;
  EXPECT_EQ(reaped, 3);
  EXPECT_EQ(this->driver_->device_error(), "");
}

}  // namespace
}  // namespace virtio
