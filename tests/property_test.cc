// Property-style tests of both ring layouts: long random interleavings of
// driver and device operations, checked step by step against a model.
//
// Driver side (the harness in virtio/testing/driver.h): Add chains of 1..6
// buffers (readable first, random lengths, sometimes indirect, sometimes
// straddling adjacent guest memory regions), Kick, Reap, and toggle
// interrupts. Device side (the queue under test): Pop, Push in random order
// with a random used length, Publish, and toggle notifications.
//
// Checked properties:
//  * every added chain is popped once, in order, with exactly the segments
//    (host pointers, lengths) and byte counts the driver added;
//  * every chain comes back to the driver exactly once, in push order, with
//    the pushed length and its ID;
//  * Add() fails exactly when the model says the ring is full; Pop() finds a
//    chain exactly when one is visible; in_flight() and outstanding() match;
//  * Publish()'s decision equals the driver's own InterruptExpected();
//  * EnableNotification()/EnableInterrupts() report pending work exactly;
//  * no lost wake-ups: a side that went to sleep (its Enable* call returned
//    false) is always woken by the other side's next Kick()/Publish() that
//    hands it new work;
//  * no queue error and no device_error() from the driver.
#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::DriverOptions;
using testing::PackedLayout;
using testing::RegionSpec;
using testing::SplitLayout;
using testing::TestGuestMemory;

// Guest memory: one region for the rings (the harness allocates from it),
// and three adjacent 64 KiB data regions that nothing allocates from, so
// buffers can be placed anywhere in them, including across the borders.
constexpr uint64_t kRingRegion = 0x10000;
constexpr uint64_t kRingRegionSize = 2 << 20;
constexpr uint64_t kData = 0x1000000;
constexpr uint64_t kDataRegionSize = 0x10000;
constexpr int kDataRegions = 3;
constexpr uint64_t kDataEnd = kData + kDataRegions * kDataRegionSize;

const RegionSpec kRegions[] = {
    {.gpa = kRingRegion, .size = kRingRegionSize},
    {.gpa = kData, .size = kDataRegionSize},
    {.gpa = kData + kDataRegionSize, .size = kDataRegionSize},
    {.gpa = kData + 2 * kDataRegionSize, .size = kDataRegionSize},
};

struct Params {
  uint32_t size;
  bool event_idx;
  bool indirect;
  // IN_ORDER: the device pushes in pop order, and a packed queue folds runs
  // of zero-length pushes into one used descriptor.
  bool in_order;
  uint32_t seed;
  int steps;
};

std::string ToString(const Params& p) {
  return absl::StrFormat(
      "size=%u event_idx=%d indirect=%d in_order=%d seed=%u steps=%d", p.size,
      p.event_idx, p.indirect, p.in_order, p.seed, p.steps);
}

struct Segment {
  const void* base;
  size_t len;
};

// The driver's record of one chain it added.
struct ChainModel {
  std::vector<Buffer> buffers;
  bool indirect = false;
  uint32_t descriptors = 0;  // split: descriptor table entries it occupies
  uint32_t slots = 0;        // packed: ring slots it occupies
  uint64_t readable = 0;
  uint64_t writable = 0;
  std::vector<Segment> segments;  // expected device view, readable first
};

// How much of the state space a run covered; checked so that a change that
// makes the random walk degenerate (e.g. never filling the ring) is noticed.
struct Coverage {
  uint64_t completed = 0;       // chains reaped
  uint64_t add_refused = 0;     // Add() returned nullopt (ring full)
  uint64_t straddling = 0;      // buffers split into several segments
  uint64_t indirect = 0;        // indirect chains added
  uint64_t publish_notify = 0;  // Publish() of a batch returned true
  uint64_t publish_quiet = 0;   // Publish() of a batch returned false
  uint64_t kick_notify = 0;     // Kick() returned true
  uint64_t kick_quiet = 0;      // Kick() of new chains returned false
  uint64_t device_sleeps = 0;
  uint64_t driver_sleeps = 0;
  uint64_t full_ring = 0;  // steps with every descriptor/slot taken

