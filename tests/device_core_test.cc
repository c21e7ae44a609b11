// The transport-independent device model: status state machine, feature
// negotiation, queue enabling, NEEDS_RESET and reset, through a small echo
// device on both ring layouts.
#include "virtio/device_core.h"

#include <cstring>
#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/echo_device.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::RecordingInterrupt;
using testing::TestGuestMemory;
using testing::TestTraits;

using testing::kEchoFeatureShout;
using EchoDevice = testing::EchoDevice<TestTraits>;

// DeviceImplementation as DeviceCore<TestTraits, Device> checks it.
template <typename Device>
constexpr bool kImplementsDevice = DeviceImplementation<
    Device, typename DeviceCore<TestTraits, Device>::Hooks,
    typename DeviceCore<TestTraits, Device>::Split,
    typename DeviceCore<TestTraits, Device>::Packed>;

// The echo device keeps its hooks private behind `friend Core`: the concept
// still sees them.
static_assert(kImplementsDevice<EchoDevice>);

// A device that forgot OnReset(): the concept says no (DeviceCore's
// constructor would fail with that one static_assert).
class DeviceWithoutReset
    : public DeviceCore<TestTraits, DeviceWithoutReset> {
  friend DeviceCore<TestTraits, DeviceWithoutReset>;

 public:
  static constexpr uint32_t kDeviceId = 42;

 private:
  uint32_t ConfigSize() const { return 0; }
  void ReadConfigBytes(uint32_t, void*, uint32_t) {}
  void WriteConfigBytes(uint32_t, const void*, uint32_t) {}
  bool AcceptFeatures(uint64_t) { return true; }
  void OnDriverOk() {}
  template <VirtQueue Q>
  void ProcessQueue(uint16_t, Q&) {}
};
static_assert(!kImplementsDevice<DeviceWithoutReset>);

// One that processes split rings only.
class SplitOnlyDevice : public DeviceCore<TestTraits, SplitOnlyDevice> {
 public:
  static constexpr uint32_t kDeviceId = 43;
  uint32_t ConfigSize() const { return 0; }
  void ReadConfigBytes(uint32_t, void*, uint32_t) {}
  void WriteConfigBytes(uint32_t, const void*, uint32_t) {}
  bool AcceptFeatures(uint64_t) { return true; }
  void OnDriverOk() {}
  void OnReset() {}
  void ProcessQueue(uint16_t, Split&) {}
};
static_assert(!kImplementsDevice<SplitOnlyDevice>);

template <typename Layout>
class DeviceCoreTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;

  uint64_t Features() const {
    return spec::Bit(spec::kFeatureVersion1) |
           (kPacked ? spec::Bit(spec::kFeatureRingPacked) : 0);
  }
  // The Linux driver's bring-up sequence up to FEATURES_OK.
  void Negotiate(uint64_t features) {
    dev_.SetStatus(0);
    dev_.SetStatus(spec::kStatusAcknowledge);
    dev_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    dev_.SetDriverFeatures(features);
    dev_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                   spec::kStatusFeaturesOk);
  }
  void SetUpQueue(uint16_t q) {
    driver_.emplace(mem_, 16);
    QueueConfig* cfg = dev_.queue_config(q);
    ASSERT_NE(cfg, nullptr);
    const QueueConfig want = driver_->config();
    cfg->size = want.size;
    cfg->desc_addr = want.desc_addr;
    cfg->driver_addr = want.driver_addr;
    cfg->device_addr = want.device_addr;
  }
  void DriverOk() {
    dev_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                   spec::kStatusFeaturesOk | spec::kStatusDriverOk);
  }
  void BringUp() {
    Negotiate(Features());
    ASSERT_TRUE(dev_.status() & spec::kStatusFeaturesOk);
    SetUpQueue(0);
    ASSERT_TRUE(dev_.EnableQueue(0));
    DriverOk();
  }

  TestGuestMemory mem_;
  RecordingInterrupt irq_;
  EchoDevice dev_{mem_.map(), irq_};
  std::optional<typename Layout::Driver> driver_;
};

