// Ring observer hooks (ring_observer.h) and Resubmit(): what a vhost-user
// back-end needs to track inflight requests and dirty pages, and to resume
// after a crash with the requests it had in flight.
#include "virtio/ring_observer.h"

#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/descriptor_chain.h"
#include "virtio/packed_queue.h"
#include "virtio/queue.h"
#include "virtio/split_queue.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::TestGuestMemory;

struct Event {
  enum Kind { kPop, kPush, kPublish } kind;
  uint16_t id = 0;
  uint16_t slots = 0;
  uint16_t position = 0;
  uint32_t len = 0;
  bool resubmitted = false;
  QueueState state;
};

struct Recorder {
  void OnPop(const DescriptorChain& chain, uint16_t position,
             bool resubmitted) {
    events.push_back({Event::kPop,
                      chain.token().id,
                      chain.token().ring_slots,
                      position,
                      0,
                      resubmitted,
                      {}});
  }
  void OnPush(UsedToken token, uint32_t len, uint16_t position) {
    events.push_back(
        {Event::kPush, token.id, token.ring_slots, position, len, false, {}});
  }
  void OnPublish(const QueueState& state) {
    events.push_back({Event::kPublish, 0, 0, 0, 0, false, state});
  }
  std::vector<Event> events;
};
static_assert(RingObserver<Recorder>);
static_assert(!RingObserver<NoRingObserver>);

struct SplitObserved {
  static constexpr const char* kName = "split";
  static constexpr bool kPacked = false;
  using Driver = testing::SplitDriver;
  using Queue = SplitQueue<GuestMemoryMap, Recorder>;
};
struct PackedObserved {
  static constexpr const char* kName = "packed";
  static constexpr bool kPacked = true;
  using Driver = testing::PackedDriver;
  using Queue = PackedQueue<GuestMemoryMap, Recorder>;
};

struct Names {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

template <typename Layout>
class RingObserverTest : public ::testing::Test {
 protected:
  using Driver = typename Layout::Driver;
  using Queue = typename Layout::Queue;

  void SetUp() override {
    driver_.emplace(mem_, 8, testing::DriverOptions{.indirect = true});
    auto q = Queue::Create(mem_.map(), driver_->config(), {}, &recorder_);
    ASSERT_TRUE(q.ok()) << q.status();
    queue_.emplace(*std::move(q));
  }

  // Adds a chain of `n` buffers (1 readable + n-1 writable) and kicks.
  uint16_t AddChain(int n, bool indirect = false) {
    std::vector<Buffer> bufs;
    bufs.push_back({mem_.Alloc(16), 16, false});
    for (int i = 1; i < n; ++i) bufs.push_back({mem_.Alloc(64), 64, true});
    auto id = driver_->Add(bufs, indirect);
    EXPECT_TRUE(id.has_value());
    driver_->Kick();
    return id.value_or(0);
  }

  // What a back-end saves at OnPop for a packed chain: its ring slots.
  std::vector<spec::PackedDesc> SavedDescs(uint16_t first, uint16_t slots) {
    std::vector<spec::PackedDesc> descs(slots);
    for (uint16_t i = 0; i < slots; ++i) {
      const uint16_t off = static_cast<uint16_t>((first + i) % 8);
      std::memcpy(&descs[i], mem_.Host(driver_->desc_gpa(off)), 16);
    }
    return descs;
  }

