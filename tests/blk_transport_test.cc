// virtio-blk brought up by a register-level guest driver over the
// virtio-mmio and virtio-pci transports, the way Linux's virtio_mmio /
// virtio_pci_modern + virtio_blk do it, then a write and a read-back.
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/blk_device.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/pci_driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::TestGuestMemory;

struct MmioTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = MmioInterrupt<testing::RecordingIrqLine>;
};
struct PciTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = PciInterrupt<testing::MsiRecorder>;
};

constexpr uint64_t kDiskBytes = 1 << 20;

uint64_t WantedFeatures(bool packed) {
  return spec::Bit(spec::kFeatureVersion1) | spec::Bit(spec::kFeatureEventIdx) |
         spec::Bit(spec::kFeatureIndirectDesc) |
         (packed ? spec::Bit(spec::kFeatureRingPacked) : 0) |
         spec::Bit(blk::kFeatureSizeMax) | spec::Bit(blk::kFeatureSegMax) |
         spec::Bit(blk::kFeatureBlkSize) | spec::Bit(blk::kFeatureFlush) |
         spec::Bit(blk::kFeatureTopology) | spec::Bit(blk::kFeatureConfigWce) |
         spec::Bit(blk::kFeatureDiscard) | spec::Bit(blk::kFeatureWriteZeroes) |
         spec::Bit(blk::kFeatureRo) | spec::Bit(blk::kFeatureMq);
}

// One OUT then one IN request on `ring`, kicking through `kick`.
template <typename Ring, typename Kick>
void WriteAndReadBack(TestGuestMemory& mem, Ring& ring, Kick kick,
                      RamDisk& disk) {
  std::vector<uint8_t> data(4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 5);
  const uint64_t wh = mem.Alloc(16, 16), wd = mem.Alloc(4096, 512),
                 ws = mem.Alloc(1, 1);
  const blk::RequestHeader w{blk::kTypeOut, 0, 16};
  mem.Write(wh, &w, 16);
  mem.Write(wd, data.data(), 4096);
  mem.Fill(ws, 0xff, 1);
  ASSERT_TRUE(ring.Add({{wh, 16, false}, {wd, 4096, false}, {ws, 1, true}}));
  if (ring.Kick()) kick();
  auto used = ring.Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 1u);
  EXPECT_EQ(mem.Load<uint8_t>(ws), blk::kStatusOk);
  EXPECT_EQ(0, std::memcmp(disk.data().data() + 16 * 512, data.data(), 4096));

  const uint64_t rh = mem.Alloc(16, 16), rd = mem.Alloc(4097, 512);
  const blk::RequestHeader r{blk::kTypeIn, 0, 16};
  mem.Write(rh, &r, 16);
  ASSERT_TRUE(ring.Add({{rh, 16, false}, {rd, 4097, true}}, /*indirect=*/true));
  if (ring.Kick()) kick();
  used = ring.Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 4097u);
  EXPECT_EQ(mem.Load<uint8_t>(rd + 4096), blk::kStatusOk);
  std::vector<uint8_t> back(4096);
  mem.Read(rd, back.data(), 4096);
  EXPECT_EQ(back, data);
  EXPECT_EQ(ring.device_error(), "");
}

template <typename Layout>
class BlkTransportTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;
};
using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
using testing::LayoutNames;
TYPED_TEST_SUITE(BlkTransportTest, Layouts, LayoutNames);

