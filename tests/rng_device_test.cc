// virtio-rng: entropy into guest buffers, rate limiting that delays rather
// than refuses, per-request cap, and malformed chains.
#include "virtio/rng_device.h"

#include <chrono>
#include <optional>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using std::chrono::milliseconds;
using testing::Buffer;
using testing::RecordingInterrupt;
using testing::TestGuestMemory;
using testing::TestTraits;
using Rng = RngDevice<TestTraits>;

std::chrono::steady_clock::time_point g_now{};
std::chrono::steady_clock::time_point FakeNow() { return g_now; }

template <typename Layout>
class RngDeviceTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;

  void Start(RngOptions options = {}) {
    options.now = &FakeNow;
    g_now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    rng_.emplace(mem_.map(), irq_, options);
    rng_->SetStatus(spec::kStatusAcknowledge);
    rng_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    ASSERT_EQ(rng_->device_features() &
                  ~(spec::Bit(spec::kFeatureVersion1) | spec::Bit(spec::kFeatureRingPacked) |
                    spec::Bit(spec::kFeatureIndirectDesc) | spec::Bit(spec::kFeatureEventIdx)),
              0u)
        << "virtio-rng has no device features";
    rng_->SetDriverFeatures(spec::Bit(spec::kFeatureVersion1) |
                            (kPacked ? spec::Bit(spec::kFeatureRingPacked) : 0));
    rng_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver | spec::kStatusFeaturesOk);
    driver_.emplace(mem_, 16);
    QueueConfig* cfg = rng_->queue_config(0);
    ASSERT_NE(cfg, nullptr);
    const QueueConfig want = driver_->config();
    cfg->size = want.size;
    cfg->desc_addr = want.desc_addr;
    cfg->driver_addr = want.driver_addr;
    cfg->device_addr = want.device_addr;
    ASSERT_TRUE(rng_->EnableQueue(0));
    rng_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk | spec::kStatusDriverOk);
    ASSERT_FALSE(rng_->needs_reset());
  }

  TestGuestMemory mem_;
  RecordingInterrupt irq_;
  std::optional<Rng> rng_;
  std::optional<typename Layout::Driver> driver_;
};

using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
using testing::LayoutNames;
TYPED_TEST_SUITE(RngDeviceTest, Layouts, LayoutNames);

TYPED_TEST(RngDeviceTest, IdentityAndEmptyConfig) {
  this->Start();
  EXPECT_EQ(this->rng_->device_id(), 4u);
  EXPECT_EQ(this->rng_->num_queues(), 1);
  EXPECT_EQ(this->rng_->config_size(), 0u);
  uint8_t b;
  EXPECT_FALSE(this->rng_->ReadConfig(0, &b, 1));
}

TYPED_TEST(RngDeviceTest, FillsWritableBuffersWithEntropy) {
  this->Start();
  auto& mem = this->mem_;
  const uint64_t a = mem.Alloc(64), b = mem.Alloc(4096);
  // Split across two descriptors to check multi-segment fills.
  auto id = this->driver_->Add({Buffer{a, 64, true}, Buffer{b, 4096, true}});
  this->driver_->Kick();
  this->rng_->Notify(0);
  auto used = this->driver_->Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, *id);
  EXPECT_EQ(used->len, 64u + 4096u);
  std::vector<uint8_t> bytes(4096);
  mem.Read(b, bytes.data(), bytes.size());
  // 4096 random bytes: expect nearly every byte value to appear.
  std::set<uint8_t> distinct(bytes.begin(), bytes.end());
  EXPECT_GT(distinct.size(), 200u);
  EXPECT_EQ(this->irq_.queue_signals(0), 1u);
  EXPECT_EQ(this->rng_->bytes_served(), 64u + 4096u);
  EXPECT_EQ(this->driver_->device_error(), "");
}

TYPED_TEST(RngDeviceTest, ReadableOnlyChainGetsZeroBytes) {
  this->Start();
  this->driver_->Add({Buffer{this->mem_.Alloc(16), 16, false}});
  this->driver_->Kick();
  this->rng_->Notify(0);
  auto used = this->driver_->Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_FALSE(this->rng_->needs_reset());
}

TYPED_TEST(RngDeviceTest, BadBufferFailsThatRequestOnly) {
  this->Start();
  this->driver_->Add({Buffer{0x7000'0000, 16, true}});  // not guest memory
  const uint64_t good = this->mem_.Alloc(16);
  this->driver_->Add({Buffer{good, 16, true}});
  this->driver_->Kick();
  this->rng_->Notify(0);
  auto first = this->driver_->Reap();
  auto second = this->driver_->Reap();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->len, 0u);
  EXPECT_EQ(second->len, 16u);
  EXPECT_FALSE(this->rng_->needs_reset());
}

TYPED_TEST(RngDeviceTest, HugeRequestIsCapped) {
  this->Start();
  const uint64_t big = this->mem_.Alloc(256 * 1024);
  this->driver_->Add({Buffer{big, 256 * 1024, true}});
  this->driver_->Kick();
  this->rng_->Notify(0);
  auto used = this->driver_->Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, Rng::kMaxBytesPerRequest);
}

TYPED_TEST(RngDeviceTest, RateLimitDelaysInsteadOfRefusing) {
  this->Start({.max_bytes_per_period = 100, .period = milliseconds(1000)});
  auto& mem = this->mem_;
  std::vector<uint16_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*this->driver_->Add({Buffer{mem.Alloc(64), 64, true}}));
  this->driver_->Kick();
  this->rng_->Notify(0);
  // 100 bytes this period: 64 for the first, 36 for the second.
  auto a = this->driver_->Reap();
  auto b = this->driver_->Reap();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->len, 64u);
  EXPECT_EQ(b->len, 36u);
  EXPECT_FALSE(this->driver_->Reap().has_value());
  auto wait = this->rng_->RetryAfter();
  ASSERT_TRUE(wait.has_value());
  EXPECT_EQ(*wait, milliseconds(1000));
  // A kick within the same period serves nothing more.
  g_now += milliseconds(500);
  this->rng_->Notify(0);
  EXPECT_FALSE(this->driver_->Reap().has_value());
  EXPECT_EQ(*this->rng_->RetryAfter(), milliseconds(500));
  // Next period: the waiting request is served, not dropped.
  g_now += milliseconds(500);
  this->rng_->Notify(0);
  auto c = this->driver_->Reap();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id, ids[2]);
  EXPECT_EQ(c->len, 64u);
  EXPECT_FALSE(this->rng_->RetryAfter().has_value());
  EXPECT_EQ(this->rng_->bytes_served(), 164u);
}

TYPED_TEST(RngDeviceTest, ResetClearsThrottle) {
  this->Start({.max_bytes_per_period = 10, .period = milliseconds(1000)});
  for (int i = 0; i < 2; ++i) this->driver_->Add({Buffer{this->mem_.Alloc(64), 64, true}});
  this->driver_->Kick();
  this->rng_->Notify(0);
  EXPECT_TRUE(this->rng_->RetryAfter().has_value());
  this->rng_->SetStatus(0);
  EXPECT_FALSE(this->rng_->RetryAfter().has_value());
  EXPECT_FALSE(this->rng_->queue_enabled(0));
}

}  // namespace
}  // namespace virtio