using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
using testing::LayoutNames;
TYPED_TEST_SUITE(DeviceCoreTest, Layouts, LayoutNames);

TYPED_TEST(DeviceCoreTest, OffersRingFeaturesAndVersion1) {
  EXPECT_EQ(this->dev_.device_id(), 0x1234u);
  EXPECT_EQ(this->dev_.num_queues(), 2);
  EXPECT_EQ(this->dev_.queue_max_size(1), 16u);
  EXPECT_EQ(this->dev_.queue_max_size(2), 0u);
  const uint64_t f = this->dev_.device_features();
  EXPECT_TRUE(f & spec::Bit(spec::kFeatureVersion1));
  EXPECT_TRUE(f & spec::Bit(spec::kFeatureRingPacked));
  EXPECT_TRUE(f & spec::Bit(spec::kFeatureIndirectDesc));
  EXPECT_TRUE(f & spec::Bit(spec::kFeatureEventIdx));
  EXPECT_TRUE(f & spec::Bit(kEchoFeatureShout));
  EchoDevice no_packed(this->mem_.map(), this->irq_, {.packed = false});
  EXPECT_FALSE(no_packed.device_features() & spec::Bit(spec::kFeatureRingPacked));
}

TYPED_TEST(DeviceCoreTest, EchoesThroughTheQueue) {
  this->BringUp();
  EXPECT_EQ(this->dev_.driver_ok_calls, 1);
  auto& mem = this->mem_;
  const uint64_t in = mem.Alloc(5), out = mem.Alloc(5);
  mem.Write(in, "hello", 5);
  this->driver_->Add({Buffer{in, 5, false}, Buffer{out, 5, true}});
  this->driver_->Kick();
  this->dev_.Notify(0);
  auto used = this->driver_->Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 5u);
  char got[5];
  mem.Read(out, got, 5);
  EXPECT_EQ(std::string(got, 5), "hello");
  EXPECT_EQ(this->irq_.queue_signals(0), 1u);
  EXPECT_FALSE(this->dev_.needs_reset());
}

TYPED_TEST(DeviceCoreTest, RefusesFeaturesWithoutVersion1) {
  this->Negotiate(this->Features() & ~spec::Bit(spec::kFeatureVersion1));
  EXPECT_FALSE(this->dev_.status() & spec::kStatusFeaturesOk);
}

TYPED_TEST(DeviceCoreTest, RefusesUnofferedFeatures) {
  this->Negotiate(this->Features() | spec::Bit(spec::kFeatureInOrder));
  EXPECT_FALSE(this->dev_.status() & spec::kStatusFeaturesOk);
}

TYPED_TEST(DeviceCoreTest, DeviceSpecificRefusal) {
  this->dev_.accept_features = false;
  this->Negotiate(this->Features());
  EXPECT_FALSE(this->dev_.status() & spec::kStatusFeaturesOk);
  // The driver may try again after a reset.
  this->dev_.accept_features = true;
  this->Negotiate(this->Features());
  EXPECT_TRUE(this->dev_.status() & spec::kStatusFeaturesOk);
}

TYPED_TEST(DeviceCoreTest, FeatureWritesAfterFeaturesOkAreIgnored) {
  this->Negotiate(this->Features());
  EXPECT_FALSE(this->dev_.SetDriverFeatures(this->Features() | 1));
  EXPECT_EQ(this->dev_.driver_features(), this->Features());
}

TYPED_TEST(DeviceCoreTest, QueueEnabledBeforeFeaturesOkNeedsReset) {
  this->dev_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  this->SetUpQueue(0);
  EXPECT_FALSE(this->dev_.EnableQueue(0));
  EXPECT_TRUE(this->dev_.needs_reset());
  EXPECT_GT(this->dev_.guest_errors() + 1, 0u);
}

TYPED_TEST(DeviceCoreTest, QueueWithBadRingAddressNeedsReset) {
  this->Negotiate(this->Features());
  this->SetUpQueue(0);
  this->dev_.queue_config(0)->desc_addr = 0x7777'0000;  // not guest memory
  EXPECT_FALSE(this->dev_.EnableQueue(0));
  EXPECT_TRUE(this->dev_.needs_reset());
  EXPECT_FALSE(this->dev_.queue_enabled(0));
}

