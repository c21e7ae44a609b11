// The virtio-mmio transport: a toy echo device brought up through the
// register-level MmioDriver (Linux's sequence) on both ring layouts, every
// register's read-back value, and every way a guest can misuse the register
// block (wrong sizes, misalignment, read-only and write-only registers,
// out-of-range selectors, late queue writes), each leaving state exactly as
// it was.
#include "virtio/mmio_transport.h"

#include <array>
#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/device_core.h"
#include "virtio/log.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/echo_device.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::MmioDriver;
using testing::RecordingIrqLine;
using testing::TestGuestMemory;

using Irq = MmioInterrupt<RecordingIrqLine>;
struct MmioTestTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = Irq;
};
static_assert(HypervisorTraits<MmioTestTraits>);
static_assert(InterruptSink<Irq>);
static_assert(IrqLine<RecordingIrqLine>);

using EchoDevice = testing::EchoDevice<MmioTestTraits>;
using testing::kEchoFeatureShout;

using Transport = MmioTransport<EchoDevice>;

// Captures log lines so tests can check that misuse is reported.
std::atomic<int> g_log_lines{0};
void CountingSink(LogLevel, std::string_view) { g_log_lines.fetch_add(1); }

// Every offset of the register block (0x000..0x0fc), in the spec's groups.
constexpr uint64_t kReadOnly[] = {
    mmio::kMagicValue,  mmio::kVersion,    mmio::kDeviceId,
    mmio::kVendorId,    mmio::kDeviceFeatures, mmio::kQueueNumMax,
    mmio::kInterruptStatus, mmio::kShmLenLow, mmio::kShmLenHigh,
    mmio::kShmBaseLow, mmio::kShmBaseHigh, mmio::kConfigGeneration};
constexpr uint64_t kWriteOnly[] = {
    mmio::kDeviceFeaturesSel, mmio::kDriverFeatures, mmio::kDriverFeaturesSel,
    mmio::kQueueSel,          mmio::kQueueNum,       mmio::kQueueNotify,
    mmio::kInterruptAck,      mmio::kQueueDescLow,   mmio::kQueueDescHigh,
    mmio::kQueueDriverLow,    mmio::kQueueDriverHigh, mmio::kQueueDeviceLow,
    mmio::kQueueDeviceHigh,   mmio::kShmSel};
constexpr uint64_t kReadWrite[] = {mmio::kQueueReady, mmio::kStatus,
                                   mmio::kQueueReset};

bool IsKnown(uint64_t offset) {
  for (uint64_t r : kReadOnly) if (r == offset) return true;
  for (uint64_t r : kWriteOnly) if (r == offset) return true;
  for (uint64_t r : kReadWrite) if (r == offset) return true;
  return false;
}

// Everything a register access could change, read without side effects.
struct Snapshot {
  std::vector<uint32_t> readable;  // per queue selection where relevant
  uint32_t device_features_sel, driver_features_sel, queue_sel, shm_sel;
  uint64_t driver_features;
  uint8_t status;
  uint32_t interrupt_status;
  bool line;
  uint64_t line_raises;
  std::vector<std::tuple<uint32_t, uint64_t, uint64_t, uint64_t, bool>> queues;
  std::array<uint8_t, 8> config;
  int processed;
  int resets;

  bool operator==(const Snapshot&) const = default;
};

