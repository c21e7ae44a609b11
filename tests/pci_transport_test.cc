// The virtio-pci modern transport and its MSI-X/INTx interrupt, driven by
// the Linux-like PciDriver from the test harness over an echo device.
#include "virtio/pci_transport.h"

#include <array>
#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/device_core.h"
#include "virtio/pci_interrupt.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/echo_device.h"
#include "virtio/testing/pci_driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::MsiAddress;
using testing::MsiData;
using testing::MsiRecorder;
using testing::PciDriver;
using testing::TestGuestMemory;

using Irq = PciInterrupt<MsiRecorder>;
struct PciTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = Irq;
};
static_assert(HypervisorTraits<PciTraits>);
static_assert(InterruptSink<Irq>);

template <uint32_t Id>
using Echo = testing::EchoDevice<PciTraits, Id>;
constexpr uint32_t kEchoId = 0x3f;  // highest ID with a 0x1040-based PCI ID
using EchoDevice = Echo<kEchoId>;
static_assert(PciDevice<EchoDevice>);
using Transport = PciTransport<EchoDevice>;

constexpr uint64_t kVersion1 = spec::Bit(spec::kFeatureVersion1);

// Everything the guest can observe without side effects, for before/after
// comparisons.
struct Snapshot {
  std::vector<uint64_t> values;
  bool operator==(const Snapshot&) const = default;
};

class PciTest : public ::testing::Test {
 protected:
  using Driver = PciDriver<Transport>;

  explicit PciTest(testing::PciDriverOptions options = {})
      : driver_(pci_, options) {}

  void NewRing(uint16_t q, bool packed = false) {
    if (packed) {
      packed_[q].emplace(mem_, 16);
    } else {
      split_[q].emplace(mem_, 16);
    }
  }
  QueueConfig RingConfig(uint16_t q) {
    return packed_[q] ? packed_[q]->config() : split_[q]->config();
  }
  // Full bring-up on split rings, both queues.
  void BringUp() {
    NewRing(0);
    NewRing(1);
    ASSERT_TRUE(driver_.BringUp(kVersion1, {RingConfig(0), RingConfig(1)}))
        << driver_.error();
  }
  // Adds one echo request to split ring q, kicks through the notify region.
  void RoundTrip(uint16_t q, const char* text) {
    const uint32_t n = static_cast<uint32_t>(std::strlen(text));
    const uint64_t in = mem_.Alloc(n), out = mem_.Alloc(n);
    mem_.Write(in, text, n);
    ASSERT_TRUE(split_[q]->Add({Buffer{in, n, false}, Buffer{out, n, true}}));
    split_[q]->Kick();
    driver_.Kick(q);
    auto used = split_[q]->Reap();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, n);
    std::string got(n, '\0');
    mem_.Read(out, got.data(), n);
    EXPECT_EQ(got, text);
  }

  uint64_t Common(uint32_t field) const { return pci_.layout().common + field; }

  Snapshot Take() {
    Snapshot s;
    auto& v = s.values;
    for (uint32_t off = 0; off < pci::kConfigSpaceSize; off += 4) {
      // Reading pci_cfg_data performs a BAR access: leave it out.
      if (off == pci::kCapPciCfgAt + pci::kCapPciCfgData) continue;
      v.push_back(pci_.ConfigRead(off, 4));
    }
    const uint64_t c = pci_.layout().common;
    const uint64_t select = pci_.BarRead(c + pci::kCommonQueueSelect, 2);
    for (uint32_t f : {pci::kCommonDeviceFeatureSelect, pci::kCommonDriverFeatureSelect}) {
      v.push_back(pci_.BarRead(c + f, 4));
    }
    v.push_back(pci_.BarRead(c + pci::kCommonConfigMsixVector, 2));
    v.push_back(pci_.BarRead(c + pci::kCommonDeviceStatus, 1));
    v.push_back(pci_.BarRead(c + pci::kCommonConfigGeneration, 1));
    v.push_back(select);
    v.push_back(dev_.driver_features());
    for (uint16_t q = 0; q < 3; ++q) {
      pci_.BarWrite(c + pci::kCommonQueueSelect, 2, q);
      for (uint32_t f : {pci::kCommonQueueSize, pci::kCommonQueueMsixVector,
                         pci::kCommonQueueEnable, pci::kCommonQueueNotifyOff}) {
        v.push_back(pci_.BarRead(c + f, 2));
      }
      for (uint32_t f : {pci::kCommonQueueDesc, pci::kCommonQueueDriver,
                         pci::kCommonQueueDevice}) {
        v.push_back(pci_.BarRead(c + f, 8));
      }
    }
    pci_.BarWrite(c + pci::kCommonQueueSelect, 2, select);
    for (uint32_t off = 0; off < irq_.table_bytes(); off += 4) {
      v.push_back(pci_.BarRead(pci_.layout().msix_table + off, 4));
    }
    v.push_back(pci_.BarRead(pci_.layout().msix_pba, 8));
    v.push_back(irq_.isr());
    v.push_back(sink_.total());
    v.push_back(sink_.intx());
    uint64_t cfg = 0;
    pci_.device().ReadConfig(0, &cfg, 8);
    v.push_back(cfg);
    return s;
  }

  TestGuestMemory mem_;
  MsiRecorder sink_;
  Irq irq_{sink_, 2};
  EchoDevice dev_{mem_.map(), irq_};
  Transport pci_{dev_};
  Driver driver_;
  std::array<std::optional<testing::SplitDriver>, 2> split_;
  std::array<std::optional<testing::PackedDriver>, 2> packed_;
};

class PciIntxTest : public PciTest {
 protected:
  PciIntxTest() : PciTest({.msix = false}) {}
};

// ---------------------------------------------------------------------------
// Both ring layouts through the driver.