  void Add(const Coverage& o) {
    completed += o.completed;
    add_refused += o.add_refused;
    straddling += o.straddling;
    indirect += o.indirect;
    publish_notify += o.publish_notify;
    publish_quiet += o.publish_quiet;
    kick_notify += o.kick_notify;
    kick_quiet += o.kick_quiet;
    device_sleeps += o.device_sleeps;
    driver_sleeps += o.driver_sleeps;
    full_ring += o.full_ring;
  }
};

struct Pushed {
  uint16_t id;
  uint32_t len;
};

template <typename Layout>
class PropertyRun {
 public:
  using Driver = typename Layout::Driver;
  using Queue = typename Layout::Queue;
  static constexpr bool kPacked = std::is_same_v<Layout, PackedLayout>;

  explicit PropertyRun(const Params& p)
      : p_(p),
        rng_(p.seed),
        mem_(kRegions),
        driver_(mem_, p.size,
                DriverOptions{.event_idx = p.event_idx,
                              .indirect = p.indirect,
                              .max_indirect = 8,
                              .in_order = p.in_order}) {}

  const Coverage& coverage() const { return cov_; }

  void Run() {
    auto q = Queue::Create(mem_.map(), driver_.config());
    ASSERT_TRUE(q.ok()) << q.status();
    queue_.emplace(*std::move(q));
    // The walk goes through phases that favour the driver (the ring fills
    // up and Add() has to refuse), the device (the ring drains), or neither.
    static constexpr double kWeights[3][8] = {
        // Add Kick Pop Push Publish Reap DevToggle DrvToggle
        {28, 12, 18, 14, 10, 10, 4, 4},  // balanced
        {45, 15, 8, 8, 6, 6, 6, 6},      // driver ahead
        {8, 8, 25, 20, 15, 20, 2, 2},    // device ahead
    };
    std::discrete_distribution<int> action(std::begin(kWeights[0]),
                                           std::end(kWeights[0]));
    int phase_left = 0;
    for (step_ = 0; step_ < p_.steps; ++step_) {
      if (phase_left-- == 0) {
        const auto& w = kWeights[Uniform(0, 2)];
        action = std::discrete_distribution<int>(std::begin(w), std::end(w));
        phase_left = static_cast<int>(Uniform(200, 800));
      }
      switch (action(rng_)) {
        case 0:
          Add();
          break;
        case 1:
          Kick();
          break;
        case 2:
          Pop();
          break;
        case 3:
          Push();
          break;
        case 4:
          Publish();
          break;
        case 5:
          Reap();
          break;
        case 6:
          DeviceToggle();
          break;
        default:
          DriverToggle();
          break;
      }
      CheckInvariants();
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "stopped at step " << step_;
        return;
      }
    }
    Drain();
  }

 private:
  uint32_t Uniform(uint32_t lo, uint32_t hi) {
    return std::uniform_int_distribution<uint32_t>(lo, hi)(rng_);
  }
  bool Chance(uint32_t percent) { return Uniform(0, 99) < percent; }

  // --- Model bookkeeping ---

  // Chains the device can see but has not popped.
  size_t Visible() const {
    return kPacked ? avail_order_.size() : avail_order_.size() - unkicked_;
  }
  // Host segments of [gpa, gpa+len), split at region borders.
  void AppendSegments(uint64_t gpa, uint64_t len, std::vector<Segment>& out) {
    while (len > 0) {
      uint64_t region_end = 0;
      for (const RegionSpec& r : kRegions) {
        if (gpa >= r.gpa && gpa - r.gpa < r.size) region_end = r.gpa + r.size;
      }
      ASSERT_NE(region_end, 0u) << "test bug: buffer outside memory";
      const uint64_t take = std::min(len, region_end - gpa);
      out.push_back({mem_.Host(gpa, take), static_cast<size_t>(take)});
      gpa += take;
      len -= take;
    }
  }

  Buffer RandomBuffer(bool writable) {
    Buffer b;
    b.writable = writable;
    const uint32_t kind = Uniform(0, 99);
    if (kind < 3) {
      // Empty buffer.
      b.len = 0;
      b.gpa = kData + Uniform(0, kDataRegions * kDataRegionSize - 1);
    } else if (kind < 15) {
      // Straddles the border between two adjacent data regions.
      const uint64_t border =
          kData + kDataRegionSize * Uniform(1, kDataRegions - 1);
      b.len = Uniform(2, 8192);
      b.gpa = border - Uniform(1, b.len - 1);
    } else if (kind < 18) {
      // Covers the whole middle region and parts of both neighbours.
      b.gpa = kData + kDataRegionSize - Uniform(1, 4096);
      b.len = static_cast<uint32_t>(kData + 2 * kDataRegionSize - b.gpa) +
              Uniform(1, 4096);
    } else {
      b.len = Chance(80) ? Uniform(1, 512) : Uniform(513, 16384);
      b.gpa = kData + Uniform(0, static_cast<uint32_t>(
                                     kDataRegions * kDataRegionSize - b.len));
    }
    EXPECT_LE(b.gpa + b.len, kDataEnd);
    return b;
  }

  // --- Driver actions ---

  void Add() {
    const bool indirect = p_.indirect && Chance(30);
    // Mostly chains that can fit a small ring; sometimes any length, so
    // that Add() also has to refuse.
    const uint32_t max_len =
        (indirect || Chance(20)) ? 6 : std::min<uint32_t>(6, p_.size);
    const uint32_t n = Uniform(1, max_len);
    const uint32_t readable = Uniform(0, n);
    ChainModel c;
    c.indirect = indirect;
    c.descriptors = indirect ? 1 : n;
    c.slots = indirect ? 1 : n;
    for (uint32_t i = 0; i < n; ++i) {
      c.buffers.push_back(RandomBuffer(/*writable=*/i >= readable));
      const Buffer& b = c.buffers.back();
      (b.writable ? c.writable : c.readable) += b.len;
      const size_t before = c.segments.size();
      AppendSegments(b.gpa, b.len, c.segments);
      if (c.segments.size() > before + 1) ++cov_.straddling;
    }
    if (kPacked && slots_since_kick_ + c.slots >= 2 * p_.size) {
      // Work around a harness bug (see PackedKickHarnessTest below): the
      // PackedDriver cannot tell "exactly 2 * size slots added since the
      // last Kick()" from "nothing added" and then fails to notify. Kick
      // before that can happen, as Linux forces a kick when its num_added
      // counter would overflow.
      Kick();
    }
    bool fits;
    if constexpr (kPacked) {
      fits = outstanding_.size() < p_.size && used_slots_ + c.slots <= p_.size;
    } else {
      fits = used_descriptors_ + c.descriptors <= p_.size;
    }
    const std::optional<uint16_t> id = driver_.Add(c.buffers, indirect);
    ASSERT_EQ(id.has_value(), fits)
        << "Add of " << n << " buffers (indirect=" << indirect << ") with "
        << outstanding_.size() << " chains outstanding";
    if (!id) {
      ++cov_.add_refused;
      return;
    }
    ASSERT_EQ(outstanding_.count(*id), 0u) << "ID " << *id << " reused";
    if (indirect) ++cov_.indirect;
    used_slots_ += c.slots;
    used_descriptors_ += c.descriptors;
    slots_since_kick_ += c.slots;
    outstanding_.emplace(*id, std::move(c));
    avail_order_.push_back(*id);
    ++unkicked_;
    ++added_since_kick_;
  }

  void Kick() {
    const bool new_work = kPacked ? added_since_kick_ > 0 : unkicked_ > 0;
    const bool notify = driver_.Kick();
    unkicked_ = 0;
    added_since_kick_ = 0;
    slots_since_kick_ = 0;
    if (device_asleep_ && new_work) {
      EXPECT_TRUE(notify) << "lost wake-up: the device enabled notifications "
                             "and sleeps, but Kick() of new buffers did not "
                             "notify it";
    }
    if (notify) {
      ++cov_.kick_notify;
      device_asleep_ = false;
    } else if (new_work) {
      ++cov_.kick_quiet;
    }
  }

  void Reap() {
    if (driver_asleep_) return;
    for (uint32_t k = Uniform(1, 4); k > 0; --k) {
      const std::optional<testing::UsedBuffer> used = driver_.Reap();
      ASSERT_EQ(used.has_value(), !published_.empty());
      if (!used) return;
      const Pushed want = published_.front();
      published_.pop_front();
      ASSERT_EQ(used->id, want.id);
      ASSERT_EQ(used->len, want.len) << "id " << want.id;
      const auto it = outstanding_.find(want.id);
      ASSERT_NE(it, outstanding_.end());
      ++cov_.completed;
      used_slots_ -= it->second.slots;
      used_descriptors_ -= it->second.descriptors;
      outstanding_.erase(it);
    }
  }

  void DriverToggle() {
    if (driver_asleep_) return;
    if (Chance(40)) {
      driver_.DisableInterrupts();
      return;
    }
    const bool pending = driver_.EnableInterrupts();
    ASSERT_EQ(pending, !published_.empty())
        << "EnableInterrupts() must report published, unreaped buffers";
    if (!pending && Chance(60)) {
      driver_asleep_ = true;
      ++cov_.driver_sleeps;
    }
  }

  // --- Device actions ---

  void Pop() {
    if (device_asleep_) return;
    for (uint32_t k = Uniform(1, 5); k > 0; --k) {
      const PopStatus s = queue_->Pop(chain_);
      ASSERT_NE(s, PopStatus::kBroken) << RingErrorName(queue_->error());
      ASSERT_EQ(s == PopStatus::kChain, Visible() > 0);
      if (s != PopStatus::kChain) return;
      const uint16_t want_id = avail_order_.front();
      avail_order_.pop_front();
      ASSERT_TRUE(chain_.ok()) << RingErrorName(chain_.error());
      ASSERT_EQ(chain_.token().id, want_id) << "chains popped out of order";
      const ChainModel& c = outstanding_.at(want_id);
      ASSERT_EQ(chain_.token().ring_slots, kPacked ? c.slots : 1u);
      ASSERT_EQ(chain_.readable_bytes(), c.readable);
      ASSERT_EQ(chain_.writable_bytes(), c.writable);
      ASSERT_EQ(chain_.descriptor_count(), c.buffers.size());
      const size_t nr = chain_.readable().size();
      ASSERT_EQ(nr + chain_.writable().size(), c.segments.size());
      for (size_t i = 0; i < c.segments.size(); ++i) {
        const iovec& got =
            i < nr ? chain_.readable()[i] : chain_.writable()[i - nr];
        ASSERT_EQ(got.iov_base, c.segments[i].base) << "segment " << i;
        ASSERT_EQ(got.iov_len, c.segments[i].len) << "segment " << i;
      }
      uint64_t readable_bytes = 0;
      for (const iovec& v : chain_.readable()) readable_bytes += v.iov_len;
      ASSERT_EQ(readable_bytes, c.readable);
      in_flight_.push_back(chain_.token());
      in_flight_model_ += kPacked ? c.slots : 1;
    }
  }

  void Push() {
    if (in_flight_.empty()) return;
    // In order: oldest first (in_flight_ holds pop order reversed).
    if (p_.in_order) {
      std::reverse(in_flight_.begin(), in_flight_.end());
    } else {
      std::shuffle(in_flight_.begin(), in_flight_.end(), rng_);
    }
    for (uint32_t k = Uniform(1, static_cast<uint32_t>(in_flight_.size()));
         k > 0; --k) {
      const UsedToken t = in_flight_.back();
      in_flight_.pop_back();
      const ChainModel& c = outstanding_.at(t.id);
      const uint64_t writable = c.writable;
      in_flight_model_ -= kPacked ? c.slots : 1;
      uint32_t len;
      const uint32_t kind = Uniform(0, 9);
      // In order, mostly zero: runs of them become one used descriptor.
      if (kind == 0 || writable == 0 || (p_.in_order && kind < 6)) {
        len = 0;
      } else if (kind == 1) {
        len = static_cast<uint32_t>(writable);
      } else {
        len = Uniform(0, static_cast<uint32_t>(writable));
      }
      queue_->Push(t, len);
      pushed_.push_back({t.id, len});
    }
    if (p_.in_order) std::reverse(in_flight_.begin(), in_flight_.end());
  }

  void Publish() {
    const bool new_work = !pushed_.empty();
    const bool notify = queue_->Publish();
    const bool expected = driver_.InterruptExpected();
    EXPECT_EQ(notify, expected)
        << "Publish() and the driver's InterruptExpected() disagree after "
           "publishing "
        << pushed_.size() << " buffers";
    if (driver_asleep_ && new_work) {
      EXPECT_TRUE(notify) << "lost interrupt: the driver enabled interrupts "
                             "and sleeps, but Publish() of new used buffers "
                             "did not interrupt it";
    }
    if (!new_work) {
      EXPECT_FALSE(notify) << "interrupt for an empty batch";
    }
    if (notify) driver_asleep_ = false;
    if (new_work) ++(notify ? cov_.publish_notify : cov_.publish_quiet);
    published_.insert(published_.end(), pushed_.begin(), pushed_.end());
    pushed_.clear();
  }

  void DeviceToggle() {
    if (device_asleep_) return;
    if (Chance(40)) {
      queue_->DisableNotification();
      return;
    }
    const bool pending = queue_->EnableNotification();
    ASSERT_EQ(pending, Visible() > 0)
        << "EnableNotification() must report buffers not yet popped";
    if (!pending && Chance(60)) {
      device_asleep_ = true;
      ++cov_.device_sleeps;
    }
  }

  void CheckInvariants() {
    ASSERT_EQ(queue_->error(), RingError::kNone)
        << RingErrorName(queue_->error());
    ASSERT_EQ(driver_.device_error(), "");
    ASSERT_EQ(queue_->in_flight(), in_flight_model_);
    ASSERT_EQ(driver_.outstanding(), outstanding_.size());
    if ((kPacked ? used_slots_ : used_descriptors_) == p_.size)
      ++cov_.full_ring;
  }

  // Hands everything back and checks that nothing is left anywhere.
  void Drain() {
    device_asleep_ = driver_asleep_ = false;
    for (int round = 0; !outstanding_.empty(); ++round) {
      ASSERT_LT(round, 4) << "chains stuck: " << outstanding_.size();
      Kick();
      while (Visible() > 0) ASSERT_NO_FATAL_FAILURE(Pop());
      while (!in_flight_.empty()) Push();
      Publish();
      while (!published_.empty()) ASSERT_NO_FATAL_FAILURE(Reap());
      ASSERT_NO_FATAL_FAILURE(CheckInvariants());
    }
    EXPECT_EQ(queue_->Pop(chain_), PopStatus::kEmpty);
    EXPECT_FALSE(driver_.Reap().has_value());
    EXPECT_EQ(queue_->in_flight(), 0u);
    EXPECT_EQ(driver_.outstanding(), 0u);
    EXPECT_EQ(queue_->error(), RingError::kNone);
    EXPECT_EQ(driver_.device_error(), "");
  }

  const Params p_;
  std::mt19937 rng_;
  TestGuestMemory mem_;
  Driver driver_;
  std::optional<Queue> queue_;
  DescriptorChain chain_;
  int step_ = 0;
  Coverage cov_;

  std::map<uint16_t, ChainModel> outstanding_;  // added, not reaped
  std::deque<uint16_t> avail_order_;            // added, not popped
  size_t unkicked_ = 0;            // split: tail of avail_order_ not yet kicked
  size_t added_since_kick_ = 0;    // packed: adds since the last Kick()
  uint32_t slots_since_kick_ = 0;  // packed: ring slots added since then
  std::vector<UsedToken> in_flight_;  // popped, not pushed
  uint32_t in_flight_model_ = 0;      // what queue_->in_flight() must say
  uint32_t used_descriptors_ = 0;     // split: descriptors of outstanding_
  uint32_t used_slots_ = 0;           // packed: ring slots of outstanding_
  std::deque<Pushed> pushed_;         // pushed, not published
  std::deque<Pushed> published_;      // published, not reaped
  bool device_asleep_ = false;
  bool driver_asleep_ = false;
};