template <typename Layout>
class MmioTransportTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;
  using RingDriver = typename Layout::Driver;

  void SetUp() override {
    g_log_lines = 0;
    SetLogSink(&CountingSink);
  }
  void TearDown() override { SetLogSink(nullptr); }

  uint64_t Features() const {
    return spec::Bit(spec::kFeatureVersion1) | spec::Bit(kEchoFeatureShout) |
           (kPacked ? spec::Bit(spec::kFeatureRingPacked) : 0);
  }

  void Negotiate() {
    ASSERT_TRUE(drv_.Probe().ok());
    ASSERT_TRUE(drv_.Reset().ok());
    auto f = drv_.Negotiate(Features());
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_EQ(*f, Features());
  }
  // Linux's whole sequence with `queues` queues.
  void BringUp(int queues = 1) {
    Negotiate();
    for (int q = 0; q < queues; ++q) {
      rings_[q].emplace(mem_, 16);
      absl::Status s = drv_.SetUpQueue(static_cast<uint16_t>(q),
                                       rings_[q]->config());
      ASSERT_TRUE(s.ok()) << s;
    }
    absl::Status s = drv_.DriverOk();
    ASSERT_TRUE(s.ok()) << s;
  }
  // Sends `text` through queue `q` and checks the echo.
  void Echo(uint16_t q, const std::string& text) {
    RingDriver& ring = *rings_[q];
    const auto len = static_cast<uint32_t>(text.size());
    const uint64_t in = mem_.Alloc(len), out = mem_.Alloc(len);
    mem_.Write(in, text.data(), len);
    ASSERT_TRUE(
        ring.Add({Buffer{in, len, false}, Buffer{out, len, true}}).has_value());
    if (ring.Kick()) drv_.Kick(q);
    auto used = ring.Reap();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, len);
    std::string got(len, '\0');
    mem_.Read(out, got.data(), len);
    EXPECT_EQ(got, text);
    EXPECT_EQ(ring.device_error(), "");
  }
  // Adds a chain without kicking (split: published, packed: visible).
  void AddUnkicked(uint16_t q) {
    RingDriver& ring = *rings_[q];
    ASSERT_TRUE(ring.Add({Buffer{mem_.Alloc(4), 4, false},
                          Buffer{mem_.Alloc(4), 4, true}})
                    .has_value());
    ring.Kick();
  }

  Snapshot Take() {
    Snapshot s;
    const uint32_t qsel = mmio_.queue_sel();
    for (uint64_t r : kReadOnly) s.readable.push_back(mmio_.Read(r, 4));
    s.readable.push_back(mmio_.Read(mmio::kQueueReady, 4));
    s.readable.push_back(mmio_.Read(mmio::kStatus, 4));
    s.readable.push_back(mmio_.Read(mmio::kQueueReset, 4));
    for (uint32_t i = 0; i < 8; ++i) {
      s.readable.push_back(mmio_.Read(mmio::kConfig + i, 1));
    }
    EXPECT_EQ(mmio_.queue_sel(), qsel);
    s.device_features_sel = mmio_.device_features_sel();
    s.driver_features_sel = mmio_.driver_features_sel();
    s.queue_sel = qsel;
    s.shm_sel = mmio_.shm_sel();
    s.driver_features = dev_.driver_features();
    s.status = dev_.status();
    s.interrupt_status = irq_.status();
    s.line = irq_.line().level();
    s.line_raises = irq_.line().raises();
    for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
      const QueueConfig* c = dev_.queue_config_view(q);
      s.queues.emplace_back(c->size, c->desc_addr, c->driver_addr,
                            c->device_addr, dev_.queue_enabled(q));
    }
    s.config = dev_.config();
    s.processed = dev_.processed;
    s.resets = dev_.reset_calls;
    return s;
  }

  // Every malformed access at every register offset: sizes 0, 1, 2, 3 and 8
  // at the register, and sizes 1, 2 and 4 at +1..+3. Each must read 0, be
  // ignored, count as exactly one guest error and change nothing.
  void ExpectBadAccessesIgnored() {
    const Snapshot before = Take();
    const uint64_t dev_errors = dev_.guest_errors();
    for (uint64_t reg = 0; reg < mmio::kConfig; reg += 4) {
      std::vector<std::pair<uint64_t, uint32_t>> shapes;
      for (uint32_t size : {0u, 1u, 2u, 3u, 8u}) shapes.emplace_back(reg, size);
      for (uint64_t delta = 1; delta <= 3; ++delta) {
        for (uint32_t size : {1u, 2u, 4u}) shapes.emplace_back(reg + delta, size);
      }
      for (auto [offset, size] : shapes) {
        SCOPED_TRACE(::testing::Message() << "offset 0x" << std::hex << offset
                                          << " size " << std::dec << size);
        uint64_t errors = mmio_.guest_errors();
        EXPECT_EQ(mmio_.Read(offset, size), 0u);
        EXPECT_EQ(mmio_.guest_errors(), ++errors);
        for (uint32_t value : {0u, 1u, 2u, 0xffffffffu}) {
          mmio_.Write(offset, size, value);
          EXPECT_EQ(mmio_.guest_errors(), ++errors);
        }
        ASSERT_EQ(Take(), before);
      }
    }
    EXPECT_EQ(dev_.guest_errors(), dev_errors);
    EXPECT_GT(g_log_lines.load(), 0);
  }

  TestGuestMemory mem_;
  Irq irq_;
  EchoDevice dev_{mem_.map(), irq_};
  Transport mmio_{dev_};
  MmioDriver<Transport> drv_{mmio_};
  std::optional<RingDriver> rings_[2];
};

using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
using testing::LayoutNames;
TYPED_TEST_SUITE(MmioTransportTest, Layouts, LayoutNames);

TYPED_TEST(MmioTransportTest, LinuxBringUpAndEchoRoundTrip) {
  this->BringUp(2);
  EXPECT_EQ(this->drv_.device_id(), EchoDevice::kDeviceId);
  EXPECT_EQ(this->drv_.vendor_id(), mmio::kDefaultVendorId);
  EXPECT_EQ(this->dev_.driver_ok_calls, 1);
  EXPECT_EQ(this->dev_.driver_features(), this->Features());
  EXPECT_TRUE(this->dev_.queue_enabled(0));
  EXPECT_TRUE(this->dev_.queue_enabled(1));
  this->Echo(0, "hello, mmio");
  this->Echo(1, "second queue");
  this->Echo(0, "again");
  EXPECT_EQ(this->dev_.processed.load(), 3);
  EXPECT_EQ(this->drv_.HandleInterrupt(), kMmioInterruptUsedBuffer);
  EXPECT_FALSE(this->irq_.line().level());
  EXPECT_EQ(this->dev_.status(), spec::kStatusAcknowledge | spec::kStatusDriver |
                                     spec::kStatusFeaturesOk |
                                     spec::kStatusDriverOk);
  EXPECT_EQ(this->mmio_.guest_errors(), 0u);
  EXPECT_EQ(this->dev_.guest_errors(), 0u);
  EXPECT_EQ(g_log_lines.load(), 0);
}