template <typename Layout>
class PciLayoutTest : public PciTest {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;
  uint64_t Features() const {
    return kVersion1 | (kPacked ? spec::Bit(spec::kFeatureRingPacked) : 0);
  }
  template <typename Ring>
  void EchoOn(Ring& ring, uint16_t q, const std::string& text) {
    EchoOn(driver_, ring, q, text);
  }
  template <typename Ring>
  void EchoOn(Driver& driver, Ring& ring, uint16_t q, const std::string& text) {
    const uint32_t n = static_cast<uint32_t>(text.size());
    const uint64_t in = mem_.Alloc(n), out = mem_.Alloc(n);
    mem_.Write(in, text.data(), n);
    ASSERT_TRUE(ring.Add({Buffer{in, n, false}, Buffer{out, n, true}}));
    ring.Kick();
    driver.Kick(q);
    auto used = ring.Reap();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, n);
    std::string got(n, '\0');
    mem_.Read(out, got.data(), n);
    EXPECT_EQ(got, text);
    EXPECT_EQ(ring.device_error(), "");
  }
};

using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
using testing::LayoutNames;
TYPED_TEST_SUITE(PciLayoutTest, Layouts, LayoutNames);

TYPED_TEST(PciLayoutTest, EchoesWithPerQueueMsixVectors) {
  using Ring = typename TypeParam::Driver;
  Ring r0(this->mem_, 16), r1(this->mem_, 8);
  ASSERT_TRUE(this->driver_.BringUp(this->Features(), {r0.config(), r1.config()}))
      << this->driver_.error();
  EXPECT_EQ(this->driver_.features(), this->Features());
  EXPECT_EQ(this->dev_.driver_features(), this->Features());
  EXPECT_EQ(this->dev_.status(), spec::kStatusAcknowledge | spec::kStatusDriver |
                                     spec::kStatusFeaturesOk | spec::kStatusDriverOk);
  EXPECT_EQ(this->dev_.queue_config_view(1)->size, 8u);

  this->EchoOn(r0, 0, "hello");
  EXPECT_EQ(this->sink_.msis(),
            (std::vector<MsiRecorder::Msi>{{MsiAddress(1), MsiData(1)}}));
  this->EchoOn(r1, 1, "world!");
  this->EchoOn(r1, 1, "again");
  EXPECT_EQ(this->sink_.Count(MsiAddress(1), MsiData(1)), 1u);
  EXPECT_EQ(this->sink_.Count(MsiAddress(2), MsiData(2)), 2u);
  EXPECT_EQ(this->sink_.total(), 3u);
  EXPECT_FALSE(this->sink_.intx());
  EXPECT_EQ(this->sink_.intx_raises(), 0u);
  EXPECT_EQ(this->irq_.isr(), 0);
  EXPECT_FALSE(this->dev_.needs_reset());
  EXPECT_EQ(this->pci_.guest_errors(), 0u);
}

TYPED_TEST(PciLayoutTest, EchoesInIntxMode) {
  using Ring = typename TypeParam::Driver;
  PciDriver<Transport> intx(this->pci_, {.msix = false});
  Ring r0(this->mem_, 16), r1(this->mem_, 16);
  ASSERT_TRUE(intx.BringUp(this->Features(), {r0.config(), r1.config()}))
      << intx.error();
  EXPECT_EQ(this->irq_.config_vector(), pci::kNoVector);
  EXPECT_EQ(this->irq_.queue_vector(0), pci::kNoVector);
  this->EchoOn(intx, r0, 0, "ping");
  EXPECT_EQ(this->sink_.total(), 0u);
  EXPECT_TRUE(this->sink_.intx());
  EXPECT_EQ(this->pci_.ConfigRead(pci::kCfgStatus, 2),
            pci::kStatusCapabilityList | pci::kStatusInterrupt);
  EXPECT_EQ(intx.ReadIsr(), pci::kIsrQueue);
  EXPECT_FALSE(this->sink_.intx());
  EXPECT_EQ(this->pci_.ConfigRead(pci::kCfgStatus, 2), pci::kStatusCapabilityList);
  EXPECT_EQ(intx.ReadIsr(), 0);
  EXPECT_EQ(this->sink_.intx_raises(), 1u);
}

// ---------------------------------------------------------------------------
// MSI-X.

TEST_F(PciTest, ProbeProgramsTheMsixTable) {
  BringUp();
  EXPECT_EQ(driver_.msix_table_size(), 3);
  EXPECT_TRUE(irq_.msix_enabled());
  EXPECT_FALSE(irq_.function_masked());
  for (uint16_t v = 0; v < 3; ++v) {
    const uint64_t e = pci_.layout().msix_table + 16u * v;
    EXPECT_EQ(pci_.BarRead(e, 8), MsiAddress(v));
    EXPECT_EQ(pci_.BarRead(e + 8, 4), MsiData(v));
    EXPECT_EQ(pci_.BarRead(e + 12, 4), 0u);  // unmasked
  }
  EXPECT_EQ(irq_.config_vector(), 0);
  EXPECT_EQ(irq_.queue_vector(0), 1);
  EXPECT_EQ(irq_.queue_vector(1), 2);
}

TEST_F(PciTest, EntriesStartMaskedAndMsixDisabled) {
  const uint64_t t = pci_.layout().msix_table;
  for (uint16_t v = 0; v < 3; ++v) {
    EXPECT_EQ(pci_.BarRead(t + 16u * v + 12, 4), 1u);
    EXPECT_EQ(pci_.BarRead(t + 16u * v, 8), 0u);
  }
  EXPECT_FALSE(irq_.msix_enabled());
  EXPECT_EQ(pci_.ConfigRead(pci::kCapMsixAt + pci::kMsixControl, 2), 2u);
}

TEST_F(PciTest, MaskedVectorIsPendingAndDeliveredOnUnmask) {
  BringUp();
  driver_.MaskVector(1, true);
  RoundTrip(0, "masked");
  EXPECT_EQ(sink_.total(), 0u);
  EXPECT_TRUE(driver_.PbaBit(1));
  EXPECT_FALSE(driver_.PbaBit(2));
  EXPECT_EQ(pci_.BarRead(pci_.layout().msix_pba, 8), 0b010u);
  RoundTrip(0, "twice");  // coalesces into the same pending bit
  EXPECT_EQ(sink_.total(), 0u);
  RoundTrip(1, "other");  // unmasked vectors still go out
  EXPECT_EQ(sink_.Count(MsiAddress(2), MsiData(2)), 1u);
  driver_.MaskVector(1, false);
  EXPECT_EQ(sink_.Count(MsiAddress(1), MsiData(1)), 1u);
  EXPECT_EQ(sink_.total(), 2u);
  EXPECT_FALSE(driver_.PbaBit(1));
}