  TestGuestMemory mem_;
  Recorder recorder_;
  std::optional<Driver> driver_;
  std::optional<Queue> queue_;
  DescriptorChain chain_;
};

using Layouts = ::testing::Types<SplitObserved, PackedObserved>;
TYPED_TEST_SUITE(RingObserverTest, Layouts, Names);

TYPED_TEST(RingObserverTest, SeesPopPushPublishInOrder) {
  const uint16_t a = this->AddChain(2);
  const uint16_t b = this->AddChain(3);
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  const UsedToken ta = this->chain_.token();
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  const UsedToken tb = this->chain_.token();
  this->queue_->Push(tb, 7);
  this->queue_->Push(ta, 0);
  EXPECT_TRUE(this->queue_->Publish());

  const auto& ev = this->recorder_.events;
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[0].kind, Event::kPop);
  EXPECT_EQ(ev[0].id, a);
  EXPECT_FALSE(ev[0].resubmitted);
  EXPECT_EQ(ev[1].kind, Event::kPop);
  EXPECT_EQ(ev[1].id, b);
  // Split: available-ring index. Packed: first ring slot of the chain.
  EXPECT_EQ(ev[0].position, 0);
  EXPECT_EQ(ev[1].position, TypeParam::kPacked ? 2 : 1);
  EXPECT_EQ(ev[2].kind, Event::kPush);
  EXPECT_EQ(ev[2].id, b);
  EXPECT_EQ(ev[2].len, 7u);
  EXPECT_EQ(ev[2].position, 0);
  EXPECT_EQ(ev[3].kind, Event::kPush);
  EXPECT_EQ(ev[3].id, a);
  // Split: used-ring index. Packed: b occupied 3 slots, so a's used
  // descriptor goes to slot 3.
  EXPECT_EQ(ev[3].position, TypeParam::kPacked ? 3 : 1);
  EXPECT_EQ(ev[4].kind, Event::kPublish);
  EXPECT_EQ(ev[4].state.next_used, this->queue_->state().next_used);
  EXPECT_EQ(ev[4].state.next_avail, this->queue_->state().next_avail);

  // Nothing new: no publish event.
  EXPECT_FALSE(this->queue_->Publish());
  EXPECT_EQ(ev.size(), 5u);
  EXPECT_TRUE(this->driver_->Reap().has_value());
  EXPECT_TRUE(this->driver_->Reap().has_value());
  EXPECT_EQ(this->driver_->device_error(), "");
}

// A back-end pops four chains, completes one, and crashes. A new queue,
// created at the position the crashed one had reached, gets the three
// unfinished chains with Resubmit(): Pop() hands them out first, in order,
// with the same buffers; then new chains follow. The driver gets every
// chain back exactly once.
TYPED_TEST(RingObserverTest, ResubmitAfterCrashDeliversEachChainOnce) {
  std::vector<uint16_t> ids;
  ids.push_back(this->AddChain(2));
  ids.push_back(this->AddChain(1, /*indirect=*/true));
  ids.push_back(this->AddChain(2));
  ids.push_back(this->AddChain(1));
  struct Popped {
    UsedToken token;
    uint16_t position;
    std::vector<const void*> bases;
    std::vector<spec::PackedDesc> descs;
  };
  std::vector<Popped> popped;
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
    Popped p{
        this->chain_.token(), this->recorder_.events.back().position, {}, {}};
    for (const iovec& v : this->chain_.readable())
      p.bases.push_back(v.iov_base);
    for (const iovec& v : this->chain_.writable())
      p.bases.push_back(v.iov_base);
    if (TypeParam::kPacked) {
      p.descs = this->SavedDescs(p.position, p.token.ring_slots);
    }
    popped.push_back(std::move(p));
  }
  // Complete the second one: on a packed ring its used descriptor
  // overwrites the first chain's descriptor in slot 0, which is why a
  // back-end must save packed descriptors at pop time.
  this->queue_->Push(popped[1].token, 0);
  this->queue_->Publish();
  const QueueState crashed_at = this->queue_->state();
  this->queue_.reset();  // the crash

  std::vector<ResubmitChain> resubmit;
  for (int i : {0, 2, 3}) {
    resubmit.push_back({popped[i].token.id, popped[i].descs});
  }
  Recorder recorder2;
  auto q = TypeParam::Queue::Create(this->mem_.map(), this->driver_->config(),
                                    crashed_at, &recorder2);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(q->Resubmit(resubmit).ok());
  for (int i : {0, 2, 3}) {
    ASSERT_EQ(q->Pop(this->chain_), PopStatus::kChain);
    ASSERT_TRUE(this->chain_.ok()) << RingErrorName(this->chain_.error());
    EXPECT_EQ(this->chain_.token().id, popped[i].token.id);
    EXPECT_EQ(this->chain_.token().ring_slots, popped[i].token.ring_slots);
    std::vector<const void*> bases;
    for (const iovec& v : this->chain_.readable()) bases.push_back(v.iov_base);
    for (const iovec& v : this->chain_.writable()) bases.push_back(v.iov_base);
    EXPECT_EQ(bases, popped[i].bases);
    ASSERT_FALSE(recorder2.events.empty());
    EXPECT_TRUE(recorder2.events.back().resubmitted);
    q->Push(this->chain_.token(), 0);
  }
  EXPECT_EQ(q->Pop(this->chain_), PopStatus::kEmpty);
  const uint16_t fresh = this->AddChain(2);
  ASSERT_EQ(q->Pop(this->chain_), PopStatus::kChain);
  EXPECT_EQ(this->chain_.token().id, fresh);
  EXPECT_FALSE(recorder2.events.back().resubmitted);
  q->Push(this->chain_.token(), 0);
  q->Publish();
  EXPECT_EQ(q->in_flight(), 0u);

  std::multiset<uint16_t> reaped;
  while (auto u = this->driver_->Reap()) reaped.insert(u->id);
  EXPECT_EQ(reaped,
            (std::multiset<uint16_t>{ids[0], ids[1], ids[2], ids[3], fresh}));
  EXPECT_EQ(this->driver_->device_error(), "");
}