TYPED_TEST(DeviceCoreTest, QueueSizeAboveMaximumNeedsReset) {
  this->Negotiate(this->Features());
  this->SetUpQueue(0);
  this->dev_.queue_config(0)->size = 32;  // max is 16
  EXPECT_FALSE(this->dev_.EnableQueue(0));
  EXPECT_TRUE(this->dev_.needs_reset());
}

TYPED_TEST(DeviceCoreTest, DriverOkWithoutFeaturesOkNeedsReset) {
  this->dev_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  this->dev_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                       spec::kStatusDriverOk);
  EXPECT_TRUE(this->dev_.needs_reset());
  EXPECT_EQ(this->dev_.driver_ok_calls, 0);
}

TYPED_TEST(DeviceCoreTest, ClearingStatusBitsWithoutResetIsIgnored) {
  this->BringUp();
  this->dev_.SetStatus(spec::kStatusAcknowledge);
  EXPECT_TRUE(this->dev_.status() & spec::kStatusDriverOk);
}

TYPED_TEST(DeviceCoreTest, KickBeforeDriverOkIsServedAtDriverOk) {
  this->Negotiate(this->Features());
  this->SetUpQueue(0);
  ASSERT_TRUE(this->dev_.EnableQueue(0));
  auto& mem = this->mem_;
  this->driver_->Add({Buffer{mem.Alloc(4), 4, false}, Buffer{mem.Alloc(4), 4, true}});
  this->driver_->Kick();
  this->dev_.Notify(0);
  EXPECT_EQ(this->dev_.processed, 0);
  this->DriverOk();
  EXPECT_EQ(this->dev_.processed, 1);
  EXPECT_TRUE(this->driver_->Reap().has_value());
}

TYPED_TEST(DeviceCoreTest, MalformedRingNeedsResetWithConfigInterrupt) {
  this->BringUp();
  // A buffer chain whose descriptor loops on itself / runs forever.
  auto& mem = this->mem_;
  const uint64_t b = mem.Alloc(8);
  if constexpr (TestFixture::kPacked) {
    std::vector<spec::PackedDesc> descs(16, {b, 8, 0, spec::kDescFlagNext});
    this->driver_->PlaceRaw(descs);
  } else {
    this->driver_->WriteDesc(0, {b, 8, spec::kDescFlagNext, 0});
    this->driver_->PostHead(0);
  }
  this->dev_.Notify(0);
  EXPECT_TRUE(this->dev_.needs_reset());
  EXPECT_EQ(this->irq_.config_signals(), 1u);
  // Further kicks are ignored until reset.
  this->dev_.Notify(0);
  EXPECT_EQ(this->irq_.config_signals(), 1u);
  // The driver cannot clear NEEDS_RESET except by resetting.
  this->dev_.SetStatus(this->dev_.status() & ~spec::kStatusDeviceNeedsReset);
  EXPECT_TRUE(this->dev_.needs_reset());
  this->dev_.SetStatus(0);
  EXPECT_FALSE(this->dev_.needs_reset());
  EXPECT_EQ(this->dev_.status(), 0);
}

TYPED_TEST(DeviceCoreTest, ResetReturnsToInitialState) {
  this->BringUp();
  const int resets = this->dev_.reset_calls;
  this->dev_.SetStatus(0);
  EXPECT_EQ(this->dev_.reset_calls, resets + 1);
  EXPECT_EQ(this->dev_.status(), 0);
  EXPECT_EQ(this->dev_.driver_features(), 0u);
  EXPECT_FALSE(this->dev_.queue_enabled(0));
  ASSERT_NE(this->dev_.queue_config(0), nullptr);
  EXPECT_EQ(this->dev_.queue_config(0)->size, 16u);  // back to the maximum
  // And it comes up again.
  this->BringUp();
  EXPECT_TRUE(this->dev_.queue_enabled(0));
}