TEST_F(PciTest, FunctionMaskHoldsEveryVector) {
  BringUp();
  driver_.SetFunctionMask(true);
  RoundTrip(0, "a");
  RoundTrip(1, "b");
  dev_.ChangeConfig();
  EXPECT_EQ(sink_.total(), 0u);
  EXPECT_EQ(pci_.BarRead(pci_.layout().msix_pba, 4), 0b111u);
  driver_.SetFunctionMask(false);
  EXPECT_EQ(sink_.total(), 3u);
  for (uint16_t v = 0; v < 3; ++v) {
    EXPECT_EQ(sink_.Count(MsiAddress(v), MsiData(v)), 1u) << v;
  }
  EXPECT_EQ(pci_.BarRead(pci_.layout().msix_pba, 4), 0u);
}

TEST_F(PciTest, MessageChangedWhileMaskedIsDeliveredWithNewValue) {
  BringUp();
  driver_.MaskVector(1, true);
  RoundTrip(0, "x");
  const uint64_t e = pci_.layout().msix_table + 16;
  pci_.BarWrite(e, 8, 0xfee0'5000);
  pci_.BarWrite(e + 8, 4, 0x77);
  driver_.MaskVector(1, false);
  EXPECT_EQ(sink_.msis(), (std::vector<MsiRecorder::Msi>{{0xfee0'5000, 0x77}}));
}

TEST_F(PciTest, BusMasterOffHoldsMessages) {
  BringUp();
  const uint32_t cmd = pci_.ConfigRead(pci::kCfgCommand, 2);
  pci_.ConfigWrite(pci::kCfgCommand, 2, cmd & ~uint32_t{pci::kCommandBusMaster});
  RoundTrip(0, "dma");
  EXPECT_EQ(sink_.total(), 0u);
  EXPECT_TRUE(driver_.PbaBit(1));
  pci_.ConfigWrite(pci::kCfgCommand, 2, cmd);
  EXPECT_EQ(sink_.Count(MsiAddress(1), MsiData(1)), 1u);
}

TEST_F(PciTest, NoVectorSendsNothing) {
  NewRing(0);
  ASSERT_TRUE(driver_.Probe() && driver_.Negotiate(kVersion1)) << driver_.error();
  ASSERT_TRUE(driver_.SetUpQueue(0, RingConfig(0), pci::kNoVector)) << driver_.error();
  ASSERT_TRUE(driver_.EnableQueue(0) && driver_.DriverOk()) << driver_.error();
  RoundTrip(0, "silent");
  EXPECT_EQ(sink_.total(), 0u);
  EXPECT_FALSE(sink_.intx());
  EXPECT_EQ(irq_.isr(), 0);
  EXPECT_EQ(pci_.BarRead(pci_.layout().msix_pba, 8), 0u);
}

TEST_F(PciTest, VectorOutsideTheTableReadsBackNoVector) {
  ASSERT_TRUE(driver_.Probe()) << driver_.error();
  pci_.BarWrite(Common(pci::kCommonQueueSelect), 2, 0);
  for (uint64_t v : {3u, 4u, 0x7ffu, 0xfffeu}) {
    pci_.BarWrite(Common(pci::kCommonQueueMsixVector), 2, v);
    EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueMsixVector), 2), 0xffffu) << v;
    pci_.BarWrite(Common(pci::kCommonConfigMsixVector), 2, v);
    EXPECT_EQ(pci_.BarRead(Common(pci::kCommonConfigMsixVector), 2), 0xffffu) << v;
  }
  pci_.BarWrite(Common(pci::kCommonQueueMsixVector), 2, 2);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueMsixVector), 2), 2u);
  // A queue that does not exist has no vector and takes none.
  pci_.BarWrite(Common(pci::kCommonQueueSelect), 2, 5);
  pci_.BarWrite(Common(pci::kCommonQueueMsixVector), 2, 1);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueMsixVector), 2), 0xffffu);
}

TEST_F(PciTest, ConfigChangeUsesConfigVectorAndSetsIsrBit1) {
  BringUp();
  dev_.ChangeConfig();
  EXPECT_EQ(sink_.msis(), (std::vector<MsiRecorder::Msi>{{MsiAddress(0), MsiData(0)}}));
  EXPECT_EQ(irq_.isr(), pci::kIsrConfig);  // §4.1.4.5.1, even with MSI-X
  EXPECT_FALSE(sink_.intx());              // but no INTx while MSI-X is on
}

TEST_F(PciTest, ConcurrentSignalsAreNeverLost) {
  BringUp();
  constexpr int kSignals = 2000;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (uint16_t q = 0; q < 2; ++q) {
    threads.emplace_back([&, q] {
      while (!go.load()) {
      }
      for (int i = 0; i < kSignals; ++i) irq_.SignalQueue(q);
    });
  }
  go = true;
  for (int i = 0; i < 500; ++i) {
    driver_.SetFunctionMask(i % 2 == 0);
    driver_.MaskVector(1, i % 3 == 0);
  }
  for (auto& t : threads) t.join();
  driver_.SetFunctionMask(false);
  driver_.MaskVector(1, false);
  EXPECT_EQ(pci_.BarRead(pci_.layout().msix_pba, 8), 0u);
  for (uint16_t v = 1; v <= 2; ++v) {
    const size_t n = sink_.Count(MsiAddress(v), MsiData(v));
    EXPECT_GE(n, 1u);
    EXPECT_LE(n, static_cast<size_t>(kSignals));
  }
  EXPECT_EQ(sink_.total(), sink_.Count(MsiAddress(1), MsiData(1)) +
                               sink_.Count(MsiAddress(2), MsiData(2)));
}

// ---------------------------------------------------------------------------
// INTx.