TYPED_TEST(MmioTransportTest, InterruptStatusAckAndLineLevel) {
  this->BringUp();
  auto& line = this->irq_.line();
  EXPECT_EQ(this->mmio_.Read(mmio::kInterruptStatus, 4), 0u);
  EXPECT_FALSE(line.level());
  this->Echo(0, "ping");
  EXPECT_EQ(this->mmio_.Read(mmio::kInterruptStatus, 4), 1u);
  EXPECT_TRUE(line.level());
  EXPECT_EQ(line.raises(), 1u);
  // Reading does not acknowledge; a second used buffer does not re-raise.
  EXPECT_EQ(this->mmio_.Read(mmio::kInterruptStatus, 4), 1u);
  this->Echo(0, "pong");
  EXPECT_EQ(line.raises(), 1u);
  // Acknowledging the other cause (and unknown bits) leaves it pending.
  this->mmio_.Write(mmio::kInterruptAck, 4, 0xfffffffe);
  EXPECT_EQ(this->mmio_.Read(mmio::kInterruptStatus, 4), 1u);
  EXPECT_TRUE(line.level());
  this->mmio_.Write(mmio::kInterruptAck, 4, 1);
  EXPECT_EQ(this->mmio_.Read(mmio::kInterruptStatus, 4), 0u);
  EXPECT_FALSE(line.level());
  EXPECT_EQ(line.lowers(), 1u);
  // Both causes: the line stays up until the last one is acknowledged.
  this->dev_.ChangeConfig();
  this->Echo(0, "both");
  EXPECT_EQ(this->mmio_.Read(mmio::kInterruptStatus, 4), 3u);
  EXPECT_EQ(line.raises(), 2u);
  this->mmio_.Write(mmio::kInterruptAck, 4, kMmioInterruptConfigChange);
  EXPECT_EQ(this->mmio_.Read(mmio::kInterruptStatus, 4), 1u);
  EXPECT_TRUE(line.level());
  EXPECT_EQ(this->drv_.HandleInterrupt(), kMmioInterruptUsedBuffer);
  EXPECT_FALSE(line.level());
  EXPECT_EQ(line.lowers(), 2u);
  EXPECT_EQ(this->drv_.HandleInterrupt(), 0u);  // spurious: nothing pending
  EXPECT_EQ(line.lowers(), 2u);
}

TYPED_TEST(MmioTransportTest, EveryRegisterReadsBack) {
  this->BringUp(1);
  auto& m = this->mmio_;
  const uint64_t offered = this->dev_.device_features();
  EXPECT_EQ(m.Read(mmio::kMagicValue, 4), 0x74726976u);
  EXPECT_EQ(m.Read(mmio::kVersion, 4), 2u);
  EXPECT_EQ(m.Read(mmio::kDeviceId, 4), 0x1234u);
  EXPECT_EQ(m.Read(mmio::kVendorId, 4), 0x4F49564Cu);
  for (uint32_t sel : {0u, 1u, 2u, 3u, 0xffffffffu}) {
    m.Write(mmio::kDeviceFeaturesSel, 4, sel);
    EXPECT_EQ(m.device_features_sel(), sel);
    const uint32_t want = sel == 0   ? static_cast<uint32_t>(offered)
                          : sel == 1 ? static_cast<uint32_t>(offered >> 32)
                                     : 0u;
    EXPECT_EQ(m.Read(mmio::kDeviceFeatures, 4), want) << sel;
  }
  // Queue 0 live, queue 1 present but not set up, queue 2 absent.
  m.Write(mmio::kQueueSel, 4, 0);
  EXPECT_EQ(m.Read(mmio::kQueueNumMax, 4), 16u);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 1u);
  m.Write(mmio::kQueueSel, 4, 1);
  EXPECT_EQ(m.queue_sel(), 1u);
  EXPECT_EQ(m.Read(mmio::kQueueNumMax, 4), 16u);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 0u);
  m.Write(mmio::kQueueSel, 4, 2);
  EXPECT_EQ(m.Read(mmio::kQueueNumMax, 4), 0u);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 0u);
  EXPECT_EQ(m.Read(mmio::kInterruptStatus, 4), 0u);
  EXPECT_EQ(m.Read(mmio::kStatus, 4), 0x0fu);
  for (uint32_t sel : {0u, 1u, 7u}) {
    m.Write(mmio::kShmSel, 4, sel);
    EXPECT_EQ(m.shm_sel(), sel);
    EXPECT_EQ(m.Read(mmio::kShmLenLow, 4), 0xffffffffu);
    EXPECT_EQ(m.Read(mmio::kShmLenHigh, 4), 0xffffffffu);
    EXPECT_EQ(m.Read(mmio::kShmBaseLow, 4), 0xffffffffu);
    EXPECT_EQ(m.Read(mmio::kShmBaseHigh, 4), 0xffffffffu);
  }
  EXPECT_EQ(m.Read(mmio::kQueueReset, 4), 0u);
  EXPECT_EQ(m.Read(mmio::kConfigGeneration, 4), 0u);
  this->dev_.ChangeConfig();
  EXPECT_EQ(m.Read(mmio::kConfigGeneration, 4), 1u);
  EXPECT_EQ(m.Read(mmio::kInterruptStatus, 4), kMmioInterruptConfigChange);
  // No error so far: every one of those was a legal access.
  EXPECT_EQ(m.guest_errors(), 0u);

  // Write-only registers read 0 (and say so), whatever was written.
  m.Write(mmio::kQueueSel, 4, 1);
  m.Write(mmio::kQueueNum, 4, 8);
  m.Write(mmio::kQueueDescLow, 4, 0x1000);
  for (uint64_t r : kWriteOnly) {
    const uint64_t errors = m.guest_errors();
    EXPECT_EQ(m.Read(r, 4), 0u) << std::hex << r;
    EXPECT_EQ(m.guest_errors(), errors + 1) << std::hex << r;
  }
  EXPECT_EQ(this->dev_.queue_config_view(1)->size, 8u);
  EXPECT_EQ(this->dev_.queue_config_view(1)->desc_addr, 0x1000u);
  // Unknown offsets read 0 and ignore writes.
  for (uint64_t r = 0; r < mmio::kConfig; r += 4) {
    if (IsKnown(r)) continue;
    const auto before = this->Take();
    const uint64_t errors = m.guest_errors();
    EXPECT_EQ(m.Read(r, 4), 0u) << std::hex << r;
    m.Write(r, 4, 0xffffffff);
    EXPECT_EQ(m.guest_errors(), errors + 2) << std::hex << r;
    EXPECT_EQ(this->Take(), before) << std::hex << r;
  }
}