template <typename Layout>
class PropertyTest : public ::testing::Test {
 protected:
  static std::vector<uint32_t> Sizes() {
    if (std::is_same_v<Layout, PackedLayout>) return {1, 2, 3, 16, 100, 256};
    return {1, 2, 16, 256};
  }

  static void RunAll(bool event_idx, bool indirect, bool in_order = false) {
    Coverage total;
    for (uint32_t size : Sizes()) {
      for (uint32_t seed_index = 0; seed_index < 3; ++seed_index) {
        const Params p{.size = size,
                       .event_idx = event_idx,
                       .indirect = indirect,
                       .in_order = in_order,
                       .seed = 1000003u * seed_index + 7919u * size +
                               (event_idx ? 17u : 0u) + (indirect ? 31u : 0u) +
                               (in_order ? 53u : 0u),
                       .steps = size >= 100 ? 8000 : 4000};
        SCOPED_TRACE(std::string(Layout::kName) + " " + ToString(p));
        PropertyRun<Layout> run(p);
        run.Run();
        if (::testing::Test::HasFailure()) return;
        const Coverage& c = run.coverage();
        // Every run gets real work done and fills its ring at some point.
        EXPECT_GE(c.completed, uint64_t(p.steps / 100));
        EXPECT_GT(c.full_ring, 0u);
        EXPECT_GT(c.add_refused, 0u);
        if (::testing::Test::HasFailure()) return;
        total.Add(c);
      }
    }
    std::printf(
        "[ coverage ] %s event_idx=%d indirect=%d in_order=%d: completed=%llu "
        "add_refused=%llu straddling=%llu indirect=%llu publish notify/quiet="
        "%llu/%llu kick notify/quiet=%llu/%llu sleeps device/driver=%llu/%llu "
        "full_ring=%llu\n",
        Layout::kName, event_idx, indirect, in_order,
        (unsigned long long)total.completed,
        (unsigned long long)total.add_refused,
        (unsigned long long)total.straddling,
        (unsigned long long)total.indirect,
        (unsigned long long)total.publish_notify,
        (unsigned long long)total.publish_quiet,
        (unsigned long long)total.kick_notify,
        (unsigned long long)total.kick_quiet,
        (unsigned long long)total.device_sleeps,
        (unsigned long long)total.driver_sleeps,
        (unsigned long long)total.full_ring);
    // The interesting branches were all taken somewhere.
    EXPECT_GT(total.straddling, 0u);
    EXPECT_EQ(total.indirect > 0, indirect);
    EXPECT_GT(total.publish_notify, 0u);
    EXPECT_GT(total.publish_quiet, 0u);
    EXPECT_GT(total.kick_notify, 0u);
    EXPECT_GT(total.kick_quiet, 0u);
    EXPECT_GT(total.device_sleeps, 0u);
    EXPECT_GT(total.driver_sleeps, 0u);
  }
};