TEST_F(PciIntxTest, IsrIsReadToClearAndDrivesIntx) {
  BringUp();
  EXPECT_FALSE(irq_.msix_enabled());
  RoundTrip(0, "one");
  RoundTrip(1, "two");
  EXPECT_TRUE(sink_.intx());
  EXPECT_EQ(sink_.intx_raises(), 1u);
  EXPECT_EQ(sink_.total(), 0u);
  dev_.ChangeConfig();
  EXPECT_EQ(driver_.ReadIsr(), pci::kIsrQueue | pci::kIsrConfig);
  EXPECT_FALSE(sink_.intx());
  EXPECT_EQ(driver_.ReadIsr(), 0);
  dev_.ChangeConfig();
  EXPECT_TRUE(sink_.intx());
  EXPECT_EQ(driver_.ReadIsr(), pci::kIsrConfig);
  EXPECT_EQ(sink_.intx_raises(), 2u);
}

TEST_F(PciIntxTest, WrongSizedIsrReadDoesNotClear) {
  BringUp();
  RoundTrip(0, "x");
  const uint64_t errors = pci_.guest_errors();
  EXPECT_EQ(pci_.BarRead(pci_.layout().isr, 4), 0u);
  EXPECT_EQ(pci_.BarRead(pci_.layout().isr, 2), 0u);
  EXPECT_EQ(pci_.guest_errors(), errors + 2);
  EXPECT_TRUE(sink_.intx());
  EXPECT_EQ(driver_.ReadIsr(), pci::kIsrQueue);
}

TEST_F(PciIntxTest, IntxDisableGatesTheLineNotTheStatus) {
  BringUp();
  const uint32_t cmd = pci_.ConfigRead(pci::kCfgCommand, 2);
  pci_.ConfigWrite(pci::kCfgCommand, 2, cmd | pci::kCommandIntxDisable);
  RoundTrip(0, "x");
  EXPECT_FALSE(sink_.intx());
  EXPECT_TRUE(pci_.ConfigRead(pci::kCfgStatus, 2) & pci::kStatusInterrupt);
  pci_.ConfigWrite(pci::kCfgCommand, 2, cmd);
  EXPECT_TRUE(sink_.intx());
  EXPECT_EQ(driver_.ReadIsr(), pci::kIsrQueue);
  EXPECT_FALSE(sink_.intx());
}

TEST_F(PciIntxTest, EnablingMsixTakesIntxAway) {
  BringUp();
  RoundTrip(0, "x");
  EXPECT_TRUE(sink_.intx());
  driver_.SetMsixEnabled(true);
  EXPECT_FALSE(sink_.intx());
  EXPECT_FALSE(pci_.ConfigRead(pci::kCfgStatus, 2) & pci::kStatusInterrupt);
}

// ---------------------------------------------------------------------------
// Configuration space.

// Linux's pci_set_master writes the latency timer (hardwired to 0 here),
// other drivers the cache line size: neither is a guest error.
TEST_F(PciTest, CacheLineAndLatencyWritesAreHarmless) {
  pci_.ConfigWrite(pci::kCfgCacheLineSize + 1, 1, 0x40);  // latency timer
  pci_.ConfigWrite(pci::kCfgCacheLineSize, 1, 0x10);
  pci_.ConfigWrite(pci::kCfgCacheLineSize, 2, 0x4010);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgCacheLineSize + 1, 1), 0u);
  EXPECT_EQ(pci_.guest_errors(), 0u);
  pci_.ConfigWrite(pci::kCfgRevision, 1, 0x7);  // a real read-only register
  EXPECT_EQ(pci_.guest_errors(), 1u);
}

TEST_F(PciTest, HeaderFields) {
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgVendorId, 2), 0x1af4u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgDeviceId, 2), 0x1040u + kEchoId);
  EXPECT_EQ(pci_.ConfigRead(0, 4), ((0x1040u + kEchoId) << 16) | 0x1af4u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgCommand, 2), 0u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgStatus, 2), pci::kStatusCapabilityList);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgRevision, 1), 1u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgRevision, 4), 0x00ff0001u);  // class|rev
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgCacheLineSize, 4), 0u);  // header type 0
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgSubsystemVendorId, 2), 0x1af4u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgSubsystemId, 2), 0x1100u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgCapabilityPointer, 1), pci::kCapCommonAt);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgInterruptLine, 1), 0u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgInterruptPin, 1), 1u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgRomAddress, 4), 0u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgBar0, 4), pci::kBarMemory64);
  for (uint32_t bar = 1; bar < 6; ++bar) {
    EXPECT_EQ(pci_.ConfigRead(pci::kCfgBar0 + 4 * bar, 4), 0u) << bar;
  }
  // Extended configuration space exists but is empty.
  EXPECT_EQ(pci_.ConfigRead(0x100, 4), 0u);
  EXPECT_EQ(pci_.ConfigRead(0xffc, 4), 0u);
  EXPECT_EQ(pci_.guest_errors(), 0u);
}

template <uint32_t Id>
uint32_t ClassOf(TestGuestMemory& mem) {
  MsiRecorder sink;
  Irq irq(sink, 2);
  Echo<Id> dev(mem.map(), irq);
  PciTransport<Echo<Id>> pci(dev);
  EXPECT_EQ(pci.ConfigRead(pci::kCfgDeviceId, 2), 0x1040u + Id);
  return pci.ConfigRead(pci::kCfgRevision, 4) >> 8;
}

TEST_F(PciTest, ClassCodePerDeviceType) {
  EXPECT_EQ(ClassOf<spec::kDeviceIdNet>(mem_), 0x020000u);
  EXPECT_EQ(ClassOf<spec::kDeviceIdBlock>(mem_), 0x010000u);
  EXPECT_EQ(ClassOf<spec::kDeviceIdConsole>(mem_), 0x078000u);
  EXPECT_EQ(ClassOf<spec::kDeviceIdEntropy>(mem_), 0x00ff00u);
}