TYPED_TEST(DeviceCoreTest, DisableQueueReturnsPositionAndResumes) {
  this->BringUp();
  auto& mem = this->mem_;
  const uint64_t in = mem.Alloc(4), out = mem.Alloc(4);
  this->driver_->Add({Buffer{in, 4, false}, Buffer{out, 4, true}});
  this->driver_->Kick();
  this->dev_.Notify(0);
  ASSERT_TRUE(this->driver_->Reap().has_value());
  const std::optional<QueueState> state = this->dev_.DisableQueue(0);
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(this->dev_.queue_disabled_calls, 1);
  EXPECT_FALSE(this->dev_.queue_enabled(0));
  EXPECT_FALSE(this->dev_.DisableQueue(0).has_value());  // already stopped
  if constexpr (TestFixture::kPacked) {
    EXPECT_EQ(state->next_avail, 2);  // a 2-descriptor chain
  } else {
    EXPECT_EQ(state->next_avail, 1);
  }
  // Kicks while stopped do nothing; the resumed ring picks up from there.
  this->driver_->Add({Buffer{in, 4, false}, Buffer{out, 4, true}});
  this->driver_->Kick();
  this->dev_.Notify(0);
  EXPECT_EQ(this->dev_.processed.load(), 1);
  ASSERT_TRUE(this->dev_.EnableQueue(0, *state));
  this->dev_.Notify(0);
  EXPECT_EQ(this->dev_.processed.load(), 2);
  EXPECT_TRUE(this->driver_->Reap().has_value());
  EXPECT_EQ(this->driver_->device_error(), "");
}

// Polled mode is the device's, not one ring's: it holds across a queue
// restart, and leaving it reports the work a kick would have announced.
TYPED_TEST(DeviceCoreTest, PolledQueueSurvivesRestart) {
  this->BringUp();
  auto& mem = this->mem_;
  const uint64_t in = mem.Alloc(4), out = mem.Alloc(4);
  EXPECT_FALSE(this->dev_.SetQueuePolled(0, true));
  this->driver_->Add({Buffer{in, 4, false}, Buffer{out, 4, true}});
  EXPECT_FALSE(this->driver_->Kick());
  this->dev_.Notify(0);
  ASSERT_TRUE(this->driver_->Reap().has_value());
  const std::optional<QueueState> state = this->dev_.DisableQueue(0);
  ASSERT_TRUE(state.has_value());
  ASSERT_TRUE(this->dev_.EnableQueue(0, *state));
  this->driver_->Add({Buffer{in, 4, false}, Buffer{out, 4, true}});
  EXPECT_FALSE(this->driver_->Kick()) << "the restarted ring asks for kicks";
  EXPECT_TRUE(this->dev_.SetQueuePolled(0, false));
  this->dev_.Notify(0);
  EXPECT_EQ(this->dev_.processed.load(), 2);
  ASSERT_TRUE(this->driver_->Reap().has_value());
  this->driver_->Add({Buffer{in, 4, false}, Buffer{out, 4, true}});
  EXPECT_TRUE(this->driver_->Kick());
  EXPECT_FALSE(this->dev_.SetQueuePolled(9, true));  // no such queue
  EXPECT_EQ(this->driver_->device_error(), "");
}

TYPED_TEST(DeviceCoreTest, EnabledQueueConfigIsReadOnly) {
  this->BringUp();
  EXPECT_EQ(this->dev_.queue_config(0), nullptr);
  EXPECT_EQ(this->dev_.queue_config(7), nullptr);
  EXPECT_FALSE(this->dev_.EnableQueue(7));
}

TYPED_TEST(DeviceCoreTest, NotifyForNonexistentQueueIsIgnored) {
  this->BringUp();
  this->dev_.Notify(2);
  this->dev_.Notify(65535);
  EXPECT_FALSE(this->dev_.needs_reset());
  EXPECT_EQ(this->dev_.guest_errors(), 2u);
}