using Layouts = ::testing::Types<SplitLayout, PackedLayout>;
using testing::LayoutNames;
TYPED_TEST_SUITE(PropertyTest, Layouts, LayoutNames);

TYPED_TEST(PropertyTest, Plain) { TestFixture::RunAll(false, false); }
TYPED_TEST(PropertyTest, EventIdx) { TestFixture::RunAll(true, false); }
TYPED_TEST(PropertyTest, Indirect) { TestFixture::RunAll(false, true); }
TYPED_TEST(PropertyTest, EventIdxAndIndirect) {
  TestFixture::RunAll(true, true);
}
TYPED_TEST(PropertyTest, InOrder) { TestFixture::RunAll(false, false, true); }
TYPED_TEST(PropertyTest, InOrderEventIdxAndIndirect) {
  TestFixture::RunAll(true, true, true);
}

// Harness bug, found by the property test (lost wake-up, packed only).
// PackedDriver::Kick() compares the ring position at the previous Kick() with
// the current one on the 2 * size cycle of (offset, wrap counter) pairs, and
// returns false when they are equal. That also happens when exactly 2 * size
// slots were made available since the previous Kick() - possible because a
// packed device sees new chains without a kick (e.g. while polling). The
// device below enabled notifications (flags = ENABLE) and went to sleep, a
// new chain is available, and Kick() says not to notify: the chain is never
// served. The split driver cannot hit this: its chains stay invisible to the
// device until Kick() publishes avail->idx.
TEST(PackedKickHarnessTest, NotifiesAfterExactlyTwiceRingSizeSlots) {
  for (uint32_t size : {1u, 2u, 16u}) {
    SCOPED_TRACE(absl::StrFormat("size=%u", size));
    TestGuestMemory mem;
    testing::PackedDriver driver(mem, size);
    auto q = PackedQueue<GuestMemoryMap>::Create(mem.map(), driver.config());
    ASSERT_TRUE(q.ok()) << q.status();
    DescriptorChain chain;
    const uint64_t buf = mem.Alloc(8);
    // The device polls: 2 * size - 1 chains are served without any Kick().
    for (uint32_t i = 0; i + 1 < 2 * size; ++i) {
      ASSERT_TRUE(driver.Add({Buffer{buf, 8, true}}).has_value());
      ASSERT_EQ(q->Pop(chain), PopStatus::kChain);
      q->Push(chain.token(), 8);
      q->Publish();
      driver.InterruptExpected();
      ASSERT_TRUE(driver.Reap().has_value());
    }
    // The device stops polling and asks to be notified; nothing is pending.
    ASSERT_FALSE(q->EnableNotification());
    // One more chain: 2 * size slots since the last Kick().
    ASSERT_TRUE(driver.Add({Buffer{buf, 8, true}}).has_value());
    EXPECT_TRUE(driver.Kick())
        << "device notifications are enabled and a new chain is available, "
           "but the driver does not notify: lost wake-up";
    // The chain really is there for the device.
    EXPECT_EQ(q->Pop(chain), PopStatus::kChain);
  }
}