TEST_F(PciTest, OptionsOverrideIdentity) {
  MsiRecorder sink;
  Irq irq(sink, 2);
  EchoDevice dev(mem_.map(), irq);
  Transport pci(dev, {.subsystem_vendor_id = 0x1234,
                      .subsystem_id = 0x5678,
                      .class_code = 0x0c0330,
                      .bar_prefetchable = true,
                      .bar_address = 0x1'2345'6789,
                      .interrupt_line = 11});
  EXPECT_EQ(pci.ConfigRead(pci::kCfgSubsystemVendorId, 4), 0x56781234u);
  EXPECT_EQ(pci.ConfigRead(pci::kCfgRevision, 4), 0x0c033001u);
  EXPECT_EQ(pci.ConfigRead(pci::kCfgInterruptLine, 1), 11u);
  EXPECT_EQ(pci.bar_address(), 0x1'2345'0000u);  // rounded to 32 KiB
  EXPECT_EQ(pci.ConfigRead(pci::kCfgBar0, 4),
            0x2345'0000u | pci::kBarMemory64 | pci::kBarPrefetchable);
  EXPECT_EQ(pci.ConfigRead(pci::kCfgBar1, 4), 1u);
}

TEST_F(PciTest, CapabilityListStructure) {
  ASSERT_TRUE(driver_.Probe()) << driver_.error();
  const pci::BarLayout& l = pci_.layout();
  EXPECT_EQ(driver_.capability_ids(),
            (std::vector<uint8_t>{9, 9, 9, 9, 9, pci::kCapIdMsix}));
  struct Want {
    uint32_t at;
    uint8_t len, type;
    uint64_t offset;
    uint32_t length;
  };
  const Want want[] = {
      {0x40, 16, pci::kCapCommonCfg, l.common, 0x3c},
      {0x50, 16, pci::kCapIsrCfg, l.isr, 1},
      {0x60, 16, pci::kCapDeviceCfg, l.device, 8},
      {0x70, 20, pci::kCapNotifyCfg, l.notify, 2 * 4},
      {0x84, 20, pci::kCapPciCfg, 0, 0},
  };
  ASSERT_EQ(driver_.virtio_caps().size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const auto& c = driver_.virtio_caps()[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(c.at, want[i].at);
    EXPECT_EQ(pci_.ConfigRead(c.at + pci::kCapLen, 1), want[i].len);
    EXPECT_EQ(c.cfg_type, want[i].type);
    EXPECT_EQ(c.bar, 0);
    EXPECT_EQ(c.offset, want[i].offset);
    EXPECT_EQ(c.length, want[i].length);
  }
  EXPECT_EQ(l.common, 0x0000u);
  EXPECT_EQ(l.isr, 0x1000u);
  EXPECT_EQ(l.device, 0x2000u);
  EXPECT_EQ(l.notify, 0x3000u);
  EXPECT_EQ(l.msix_table, 0x4000u);
  EXPECT_EQ(l.msix_pba, 0x5000u);
  EXPECT_EQ(driver_.notify_multiplier(), 4u);
  EXPECT_EQ(driver_.msix_cap_at(), pci::kCapMsixAt);
  EXPECT_EQ(pci_.ConfigRead(pci::kCapMsixAt + pci::kCapNext, 1), 0u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCapMsixAt + pci::kMsixControl, 2) & 0x7ff, 2u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCapMsixAt + pci::kMsixTable, 4), 0x4000u);
  EXPECT_EQ(pci_.ConfigRead(pci::kCapMsixAt + pci::kMsixPba, 4), 0x5000u);
  EXPECT_EQ(pci_.NotifyAddress(0), 0x3000u);
  EXPECT_EQ(pci_.NotifyAddress(1), 0x3004u);
}

TEST_F(PciTest, BarSizing) {
  EXPECT_EQ(pci_.bar_size(), 0x8000u);  // six 4 KiB pages, rounded up
  pci_.ConfigWrite(pci::kCfgBar0, 4, 0xffffffff);
  pci_.ConfigWrite(pci::kCfgBar1, 4, 0xffffffff);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgBar0, 4), 0xffff8000u | pci::kBarMemory64);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgBar1, 4), 0xffffffffu);
  for (uint32_t reg = pci::kCfgBar0 + 8; reg <= 0x24; reg += 4) {
    pci_.ConfigWrite(reg, 4, 0xffffffff);
    EXPECT_EQ(pci_.ConfigRead(reg, 4), 0u) << reg;
  }
  pci_.ConfigWrite(pci::kCfgRomAddress, 4, 0xfffff801);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgRomAddress, 4), 0u);
  pci_.ConfigWrite(pci::kCfgBar0, 4, 0xfebc'1234);  // low bits are ignored
  pci_.ConfigWrite(pci::kCfgBar1, 4, 0x2);
  EXPECT_EQ(pci_.bar_address(), 0x2'febc'0000u);
  EXPECT_EQ(pci_.guest_errors(), 0u);  // sizing is not a guest error
  // The driver's own sizing agrees.
  ASSERT_TRUE(driver_.Probe()) << driver_.error();
  EXPECT_EQ(driver_.bar_size(), 0x8000u);
  EXPECT_FALSE(driver_.bar_prefetchable());
  EXPECT_EQ(pci_.bar_address(), 0xc000'0000u);
  EXPECT_TRUE(pci_.memory_enabled());
  EXPECT_TRUE(pci_.bus_master_enabled());
}

TEST_F(PciTest, CommandRegisterWritableBits) {
  pci_.ConfigWrite(pci::kCfgCommand, 2, 0xffff);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgCommand, 2),
            uint32_t{pci::kCommandMemorySpace | pci::kCommandBusMaster |
                     pci::kCommandIntxDisable});
  EXPECT_TRUE(pci_.memory_enabled());
  pci_.ConfigWrite(pci::kCfgCommand, 1, 0);
  EXPECT_FALSE(pci_.memory_enabled());
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgCommand, 2), uint32_t{pci::kCommandIntxDisable});
  // Status is not writable (no error bits to clear).
  pci_.ConfigWrite(pci::kCfgCommand, 4, 0xffff'0000);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgStatus, 2), pci::kStatusCapabilityList);
  pci_.ConfigWrite(pci::kCfgInterruptLine, 1, 10);
  EXPECT_EQ(pci_.ConfigRead(pci::kCfgInterruptLine, 2), 0x010au);
}