TYPED_TEST(BlkTransportTest, MmioBringUpConfigAndIo) {
  TestGuestMemory mem;
  MmioTraits::Interrupt irq;
  auto disk = RamDisk::Create({.capacity = kDiskBytes});
  ASSERT_TRUE(disk.ok());
  using Dev = BlkDevice<MmioTraits, RamDisk>;
  auto dev = Dev::Create(mem.map(), irq, **disk,
                         {.queue_size = 64, .serial = "mmio-blk"});
  ASSERT_TRUE(dev.ok()) << dev.status();
  MmioTransport<Dev> mmio(**dev);
  testing::MmioDriver driver(mmio);
  ASSERT_TRUE(driver.Probe().ok());
  EXPECT_EQ(driver.Read32(mmio::kDeviceId), spec::kDeviceIdBlock);
  ASSERT_TRUE(driver.Reset().ok());
  auto features = driver.Negotiate(WantedFeatures(TestFixture::kPacked));
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_TRUE(*features & spec::Bit(blk::kFeatureFlush));
  EXPECT_FALSE(*features & spec::Bit(blk::kFeatureRo));
  EXPECT_FALSE(*features & spec::Bit(blk::kFeatureMq));
  // Config space through the generation-counter loop, as virtio_blk reads it.
  auto capacity = driver.template ReadConfigField<uint64_t>(0);
  ASSERT_TRUE(capacity.ok());
  EXPECT_EQ(*capacity, kDiskBytes / 512);
  auto blk_size = driver.template ReadConfigField<uint32_t>(20);
  ASSERT_TRUE(blk_size.ok());
  EXPECT_EQ(*blk_size, 512u);
  auto seg_max = driver.template ReadConfigField<uint32_t>(12);
  ASSERT_TRUE(seg_max.ok());
  EXPECT_EQ(*seg_max, 62u);
  auto wb = driver.template ReadConfigField<uint8_t>(32);
  ASSERT_TRUE(wb.ok());
  EXPECT_EQ(*wb, 1u);

  typename TypeParam::Driver ring(mem, 64, {.event_idx = true, .indirect = true});
  ASSERT_TRUE(driver.SetUpQueue(0, ring.config()).ok());
  ASSERT_TRUE(driver.DriverOk().ok());
  WriteAndReadBack(mem, ring, [&] { driver.Kick(0); }, **disk);
  EXPECT_EQ(driver.HandleInterrupt(), kMmioInterruptUsedBuffer);
  EXPECT_FALSE((*dev)->needs_reset());
  // Reset through the register: the device drops its queues.
  ASSERT_TRUE(driver.Reset().ok());
  EXPECT_FALSE((*dev)->queue_enabled(0));
}

TYPED_TEST(BlkTransportTest, PciBringUpConfigAndIo) {
  TestGuestMemory mem;
  testing::MsiRecorder sink;
  PciTraits::Interrupt irq(sink, 2);
  auto disk = RamDisk::Create({.capacity = kDiskBytes, .num_queues = 2});
  ASSERT_TRUE(disk.ok());
  using Dev = BlkDevice<PciTraits, RamDisk>;
  auto dev = Dev::Create(mem.map(), irq, **disk,
                         {.num_queues = 2, .queue_size = 64});
  ASSERT_TRUE(dev.ok()) << dev.status();
  PciTransport<Dev> pci(**dev);
  testing::PciDriver driver(pci);
  ASSERT_TRUE(driver.Probe()) << driver.error();
  ASSERT_TRUE(driver.Negotiate(WantedFeatures(TestFixture::kPacked)))
      << driver.error();
  EXPECT_EQ(driver.num_queues(), 2);
  uint64_t capacity = 0;
  ASSERT_TRUE(driver.ReadDeviceConfig(0, &capacity, 8));
  EXPECT_EQ(capacity, kDiskBytes / 512);
  uint16_t nq = 0;
  ASSERT_TRUE(driver.ReadDeviceConfig(34, &nq, 2));
  EXPECT_EQ(nq, 2);
  // CONFIG_WCE: the guest switches to writethrough and reads it back.
  const uint8_t zero = 0;
  driver.WriteDeviceConfig(32, &zero, 1);
  uint8_t wb = 1;
  ASSERT_TRUE(driver.ReadDeviceConfig(32, &wb, 1));
  EXPECT_EQ(wb, 0);

  typename TypeParam::Driver ring0(mem, 64, {.event_idx = true, .indirect = true});
  typename TypeParam::Driver ring1(mem, 64, {.event_idx = true, .indirect = true});
  ASSERT_TRUE(driver.SetUpQueue(0, ring0.config()) && driver.EnableQueue(0) &&
              driver.SetUpQueue(1, ring1.config()) && driver.EnableQueue(1) &&
              driver.DriverOk())
      << driver.error();
  WriteAndReadBack(mem, ring1, [&] { driver.Kick(1); }, **disk);
  // Queue 1's interrupts go to its own vector (queue q -> vector q + 1).
  EXPECT_GE(sink.Count(testing::MsiAddress(2), testing::MsiData(2)), 1u);
  EXPECT_EQ(sink.Count(testing::MsiAddress(1), testing::MsiData(1)), 0u);
  WriteAndReadBack(mem, ring0, [&] { driver.Kick(0); }, **disk);
  EXPECT_GE(sink.Count(testing::MsiAddress(1), testing::MsiData(1)), 1u);
  EXPECT_FALSE((*dev)->needs_reset());
}

}  // namespace
}  // namespace virtio