// Harness bug (packed only): PackedDriver::InterruptExpected() walks the used
// descriptors published since its last call and steps over each by
// slots_of_id_[id], which Reap() has already cleared for reaped chains (it
// then steps 1 slot). Reaping a multi-slot chain before calling
// InterruptExpected() leaves the driver's idea of the device's used position
// behind for good, and from then on it contradicts Publish(). driver.h only
// asks to call it once after each Publish(), not before reaping.
TEST(PackedInterruptExpectedHarnessTest, ReapBeforeCheckKeepsPosition) {
  TestGuestMemory mem;
  testing::PackedDriver driver(mem, 16);
  auto q = PackedQueue<GuestMemoryMap>::Create(mem.map(), driver.config());
  ASSERT_TRUE(q.ok()) << q.status();
  DescriptorChain chain;
  const uint64_t buf = mem.Alloc(8);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    // A 3-slot chain, served and published.
    ASSERT_TRUE(driver
                    .Add({Buffer{buf, 8, false}, Buffer{buf, 8, false},
                          Buffer{buf, 8, true}})
                    .has_value());
    driver.Kick();
    ASSERT_EQ(q->Pop(chain), PopStatus::kChain);
    q->Push(chain.token(), 8);
    const bool notify = q->Publish();
    EXPECT_TRUE(notify);  // interrupts are enabled (the default)
    ASSERT_TRUE(driver.Reap().has_value());  // before InterruptExpected()
    EXPECT_EQ(driver.InterruptExpected(), notify);
  }
  EXPECT_EQ(driver.device_error(), "");
}

}  // namespace
}  // namespace virtio