// ---------------------------------------------------------------------------
// Bad accesses.

TEST_F(PciTest, BadAccessesChangeNothing) {
  NewRing(0);
  ASSERT_TRUE(driver_.Probe() && driver_.Negotiate(kVersion1)) << driver_.error();
  ASSERT_TRUE(driver_.SetUpQueue(0, RingConfig(0))) << driver_.error();
  const Snapshot before = Take();
  const uint64_t errors = pci_.guest_errors();
  const pci::BarLayout& l = pci_.layout();
  const uint64_t c = l.common;
  struct W {
    uint64_t offset;
    uint32_t size;
    uint64_t value;
  };
  const W bar_writes[] = {
      {c + pci::kCommonDeviceStatus, 2, 0},        // 8-bit field, 16-bit write
      {c + pci::kCommonDeviceStatus, 4, 0},
      {c + pci::kCommonQueueSelect, 4, 1},         // 16-bit field
      {c + pci::kCommonQueueSize, 1, 4},
      {c + pci::kCommonQueueSize + 1, 1, 4},
      {c + pci::kCommonQueueMsixVector, 4, 0},
      {c + pci::kCommonDriverFeature, 2, 0},       // 32-bit field
      {c + pci::kCommonDriverFeature, 8, 0},
      {c + pci::kCommonQueueDesc + 4, 8, 0},       // misaligned 64-bit
      {c + pci::kCommonQueueDesc + 2, 2, 0},
      {c + pci::kCommonQueueEnable, 1, 1},
      {c + 0x3c, 4, 1},                            // past common cfg
      {c + pci::kCommonDeviceFeature, 4, 0},       // read-only fields
      {c + pci::kCommonNumQueues, 2, 7},
      {c + pci::kCommonConfigGeneration, 1, 9},
      {c + pci::kCommonQueueNotifyOff, 2, 3},
      {c + pci::kCommonQueueNotifyData, 2, 3},
      {c + pci::kCommonQueueReset, 2, 1},
      {l.isr, 1, 0xff},                            // ISR is read-only
      {l.isr + 1, 1, 0xff},
      {l.device + 1, 2, 0xffff},                   // misaligned
      {l.device + 6, 4, 0xffffffff},               // runs past the config
      {l.device + 3, 3, 0},
      {l.notify + 1, 1, 0},
      {l.notify + 2, 2, 0},
      {l.notify + 8, 2, 2},                         // queue 2 does not exist
      {l.notify, 1, 0},
      {l.msix_table + 12, 2, 0},                    // MSI-X: DWORD/QWORD only
      {l.msix_table + 12, 1, 0},
      {l.msix_table + 4, 8, 0},                     // misaligned QWORD
      {l.msix_pba, 8, ~0ull},                       // PBA is read-only
      {l.msix_table + l.msix_table_size, 4, 0},     // past the table
      {pci_.bar_size(), 4, 0},                      // past the BAR
      {pci_.bar_size() - 4, 8, 0},
      {~0ull - 3, 4, 0},
      {0x7000, 4, 0},                               // padding page
      {c, 0, 0},
      {c, 16, 0},
  };
  for (const W& w : bar_writes) {
    pci_.BarWrite(w.offset, w.size, w.value);
    SCOPED_TRACE(w.offset);
    ASSERT_EQ(Take(), before);
  }
  struct C {
    uint32_t offset, size, value;
  };
  const C cfg_writes[] = {
      {pci::kCfgVendorId, 4, 0},            // read-only
      {pci::kCfgRevision, 4, 0xffffffff},
      {pci::kCfgCommand + 1, 2, 0xffff},    // misaligned
      {pci::kCfgCommand, 3, 0xffffff},      // bad size
      {pci::kCfgBar0 + 2, 4, 0},
      {pci::kCapMsixAt + 3, 2, 0xffff},
      {pci::kCapCommonAt + pci::kCapOffset, 4, 0x100},
      {pci::kCapNotifyAt + pci::kCapNotifyMultiplier, 4, 8},
      {pci::kCapMsixAt + pci::kMsixTable, 4, 0},
      {pci::kCfgInterruptPin, 1, 2},
      {0x100, 4, 0xffffffff},               // extended space
      {0x1000, 4, 0},                       // past it
      {0xfffffffc, 4, 0},
      {0, 8, 0},
  };
  for (const C& w : cfg_writes) {
    pci_.ConfigWrite(w.offset, w.size, w.value);
    SCOPED_TRACE(w.offset);
    ASSERT_EQ(Take(), before);
  }
  EXPECT_EQ(pci_.guest_errors(), errors + std::size(bar_writes) + std::size(cfg_writes));

  // Bad reads return 0 and change nothing either.
  const C cfg_reads[] = {{1, 2, 0}, {2, 4, 0}, {0, 3, 0}, {0, 8, 0}, {0x1000, 4, 0}};
  for (const C& r : cfg_reads) EXPECT_EQ(pci_.ConfigRead(r.offset, r.size), 0u);
  const W bar_reads[] = {{c + pci::kCommonDeviceStatus, 2, 0},
                         {c + pci::kCommonNumQueues, 4, 0},
                         {c + pci::kCommonQueueSize + 1, 1, 0},
                         {l.msix_table, 2, 0},
                         {l.msix_pba + 1, 1, 0},
                         {pci_.bar_size(), 1, 0},
                         {c + 1, 1, 0}};
  for (const W& r : bar_reads) EXPECT_EQ(pci_.BarRead(r.offset, r.size), 0u) << r.offset;
  EXPECT_EQ(Take(), before);
  // The device is still fine: finish bring-up and echo.
  ASSERT_TRUE(driver_.EnableQueue(0) && driver_.DriverOk()) << driver_.error();
  RoundTrip(0, "still works");
}