TYPED_TEST(MmioTransportTest, VendorIdIsConfigurable) {
  Transport other(this->dev_, {.vendor_id = 0xabcd1234});
  EXPECT_EQ(other.Read(mmio::kVendorId, 4), 0xabcd1234u);
  EXPECT_EQ(this->mmio_.Read(mmio::kVendorId, 4), mmio::kDefaultVendorId);
}

TYPED_TEST(MmioTransportTest, DriverFeatureWindows) {
  auto& m = this->mmio_;
  this->dev_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  m.Write(mmio::kDriverFeaturesSel, 4, 1);
  m.Write(mmio::kDriverFeatures, 4, 0x5);
  m.Write(mmio::kDriverFeaturesSel, 4, 0);
  m.Write(mmio::kDriverFeatures, 4, 0x1);
  EXPECT_EQ(this->dev_.driver_features(), 0x5'0000'0001u);
  // Rewriting one half keeps the other.
  m.Write(mmio::kDriverFeatures, 4, 0x0);
  EXPECT_EQ(this->dev_.driver_features(), 0x5'0000'0000u);
  // Windows beyond bit 63 do not exist.
  const uint64_t errors = m.guest_errors();
  m.Write(mmio::kDriverFeaturesSel, 4, 2);
  m.Write(mmio::kDriverFeatures, 4, 0xffffffff);
  EXPECT_EQ(m.guest_errors(), errors + 1);
  EXPECT_EQ(this->dev_.driver_features(), 0x5'0000'0000u);
  // After FEATURES_OK the driver's choice is frozen.
  m.Write(mmio::kDriverFeaturesSel, 4, 1);
  m.Write(mmio::kDriverFeatures, 4, static_cast<uint32_t>(this->Features() >> 32));
  m.Write(mmio::kDriverFeaturesSel, 4, 0);
  m.Write(mmio::kDriverFeatures, 4, static_cast<uint32_t>(this->Features()));
  m.Write(mmio::kStatus, 4, 0x0b);
  ASSERT_EQ(m.Read(mmio::kStatus, 4), 0x0bu);
  m.Write(mmio::kDriverFeatures, 4, 0);
  EXPECT_EQ(this->dev_.driver_features(), this->Features());
}

TYPED_TEST(MmioTransportTest, BadAccessesLeaveStateUnchangedDuringSetup) {
  // Mid-negotiation: features not yet accepted, queue 1 half set up, so a
  // stray Status, DriverFeatures, QueueNum or QueueReady would show.
  auto& m = this->mmio_;
  ASSERT_TRUE(this->drv_.Probe().ok());
  ASSERT_TRUE(this->drv_.Reset().ok());
  m.Write(mmio::kStatus, 4, spec::kStatusAcknowledge | spec::kStatusDriver);
  m.Write(mmio::kDriverFeatures, 4, 0x1);
  m.Write(mmio::kDeviceFeaturesSel, 4, 1);
  m.Write(mmio::kDriverFeaturesSel, 4, 1);
  m.Write(mmio::kQueueSel, 4, 1);
  m.Write(mmio::kQueueNum, 4, 8);
  m.Write(mmio::kQueueDescLow, 4, 0x2000);
  m.Write(mmio::kShmSel, 4, 3);
  ASSERT_EQ(m.guest_errors(), 0u);
  this->ExpectBadAccessesIgnored();
}

TYPED_TEST(MmioTransportTest, BadAccessesLeaveStateUnchangedWhenLive) {
  // Live: queue 0 has an unkicked chain (a stray QueueNotify would serve
  // it), an interrupt is pending (a stray ACK would lower the line), queue
  // 1 is selected and not set up.
  this->BringUp(1);
  this->Echo(0, "pending irq");
  this->AddUnkicked(0);
  auto& m = this->mmio_;
  m.Write(mmio::kQueueSel, 4, 1);
  m.Write(mmio::kDeviceFeaturesSel, 4, 1);
  ASSERT_TRUE(this->irq_.line().level());
  ASSERT_EQ(m.guest_errors(), 0u);
  this->ExpectBadAccessesIgnored();
  // The chain is still there for a proper kick.
  const int processed = this->dev_.processed;
  m.Write(mmio::kQueueNotify, 4, 0);
  EXPECT_EQ(this->dev_.processed.load(), processed + 1);
}