TYPED_TEST(RingObserverTest, ResubmitRejectsMoreThanInFlight) {
  this->AddChain(1);
  ASSERT_EQ(this->queue_->Pop(this->chain_), PopStatus::kChain);
  const UsedToken t = this->chain_.token();
  const QueueState at = this->queue_->state();
  std::vector<spec::PackedDesc> descs = this->SavedDescs(0, 1);
  auto q = TypeParam::Queue::Create(this->mem_.map(), this->driver_->config(),
                                    at, nullptr);
  ASSERT_TRUE(q.ok());
  const ResubmitChain one{t.id, descs};
  const ResubmitChain again{static_cast<uint16_t>(t.id + 1), descs};
  EXPECT_FALSE(q->Resubmit({one, again}).ok());
  EXPECT_TRUE(q->Resubmit({one}).ok());
}

TEST(SplitResubmitTest, RejectsBadHeads) {
  TestGuestMemory mem;
  testing::SplitDriver driver(mem, 8);
  const QueueState at{.next_avail = 3, .next_used = 0};
  auto q = SplitQueue<GuestMemoryMap>::Create(mem.map(), driver.config(), at);
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(q->Resubmit(std::vector<ResubmitChain>{{8, {}}}).ok());
  EXPECT_FALSE(q->Resubmit(std::vector<ResubmitChain>{{1, {}}, {1, {}}}).ok());
  EXPECT_TRUE(q->Resubmit(std::vector<ResubmitChain>{{1, {}}, {2, {}}}).ok());
}

TEST(PackedResubmitTest, RejectsEmptyAndMalformedSavedChains) {
  TestGuestMemory mem;
  testing::PackedDriver driver(mem, 8);
  const QueueState at{.next_avail = 2, .next_used = 0};
  auto q = PackedQueue<GuestMemoryMap>::Create(mem.map(), driver.config(), at);
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(q->Resubmit(std::vector<ResubmitChain>{{0, {}}}).ok());

  // Two slots in flight; a saved chain claiming three does not fit.
  const uint64_t buf = mem.Alloc(64);
  std::vector<spec::PackedDesc> three(3, {buf, 64, 0, spec::kDescFlagNext});
  three[2].flags = 0;
  EXPECT_FALSE(q->Resubmit(std::vector<ResubmitChain>{{0, three}}).ok());

  // A saved chain whose last descriptor still says NEXT is malformed: Pop()
  // reports the ring broken instead of walking past the saved slots.
  std::vector<spec::PackedDesc> bad(2, {buf, 64, 0, spec::kDescFlagNext});
  ASSERT_TRUE(q->Resubmit(std::vector<ResubmitChain>{{0, bad}}).ok());
  DescriptorChain chain;
  EXPECT_EQ(q->Pop(chain), PopStatus::kBroken);

  // Buffers outside guest memory are a chain error, as from the ring.
  auto q2 = PackedQueue<GuestMemoryMap>::Create(mem.map(), driver.config(), at);
  ASSERT_TRUE(q2.ok());
  std::vector<spec::PackedDesc> outside(1, {uint64_t{1} << 60, 64, 0, 0});
  ASSERT_TRUE(q2->Resubmit(std::vector<ResubmitChain>{{3, outside}}).ok());
  ASSERT_EQ(q2->Pop(chain), PopStatus::kChain);
  EXPECT_EQ(chain.error(), RingError::kBufferOutOfRange);
  EXPECT_EQ(chain.token().id, 3);
}

}  // namespace
}  // namespace virtio