TEST_F(PciTest, EnabledQueueConfigurationIsFrozen) {
  BringUp();
  pci_.BarWrite(Common(pci::kCommonQueueSelect), 2, 0);
  const uint64_t desc = pci_.BarRead(Common(pci::kCommonQueueDesc), 8);
  pci_.BarWrite(Common(pci::kCommonQueueSize), 2, 4);
  pci_.BarWrite(Common(pci::kCommonQueueDesc), 4, 0x1000);
  pci_.BarWrite(Common(pci::kCommonQueueDesc), 8, 0x2000);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueSize), 2), 16u);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueDesc), 8), desc);
  // queue_enable = 0 is not how a queue is disabled.
  pci_.BarWrite(Common(pci::kCommonQueueEnable), 2, 0);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueEnable), 2), 1u);
  RoundTrip(0, "unchanged");
}

TEST_F(PciTest, QueueEnableBeforeFeaturesOkNeedsReset) {
  ASSERT_TRUE(driver_.Probe() && driver_.Reset()) << driver_.error();
  driver_.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  NewRing(0);
  ASSERT_TRUE(driver_.SetUpQueue(0, RingConfig(0))) << driver_.error();
  EXPECT_FALSE(driver_.EnableQueue(0));
  EXPECT_EQ(driver_.status(), spec::kStatusAcknowledge | spec::kStatusDriver |
                                  spec::kStatusDeviceNeedsReset);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueEnable), 2), 0u);
}

TEST_F(PciTest, QueueAddressesAsHalvesOrOneAccess) {
  ASSERT_TRUE(driver_.Probe() && driver_.Negotiate(kVersion1)) << driver_.error();
  pci_.BarWrite(Common(pci::kCommonQueueSelect), 2, 1);
  pci_.BarWrite(Common(pci::kCommonQueueDriver), 8, 0x1122'3344'5566'7788);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueDriver), 4), 0x5566'7788u);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueDriver + 4), 4), 0x1122'3344u);
  pci_.BarWrite(Common(pci::kCommonQueueDriver + 4), 4, 0xaabb'ccdd);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueDriver), 8), 0xaabb'ccdd'5566'7788u);
  pci_.BarWrite(Common(pci::kCommonQueueDevice), 4, 0x100);
  EXPECT_EQ(dev_.queue_config_view(1)->device_addr, 0x100u);
  EXPECT_EQ(dev_.queue_config_view(1)->driver_addr, 0xaabb'ccdd'5566'7788u);
  EXPECT_EQ(dev_.queue_config_view(0)->driver_addr, 0u);
  // Nonexistent queues read as absent and ignore writes.
  pci_.BarWrite(Common(pci::kCommonQueueSelect), 2, 2);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueSize), 2), 0u);
  pci_.BarWrite(Common(pci::kCommonQueueDesc), 8, 0x1000);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueDesc), 8), 0u);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueSelect), 2), 2u);
}

TEST_F(PciTest, FeatureWindows) {
  ASSERT_TRUE(driver_.Probe() && driver_.Reset()) << driver_.error();
  const uint64_t f = dev_.device_features();
  for (uint32_t sel = 0; sel < 4; ++sel) {
    pci_.BarWrite(Common(pci::kCommonDeviceFeatureSelect), 4, sel);
    EXPECT_EQ(pci_.BarRead(Common(pci::kCommonDeviceFeature), 4),
              sel < 2 ? (f >> (32 * sel)) & 0xffffffff : 0u);
  }
  pci_.BarWrite(Common(pci::kCommonDriverFeatureSelect), 4, 1);
  pci_.BarWrite(Common(pci::kCommonDriverFeature), 4, 1);
  pci_.BarWrite(Common(pci::kCommonDriverFeatureSelect), 4, 0);
  pci_.BarWrite(Common(pci::kCommonDriverFeature), 4, 1);
  EXPECT_EQ(dev_.driver_features(), kVersion1 | 1);
  pci_.BarWrite(Common(pci::kCommonDriverFeatureSelect), 4, 2);
  pci_.BarWrite(Common(pci::kCommonDriverFeature), 4, 0xff);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonDriverFeature), 4), 0u);
  EXPECT_EQ(dev_.driver_features(), kVersion1 | 1);
}

TEST_F(PciTest, DeviceConfigWithGenerationRetry) {
  ASSERT_TRUE(driver_.Probe()) << driver_.error();
  uint8_t buf[8] = {};
  ASSERT_TRUE(driver_.ReadDeviceConfig(0, buf, 8)) << driver_.error();
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + 8),
            (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(pci_.BarRead(pci_.layout().device, 8), 0x0807060504030201u);
  EXPECT_EQ(pci_.BarRead(pci_.layout().device + 6, 2), 0x0807u);
  const uint8_t w[3] = {0xaa, 0xbb, 0xcc};
  driver_.WriteDeviceConfig(1, w, 3);
  EXPECT_EQ(pci_.BarRead(pci_.layout().device, 4), 0xccbbaa01u);
  const uint64_t gen = pci_.BarRead(Common(pci::kCommonConfigGeneration), 1);
  dev_.ChangeConfig();
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonConfigGeneration), 1), gen + 1);
}