TYPED_TEST(MmioTransportTest, WritesToReadOnlyRegistersAreIgnored) {
  this->BringUp(1);
  this->Echo(0, "irq pending");
  this->dev_.ChangeConfig();
  auto& m = this->mmio_;
  m.Write(mmio::kQueueSel, 4, 0);
  const Snapshot before = this->Take();
  ASSERT_EQ(before.interrupt_status, 3u);
  for (uint64_t r : kReadOnly) {
    for (uint32_t value : {0u, 1u, 3u, 0xffffffffu}) {
      const uint64_t errors = m.guest_errors();
      m.Write(r, 4, value);
      EXPECT_EQ(m.guest_errors(), errors + 1) << std::hex << r;
      ASSERT_EQ(this->Take(), before) << std::hex << r << " " << value;
    }
  }
  EXPECT_EQ(m.Read(mmio::kMagicValue, 4), mmio::kMagic);
  EXPECT_EQ(m.Read(mmio::kQueueNumMax, 4), 16u);
  EXPECT_EQ(m.Read(mmio::kConfigGeneration, 4), 1u);
}

TYPED_TEST(MmioTransportTest, QueueSelBeyondNumQueues) {
  auto& m = this->mmio_;
  this->Negotiate();
  const Snapshot before = this->Take();
  for (uint32_t sel : {2u, 0xffffu, 0x10000u, 0x10001u, 0xffffffffu}) {
    SCOPED_TRACE(sel);
    m.Write(mmio::kQueueSel, 4, sel);
    EXPECT_EQ(m.Read(mmio::kQueueNumMax, 4), 0u);
    EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 0u);
    const uint64_t errors = m.guest_errors();
    m.Write(mmio::kQueueNum, 4, 16);
    for (uint64_t r = mmio::kQueueDescLow; r <= mmio::kQueueDeviceHigh; r += 4) {
      if (r == 0x088 || r == 0x08c || r == 0x098 || r == 0x09c) continue;
      m.Write(r, 4, 0x10000);
    }
    m.Write(mmio::kQueueReady, 4, 1);
    m.Write(mmio::kQueueReady, 4, 0);
    EXPECT_EQ(m.guest_errors(), errors + 9);
    m.Write(mmio::kQueueSel, 4, 0);
    Snapshot now = this->Take();
    EXPECT_EQ(now, before);  // queue 0 (the 16-bit alias) untouched
  }
  EXPECT_FALSE(this->dev_.needs_reset());
  // The driver helper sees "no such queue" like Linux's -ENOENT.
  EXPECT_EQ(this->drv_.SetUpQueue(2, QueueConfig{.size = 16}).code(),
            absl::StatusCode::kNotFound);
}

TYPED_TEST(MmioTransportTest, QueueWritesAfterReadyAreIgnored) {
  this->BringUp(1);
  auto& m = this->mmio_;
  const QueueConfig want = this->rings_[0]->config();
  m.Write(mmio::kQueueSel, 4, 0);
  const uint64_t errors = m.guest_errors();
  m.Write(mmio::kQueueNum, 4, 8);
  for (uint64_t r : {mmio::kQueueDescLow, mmio::kQueueDescHigh,
                     mmio::kQueueDriverLow, mmio::kQueueDriverHigh,
                     mmio::kQueueDeviceLow, mmio::kQueueDeviceHigh}) {
    m.Write(r, 4, 0xdead0000);
  }
  EXPECT_EQ(m.guest_errors(), errors + 7);
  const QueueConfig* got = this->dev_.queue_config_view(0);
  EXPECT_EQ(got->size, want.size);
  EXPECT_EQ(got->desc_addr, want.desc_addr);
  EXPECT_EQ(got->driver_addr, want.driver_addr);
  EXPECT_EQ(got->device_addr, want.device_addr);
  // QueueReady=0 would be a queue reset, which is not offered: ignored.
  m.Write(mmio::kQueueReady, 4, 0);
  EXPECT_EQ(m.guest_errors(), errors + 8);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 1u);
  // QueueReady=1 again is harmless; other values are refused.
  m.Write(mmio::kQueueReady, 4, 1);
  m.Write(mmio::kQueueReady, 4, 2);
  EXPECT_EQ(m.guest_errors(), errors + 9);
  EXPECT_EQ(m.Read(mmio::kQueueReset, 4), 0u);
  m.Write(mmio::kQueueReset, 4, 1);
  EXPECT_EQ(m.guest_errors(), errors + 10);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 1u);
  this->Echo(0, "still works");
  EXPECT_FALSE(this->dev_.needs_reset());
}