TYPED_TEST(DeviceCoreTest, ConfigAccessBounds) {
  uint8_t buf[0x20] = {};
  EXPECT_TRUE(this->dev_.ReadConfig(4, buf, 4));
  EXPECT_EQ(buf[0], 5);
  EXPECT_FALSE(this->dev_.ReadConfig(6, buf, 4));
  EXPECT_EQ(buf[0], 0);  // zero-filled
  EXPECT_FALSE(this->dev_.ReadConfig(0xffff'fff0, buf, 0x20));
  EXPECT_FALSE(this->dev_.WriteConfig(8, buf, 1));
  EXPECT_TRUE(this->dev_.WriteConfig(7, buf, 1));
}

TYPED_TEST(DeviceCoreTest, ConfigChangeBumpsGenerationAndSignalsWhenLive) {
  const uint32_t gen = this->dev_.config_generation();
  this->dev_.ChangeConfig();
  EXPECT_EQ(this->dev_.config_generation(), gen + 1);
  EXPECT_EQ(this->irq_.config_signals(), 0u);  // not live yet
  this->BringUp();
  this->dev_.ChangeConfig();
  EXPECT_EQ(this->irq_.config_signals(), 1u);
}

// What glue/xen needs from the device model when the transport enables the
// queues: SetQueueObserver() attaches the observer to the ring that
// EnableQueue(q) creates, and a memory type with TranslateRing() has the
// queue map its three ring parts through it (and only those).
struct RingCountingMemory {
  const GuestMemoryMap* map;
  mutable int ring_calls = 0;
  uint8_t* TranslateContiguous(uint64_t gpa, uint64_t len) const {
    return map->TranslateContiguous(gpa, len);
  }
  ScatterResult TranslateScatter(uint64_t gpa, uint64_t len, iovec* out,
                                 uint32_t capacity) const {
    return map->TranslateScatter(gpa, len, out, capacity);
  }
  uint8_t* TranslateRing(uint64_t gpa, uint64_t len) const {
    ++ring_calls;
    return map->TranslateContiguous(gpa, len);
  }
};
struct CountingObserver {
  int pops = 0, pushes = 0, publishes = 0;
  void OnPop(const DescriptorChain&, uint16_t, bool) { ++pops; }
  void OnPush(UsedToken, uint32_t, uint16_t) { ++pushes; }
  void OnPublish(const QueueState&) { ++publishes; }
};
struct ObservedTraits {
  using Memory = RingCountingMemory;
  using Interrupt = RecordingInterrupt;
  using RingObserver = CountingObserver;
};

TEST(DeviceCoreQueueObserver,
     SetQueueObserverAndTranslateRingReachEnableQueue) {
  TestGuestMemory mem;
  RecordingInterrupt irq;
  RingCountingMemory ring_mem{&mem.map()};
  testing::EchoDevice<ObservedTraits> dev(ring_mem, irq);
  CountingObserver obs;
  dev.SetQueueObserver(0, &obs);
  dev.SetQueueObserver(7, &obs);  // no such queue: ignored
  dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  dev.SetDriverFeatures(spec::Bit(spec::kFeatureVersion1));
  dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                spec::kStatusFeaturesOk);
  testing::SplitDriver driver(mem, 16);
  QueueConfig* cfg = dev.queue_config(0);
  ASSERT_NE(cfg, nullptr);
  const QueueConfig want = driver.config();
  cfg->size = want.size;
  cfg->desc_addr = want.desc_addr;
  cfg->driver_addr = want.driver_addr;
  cfg->device_addr = want.device_addr;
  ASSERT_TRUE(dev.EnableQueue(0));  // as a transport calls it
  EXPECT_EQ(ring_mem.ring_calls, 3);
  dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                spec::kStatusFeaturesOk | spec::kStatusDriverOk);
  const uint64_t in = mem.Alloc(5), out = mem.Alloc(5);
  mem.Write(in, "hello", 5);
  driver.Add({Buffer{in, 5, false}, Buffer{out, 5, true}});
  driver.Kick();
  dev.Notify(0);
  ASSERT_TRUE(driver.Reap().has_value());
  EXPECT_EQ(obs.pops, 1);
  EXPECT_EQ(obs.pushes, 1);
  EXPECT_GE(obs.publishes, 1);
  EXPECT_EQ(ring_mem.ring_calls, 3);  // buffers never went through it
}

}  // namespace
}  // namespace virtio