TEST_F(PciTest, DeviceStatusZeroResetsDeviceAndInterruptState) {
  BringUp();
  driver_.MaskVector(1, true);
  RoundTrip(0, "pending");
  ASSERT_TRUE(driver_.PbaBit(1));
  dev_.ChangeConfig();
  ASSERT_EQ(irq_.isr(), pci::kIsrConfig);
  pci_.BarWrite(Common(pci::kCommonQueueSelect), 2, 1);
  pci_.BarWrite(Common(pci::kCommonDeviceFeatureSelect), 4, 1);

  driver_.SetStatus(0);
  EXPECT_EQ(driver_.status(), 0);
  EXPECT_EQ(dev_.driver_features(), 0u);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueSelect), 2), 0u);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonDeviceFeatureSelect), 4), 0u);
  EXPECT_EQ(pci_.BarRead(Common(pci::kCommonConfigMsixVector), 2), 0xffffu);
  for (uint16_t q = 0; q < 2; ++q) {
    pci_.BarWrite(Common(pci::kCommonQueueSelect), 2, q);
    EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueEnable), 2), 0u);
    EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueSize), 2), 16u);
    EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueMsixVector), 2), 0xffffu);
    EXPECT_EQ(pci_.BarRead(Common(pci::kCommonQueueDesc), 8), 0u);
  }
  EXPECT_EQ(irq_.isr(), 0);
  EXPECT_FALSE(driver_.PbaBit(1));
  driver_.MaskVector(1, false);
  EXPECT_EQ(sink_.total(), 1u);  // only the config MSI sent before reset
  // The MSI-X function state survives a virtio reset.
  EXPECT_TRUE(irq_.msix_enabled());
  EXPECT_EQ(pci_.BarRead(pci_.layout().msix_table + 16, 8), MsiAddress(1));
  EXPECT_TRUE(pci_.memory_enabled());

  // And the device comes back.
  NewRing(0);
  NewRing(1);
  ASSERT_TRUE(driver_.Negotiate(kVersion1)) << driver_.error();
  ASSERT_TRUE(driver_.SetUpQueue(0, RingConfig(0)) && driver_.SetUpQueue(1, RingConfig(1)) &&
              driver_.EnableQueue(0) && driver_.EnableQueue(1) && driver_.DriverOk())
      << driver_.error();
  RoundTrip(1, "back");
  EXPECT_EQ(sink_.Count(MsiAddress(2), MsiData(2)), 1u);
}

TEST_F(PciTest, FunctionResetRestoresPowerOnState) {
  const Snapshot power_on = Take();
  BringUp();
  RoundTrip(0, "x");
  pci_.Reset();
  sink_.Clear();
  EXPECT_EQ(Take(), power_on);
  EXPECT_FALSE(irq_.msix_enabled());
  EXPECT_FALSE(pci_.memory_enabled());
  EXPECT_EQ(pci_.bar_address(), 0u);
}

TEST_F(PciTest, PciCfgWindowReachesTheBar) {
  ASSERT_TRUE(driver_.Probe()) << driver_.error();
  const uint32_t c = static_cast<uint32_t>(pci_.layout().common);
  EXPECT_EQ(driver_.WindowRead(c + pci::kCommonNumQueues, 2), 2u);
  driver_.WindowWrite(c + pci::kCommonQueueSelect, 2, 1);
  EXPECT_EQ(pci_.BarRead(c + pci::kCommonQueueSelect, 2), 1u);
  EXPECT_EQ(driver_.WindowRead(static_cast<uint32_t>(pci_.layout().device) + 4, 4),
            0x08070605u);
  // The window fields read back what was written (§4.1.4.9).
  EXPECT_EQ(pci_.ConfigRead(pci::kCapPciCfgAt + pci::kCapOffset, 4),
            pci_.layout().device + 4);
  EXPECT_EQ(pci_.ConfigRead(pci::kCapPciCfgAt + pci::kCapLength, 4), 4u);
  // Reading the ISR through the window clears it, like a BAR read.
  irq_.SignalConfig();
  EXPECT_EQ(driver_.WindowRead(static_cast<uint32_t>(pci_.layout().isr), 1),
            pci::kIsrConfig);
  EXPECT_EQ(irq_.isr(), 0);

  // Invalid windows touch nothing: wrong BAR, bad length, misaligned, or
  // outside the BAR.
  const uint64_t errors = pci_.guest_errors();
  const uint32_t data = pci::kCapPciCfgAt + pci::kCapPciCfgData;
  pci_.ConfigWrite(data, 4, 0);  // (a valid window: 1-byte ISR write, RO)
  const Snapshot before = Take();
  struct Win {
    uint8_t bar;
    uint32_t offset, length;
  };
  const Win bad[] = {{1, c + pci::kCommonQueueSelect, 2},
                     {0, c + pci::kCommonQueueSelect, 3},
                     {0, c + pci::kCommonQueueSelect, 8},
                     {0, c + pci::kCommonQueueSelect + 1, 2},
                     {0, static_cast<uint32_t>(pci_.bar_size()), 4},
                     {0, 0xfffffffc, 4}};
  for (const Win& w : bad) {
    pci_.ConfigWrite(pci::kCapPciCfgAt + pci::kCapBar, 1, w.bar);
    pci_.ConfigWrite(pci::kCapPciCfgAt + pci::kCapOffset, 4, w.offset);
    pci_.ConfigWrite(pci::kCapPciCfgAt + pci::kCapLength, 4, w.length);
    pci_.ConfigWrite(data, 4, 0);
    pci_.ConfigRead(data, 4);
  }
  // Back to the window `before` saw.
  pci_.ConfigWrite(pci::kCapPciCfgAt + pci::kCapBar, 1, 0);
  pci_.ConfigWrite(pci::kCapPciCfgAt + pci::kCapOffset, 4,
                   static_cast<uint32_t>(pci_.layout().isr));
  pci_.ConfigWrite(pci::kCapPciCfgAt + pci::kCapLength, 4, 1);
  EXPECT_EQ(Take(), before);
  EXPECT_EQ(pci_.guest_errors(), errors + 1 + 2 * std::size(bad));
}

TEST_F(PciTest, KickThroughNotifyAddressMatchesDriver) {
  BringUp();
  EXPECT_EQ(driver_.NotifyOffset(0), pci_.NotifyAddress(0));
  EXPECT_EQ(driver_.NotifyOffset(1), pci_.NotifyAddress(1));
  EXPECT_EQ(driver_.NotifyAddress(1), 0xc000'0000u + pci_.NotifyAddress(1));
  // A 32-bit notify (NOTIFICATION_DATA style) is accepted too.
  const uint64_t in = mem_.Alloc(2), out = mem_.Alloc(2);
  split_[1]->Add({Buffer{in, 2, false}, Buffer{out, 2, true}});
  split_[1]->Kick();
  pci_.BarWrite(pci_.NotifyAddress(1), 4, 0xdead'0001);
  EXPECT_TRUE(split_[1]->Reap().has_value());
}

}  // namespace
}  // namespace virtio