TYPED_TEST(MmioTransportTest, QueueAddressHalves) {
  this->Negotiate();
  auto& m = this->mmio_;
  m.Write(mmio::kQueueSel, 4, 1);
  m.Write(mmio::kQueueNum, 4, 4);
  m.Write(mmio::kQueueDescLow, 4, 0x11112222);
  m.Write(mmio::kQueueDescHigh, 4, 0x33334444);
  m.Write(mmio::kQueueDriverHigh, 4, 0x5);
  m.Write(mmio::kQueueDriverLow, 4, 0x6);
  m.Write(mmio::kQueueDeviceLow, 4, 0x7);
  m.Write(mmio::kQueueDeviceHigh, 4, 0x8);
  m.Write(mmio::kQueueDescLow, 4, 0x99990000);  // rewrite one half only
  const QueueConfig* c = this->dev_.queue_config_view(1);
  EXPECT_EQ(c->size, 4u);
  EXPECT_EQ(c->desc_addr, 0x33334444'99990000u);
  EXPECT_EQ(c->driver_addr, 0x5'00000006u);
  EXPECT_EQ(c->device_addr, 0x8'00000007u);
  EXPECT_EQ(this->dev_.queue_config_view(0)->desc_addr, 0u);
  EXPECT_EQ(m.guest_errors(), 0u);
}

TYPED_TEST(MmioTransportTest, ConfigSpaceAccesses) {
  auto& m = this->mmio_;
  EXPECT_EQ(m.Read(0x100, 1), 0x01u);
  EXPECT_EQ(m.Read(0x107, 1), 0x08u);
  EXPECT_EQ(m.Read(0x102, 2), 0x0403u);
  EXPECT_EQ(m.Read(0x106, 2), 0x0807u);
  EXPECT_EQ(m.Read(0x100, 4), 0x04030201u);
  EXPECT_EQ(m.Read(0x104, 4), 0x08070605u);
  EXPECT_EQ(m.guest_errors(), 0u);
  EXPECT_EQ(this->dev_.guest_errors(), 0u);

  // Beyond the 8-byte config space but inside the region: the device says 0.
  EXPECT_EQ(m.Read(0x108, 1), 0u);
  EXPECT_EQ(m.Read(0x108, 4), 0u);
  EXPECT_EQ(m.Read(0x1fc, 4), 0u);
  EXPECT_EQ(this->dev_.guest_errors(), 3u);
  // Misaligned, 64-bit, odd sizes, or outside the region: the transport.
  EXPECT_EQ(m.Read(0x101, 2), 0u);
  EXPECT_EQ(m.Read(0x102, 4), 0u);
  EXPECT_EQ(m.Read(0x100, 8), 0u);
  EXPECT_EQ(m.Read(0x100, 3), 0u);
  EXPECT_EQ(m.Read(0x100, 0), 0u);
  EXPECT_EQ(m.Read(0x200, 4), 0u);
  EXPECT_EQ(m.Read(0x1000, 1), 0u);
  EXPECT_EQ(m.Read(UINT64_MAX, 1), 0u);
  EXPECT_EQ(m.guest_errors(), 8u);

  m.Write(0x100, 1, 0xffffffaa);  // only the low byte counts
  m.Write(0x102, 2, 0xbbcc);
  m.Write(0x104, 4, 0x11223344);
  EXPECT_EQ(this->dev_.config(),
            (std::array<uint8_t, 8>{0xaa, 2, 0xcc, 0xbb, 0x44, 0x33, 0x22, 0x11}));
  const auto config = this->dev_.config();
  m.Write(0x108, 1, 0xff);   // out of config range
  m.Write(0x106, 4, 0xff);   // misaligned
  m.Write(0x101, 2, 0xff);   // misaligned
  m.Write(0x100, 8, 0xff);   // 64-bit
  m.Write(0x200, 4, 0xff);   // outside the region
  EXPECT_EQ(this->dev_.config(), config);
  EXPECT_EQ(this->dev_.guest_errors(), 4u);
  EXPECT_EQ(m.guest_errors(), 12u);
}

TYPED_TEST(MmioTransportTest, DriverConfigReadsAndGenerationRetry) {
  auto& d = this->drv_;
  auto u64 = d.template ReadConfigField<uint64_t>(0);
  ASSERT_TRUE(u64.ok());
  EXPECT_EQ(*u64, 0x0807060504030201u);
  auto u16 = d.template ReadConfigField<uint16_t>(6);
  ASSERT_TRUE(u16.ok());
  EXPECT_EQ(*u16, 0x0807u);
  uint8_t bytes[8];
  ASSERT_TRUE(d.ReadConfig(0, bytes, 8, 1).ok());
  EXPECT_EQ(bytes[7], 8);
  EXPECT_EQ(d.last_config_attempts(), 1);

  // A bus that changes the configuration in the middle of the first read:
  // the driver must notice the generation move and read again.
  struct RacingBus {
    Transport& mmio;
    EchoDevice& dev;
    int changes_left = 1;
    uint32_t Read(uint64_t offset, uint32_t size) {
      const uint32_t v = mmio.Read(offset, size);
      if (offset >= mmio::kConfig && changes_left > 0) {
        --changes_left;
        dev.ChangeConfig();
      }
      return v;
    }
    void Write(uint64_t offset, uint32_t size, uint32_t value) {
      mmio.Write(offset, size, value);
    }
  } bus{this->mmio_, this->dev_};
  MmioDriver racing(bus);
  ASSERT_TRUE(racing.ReadConfig(0, bytes, 8, 4).ok());
  EXPECT_EQ(racing.last_config_attempts(), 2);
  EXPECT_EQ(racing.config_generation(), 1u);
  // A device that never settles makes the driver give up, not hang.
  bus.changes_left = 1000;
  EXPECT_EQ(racing.ReadConfig(0, bytes, 8, 8).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TYPED_TEST(MmioTransportTest, QueueEnableBeforeFeaturesOkNeedsReset) {
  auto& m = this->mmio_;
  ASSERT_TRUE(this->drv_.Reset().ok());
  m.Write(mmio::kStatus, 4, spec::kStatusAcknowledge | spec::kStatusDriver);
  this->rings_[0].emplace(this->mem_, 16);
  EXPECT_EQ(this->drv_.SetUpQueue(0, this->rings_[0]->config()).code(),
            absl::StatusCode::kInternal);  // QueueReady did not stick
  EXPECT_EQ(m.Read(mmio::kStatus, 4),
            spec::kStatusDeviceNeedsReset | spec::kStatusAcknowledge |
                spec::kStatusDriver);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 0u);
  // Before DRIVER_OK the spec requires no configuration-change
  // notification (§2.1.2: only "if DRIVER_OK is set"), and DeviceCore
  // sends none: the driver finds NEEDS_RESET when it reads Status.
  EXPECT_EQ(m.Read(mmio::kInterruptStatus, 4), 0u);
  EXPECT_FALSE(this->irq_.line().level());
  // The driver cannot clear it except by a reset.
  m.Write(mmio::kStatus, 4, spec::kStatusAcknowledge | spec::kStatusDriver);
  EXPECT_TRUE(m.Read(mmio::kStatus, 4) & spec::kStatusDeviceNeedsReset);
  ASSERT_TRUE(this->drv_.Reset().ok());
  EXPECT_EQ(m.Read(mmio::kStatus, 4), 0u);
  this->BringUp(1);
  this->Echo(0, "recovered");
}

TYPED_TEST(MmioTransportTest, NeedsResetWhenLiveRaisesConfigInterrupt) {
  this->BringUp(1);
  auto& m = this->mmio_;
  // Queue 1 set up after DRIVER_OK with a ring outside guest memory.
  m.Write(mmio::kQueueSel, 4, 1);
  m.Write(mmio::kQueueNum, 4, 16);
  m.Write(mmio::kQueueDescHigh, 4, 0x7777);
  m.Write(mmio::kQueueReady, 4, 1);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 0u);
  EXPECT_TRUE(m.Read(mmio::kStatus, 4) & spec::kStatusDeviceNeedsReset);
  EXPECT_EQ(m.Read(mmio::kInterruptStatus, 4), kMmioInterruptConfigChange);
  EXPECT_TRUE(this->irq_.line().level());
  EXPECT_EQ(this->drv_.HandleInterrupt(), kMmioInterruptConfigChange);
  EXPECT_FALSE(this->irq_.line().level());
}

TYPED_TEST(MmioTransportTest, ResetThroughStatusClearsEverything) {
  this->BringUp(1);
  this->Echo(0, "leave an interrupt pending");
  this->dev_.ChangeConfig();
  auto& m = this->mmio_;
  m.Write(mmio::kDeviceFeaturesSel, 4, 1);
  m.Write(mmio::kDriverFeaturesSel, 4, 1);
  m.Write(mmio::kQueueSel, 4, 1);
  m.Write(mmio::kShmSel, 4, 1);
  ASSERT_EQ(m.Read(mmio::kInterruptStatus, 4), 3u);
  ASSERT_TRUE(this->irq_.line().level());
  const int resets = this->dev_.reset_calls;

  m.Write(mmio::kStatus, 4, 0);
  EXPECT_EQ(this->dev_.reset_calls, resets + 1);
  EXPECT_EQ(m.Read(mmio::kStatus, 4), 0u);
  EXPECT_EQ(m.Read(mmio::kInterruptStatus, 4), 0u);
  EXPECT_FALSE(this->irq_.line().level());
  EXPECT_EQ(m.device_features_sel(), 0u);
  EXPECT_EQ(m.driver_features_sel(), 0u);
  EXPECT_EQ(m.queue_sel(), 0u);
  EXPECT_EQ(m.shm_sel(), 0u);
  EXPECT_EQ(m.Read(mmio::kQueueReady, 4), 0u);
  EXPECT_EQ(this->dev_.driver_features(), 0u);
  // Queue 0's pending configuration is back to the device model's initial
  // one, whatever that convention is.
  Irq fresh_irq;
  EchoDevice fresh(this->mem_.map(), fresh_irq);
  const QueueConfig* now = this->dev_.queue_config_view(0);
  const QueueConfig* initial = fresh.queue_config_view(0);
  EXPECT_EQ(now->size, initial->size);
  EXPECT_EQ(now->desc_addr, initial->desc_addr);
  EXPECT_EQ(now->driver_addr, initial->driver_addr);
  EXPECT_EQ(now->device_addr, initial->device_addr);
  // Not a reset: Status values beyond 8 bits.
  this->BringUp(1);
  m.Write(mmio::kStatus, 4, 0x100);
  EXPECT_EQ(m.Read(mmio::kStatus, 4), 0x0fu);
  this->Echo(0, "up again");
}

TYPED_TEST(MmioTransportTest, QueueNotifyUsesTheLow16Bits) {
  this->BringUp(1);
  auto& m = this->mmio_;
  this->AddUnkicked(0);
  const uint64_t errors = m.guest_errors();
  m.Write(mmio::kQueueNotify, 4, 0x12340000);  // notification data not offered
  EXPECT_EQ(this->dev_.processed.load(), 1);
  EXPECT_EQ(m.guest_errors(), errors + 1);
  // Nonexistent queues are the device's to reject.
  const uint64_t dev_errors = this->dev_.guest_errors();
  m.Write(mmio::kQueueNotify, 4, 2);
  m.Write(mmio::kQueueNotify, 4, 0xffff);
  EXPECT_EQ(this->dev_.guest_errors(), dev_errors + 2);
  EXPECT_FALSE(this->dev_.needs_reset());
}

TYPED_TEST(MmioTransportTest, ConcurrentKicksOfOneQueue) {
  this->BringUp(1);
  constexpr int kChains = 8;  // two descriptors each fill the 16-entry ring
  for (int i = 0; i < kChains; ++i) this->AddUnkicked(0);
  auto kick = [&] {
    for (int i = 0; i < 200; ++i) this->mmio_.Write(mmio::kQueueNotify, 4, 0);
  };
  std::thread a(kick), b(kick);
  for (int i = 0; i < 200; ++i) this->drv_.HandleInterrupt();
  a.join();
  b.join();
  EXPECT_EQ(this->dev_.processed.load(), kChains);
  int reaped = 0;
  while (this->rings_[0]->Reap()) ++reaped;
  EXPECT_EQ(reaped, kChains);
  EXPECT_EQ(this->rings_[0]->device_error(), "");
  EXPECT_FALSE(this->dev_.needs_reset());
  this->drv_.HandleInterrupt();
  EXPECT_FALSE(this->irq_.line().level());
}

TEST(MmioTransportStatic, KernelCmdline) {
  EXPECT_EQ(Transport::kRegionSize, 0x200u);
  EXPECT_EQ(Transport::kMaxConfigSize, 0x100u);
  EXPECT_EQ(Transport::KernelCmdline(0xd0000000, 5),
            "virtio_mmio.device=0x200@0xd0000000:5");
  EXPECT_EQ(Transport::KernelCmdline(0x1'0000'0000, 33),
            "virtio_mmio.device=0x200@0x100000000:33");
}

TEST(MmioTransportStatic, ProbeRejectsOtherDevices) {
  struct FakeBus {
    uint32_t magic, version, id;
    uint32_t Read(uint64_t offset, uint32_t) {
      switch (offset) {
        case mmio::kMagicValue: return magic;
        case mmio::kVersion: return version;
        case mmio::kDeviceId: return id;
        default: return 0;
      }
    }
    void Write(uint64_t, uint32_t, uint32_t) {}
  };
  FakeBus not_virtio{0x12345678, 2, 1}, legacy{mmio::kMagic, 1, 1},
      placeholder{mmio::kMagic, 2, 0}, good{mmio::kMagic, 2, 4};
  EXPECT_EQ(MmioDriver(not_virtio).Probe().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MmioDriver(legacy).Probe().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(MmioDriver(placeholder).Probe().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(MmioDriver(good).Probe().ok());
}

// A device whose configuration space cannot fit the region.
class HugeConfigDevice : public DeviceCore<MmioTestTraits, HugeConfigDevice> {
 public:
  static constexpr uint32_t kDeviceId = 99;
  static constexpr uint32_t kMaxSizes[1] = {4};
  HugeConfigDevice(const GuestMemoryMap& mem, Irq& irq)
      : DeviceCore(mem, irq, "huge", 0, kMaxSizes) {}
  uint32_t ConfigSize() const { return 0x101; }
  void ReadConfigBytes(uint32_t, void*, uint32_t) {}
  void WriteConfigBytes(uint32_t, const void*, uint32_t) {}
  bool AcceptFeatures(uint64_t) { return true; }
  void OnDriverOk() {}
  void OnReset() {}
  template <VirtQueue Q>
  void ProcessQueue(uint16_t, Q&) {}
};

TEST(MmioTransportDeathTest, ConfigSpaceMustFitTheRegion) {
  TestGuestMemory mem;
  Irq irq;
  HugeConfigDevice dev(mem.map(), irq);
  ASSERT_EQ(dev.config_size(), 0x101u);
  ASSERT_EQ(dev.device_id(), 99u);
  EXPECT_DEATH(
      {
        MmioTransport<HugeConfigDevice> mmio(dev);
        (void)mmio;
      },
      "does not fit");
}

// --- MmioInterrupt on its own ----------------------------------------------

TEST(MmioInterrupt, BitsAndLine) {
  Irq irq;
  EXPECT_EQ(irq.status(), 0u);
  EXPECT_FALSE(irq.asserted());
  irq.SignalQueue(7);
  EXPECT_EQ(irq.status(), kMmioInterruptUsedBuffer);
  EXPECT_TRUE(irq.line().level());
  irq.SignalConfig();
  EXPECT_EQ(irq.status(), 3u);
  EXPECT_EQ(irq.line().raises(), 1u);
  EXPECT_EQ(irq.line().sets(), 1u);  // no redundant Set() calls
  irq.Acknowledge(0);
  irq.Acknowledge(kMmioInterruptUsedBuffer);
  EXPECT_EQ(irq.status(), kMmioInterruptConfigChange);
  EXPECT_TRUE(irq.asserted());
  irq.Acknowledge(0xffffffff);
  EXPECT_EQ(irq.status(), 0u);
  EXPECT_FALSE(irq.line().level());
  irq.SignalConfig();
  irq.Reset();
  EXPECT_EQ(irq.status(), 0u);
  EXPECT_FALSE(irq.line().level());
  EXPECT_EQ(irq.line().raises(), 2u);
  EXPECT_EQ(irq.line().lowers(), 2u);
}

TEST(MmioInterrupt, LineFollowsStatusUnderConcurrency) {
  Irq irq;
  std::atomic<bool> stop{false};
  std::vector<std::thread> signallers;
  for (int t = 0; t < 3; ++t) {
    signallers.emplace_back([&irq, t] {
      for (int i = 0; i < 20000; ++i) {
        if ((i + t) % 3 == 0) {
          irq.SignalConfig();
        } else {
          irq.SignalQueue(static_cast<uint16_t>(t));
        }
      }
    });
  }
  std::thread acker([&] {
    while (!stop.load()) irq.Acknowledge(irq.status());
  });
  for (auto& t : signallers) t.join();
  stop = true;
  acker.join();
  // Whatever the interleaving, the line ends matching the status.
  EXPECT_EQ(irq.line().level(), irq.status() != 0);
  EXPECT_EQ(irq.line().raises() - irq.line().lowers(),
            irq.line().level() ? 1u : 0u);
  irq.Acknowledge(kMmioInterruptMask);
  EXPECT_FALSE(irq.line().level());
}

}  // namespace
}  // namespace virtio
