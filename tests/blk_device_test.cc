// virtio-blk (VIRTIO 1.2 §5.2) through the device model, on split and packed
// rings, with every bundled backend and a scriptable test backend.
#include "virtio/blk_device.h"

#include <sys/uio.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "blk_test_util.h"
#include "gtest/gtest.h"
#include "virtio/backends/null_disk.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/backends/uring_disk.h"

namespace virtio::blktest {
namespace {

constexpr uint64_t kDiskBytes = 1 << 20;
constexpr uint64_t kDiskSectors = kDiskBytes / 512;

std::unique_ptr<RamDisk> MakeRam(bool ro = false, uint16_t queues = 1) {
  auto d = RamDisk::Create({.capacity = kDiskBytes,
                            .read_only = ro,
                            .num_queues = queues,
                            .queue_depth = 64});
  EXPECT_TRUE(d.ok()) << d.status();
  return std::move(*d);
}

std::unique_ptr<UringDisk> MakeUring(const TempImage& img, bool ro = false,
                                     uint16_t queues = 1, bool direct = false) {
  auto d = UringDisk::Open({.path = img.path(),
                            .read_only = ro,
                            .direct = direct,
                            .num_queues = queues,
                            .queue_depth = 64});
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? std::move(*d) : nullptr;
}

uint64_t Hash(absl::Span<const uint8_t> data) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : data) h = (h ^ b) * 1099511628211ull;
  return h;
}

template <typename Layout>
class BlkDeviceTest : public ::testing::Test {};
TYPED_TEST_SUITE(BlkDeviceTest, Layouts, LayoutNames);

// --- Data path on each backend ------------------------------------------------

TYPED_TEST(BlkDeviceTest, WriteThenReadRamDisk) {
  auto disk = MakeRam();
  Rig<TypeParam, RamDisk> rig(*disk);
  rig.BringUp();
  const auto data = Pattern(4096, 1);
  Result w = rig.Write(0, 8, data);
  EXPECT_EQ(w.status, blk::kStatusOk);
  EXPECT_EQ(w.used_len, 1u);
  std::vector<uint8_t> got;
  Result r = rig.Read(0, 8, 4096, &got);
  EXPECT_EQ(r.status, blk::kStatusOk);
  EXPECT_EQ(r.used_len, 4097u);
  EXPECT_EQ(got, data);
  EXPECT_EQ(0, std::memcmp(disk->data().data() + 8 * 512, data.data(), 4096));
  EXPECT_GE(rig.irq().queue_signals(0), 1u);
  EXPECT_EQ(rig.dev().queue_stats(0).ok, 2u);
}

TYPED_TEST(BlkDeviceTest, WriteThenReadNullDisk) {
  auto disk = NullDisk::Create({.capacity = uint64_t{1} << 40});
  ASSERT_TRUE(disk.ok());
  Rig<TypeParam, NullDisk> rig(**disk);
  rig.BringUp();
  EXPECT_EQ(rig.Write(0, 1'000'000'000, Pattern(1024, 2)).status,
            blk::kStatusOk);
  std::vector<uint8_t> got;
  Result r = rig.Read(0, 1'000'000'000, 1024, &got);
  EXPECT_EQ(r.status, blk::kStatusOk);
  EXPECT_EQ(got, std::vector<uint8_t>(1024, 0));
  uint8_t cap[8];
  rig.dev().ReadConfig(0, cap, 8);
  uint64_t sectors;
  std::memcpy(&sectors, cap, 8);
  EXPECT_EQ(sectors, (uint64_t{1} << 40) / 512);
}

TYPED_TEST(BlkDeviceTest, WriteThenReadUringDiskMatchesFile) {
  TempImage img(kDiskBytes, /*pattern=*/true);
  std::vector<uint8_t> model = img.Contents();
  {
    auto disk = MakeUring(img);
    ASSERT_NE(disk, nullptr);
    Rig<TypeParam, UringDisk> rig(*disk);
    rig.BringUp();
    struct W {
      uint64_t sector;
      uint32_t len;
      uint32_t nseg;
    };
    const W writes[] = {{0, 512, 1}, {7, 4096, 3}, {100, 65536, 12},
                        {kDiskSectors - 2, 1024, 2}};
    uint8_t seed = 10;
    for (const W& w : writes) {
      const auto data = Pattern(w.len, seed++);
      ASSERT_EQ(rig.Write(0, w.sector, data, w.nseg).status, blk::kStatusOk);
      std::memcpy(model.data() + w.sector * 512, data.data(), w.len);
      std::vector<uint8_t> got;
      ASSERT_EQ(rig.Read(0, w.sector, w.len, &got, w.nseg).status,
                blk::kStatusOk);
      EXPECT_EQ(got, data);
    }
    // Untouched sectors still read as the original file.
    std::vector<uint8_t> got;
    ASSERT_EQ(rig.Read(0, 50, 2048, &got).status, blk::kStatusOk);
    EXPECT_EQ(0, std::memcmp(got.data(), model.data() + 50 * 512, 2048));
    EXPECT_EQ(rig.Simple(0, blk::kTypeFlush).status, blk::kStatusOk);
  }
  EXPECT_EQ(img.Contents(), model);
}

TYPED_TEST(BlkDeviceTest, MultiSegmentAndCombinedFraming) {
  auto disk = MakeRam();
  Rig<TypeParam, RamDisk> rig(*disk);
  rig.BringUp();
  // 8 KiB over 13 descriptors each way, then through an indirect table.
  const auto data = Pattern(8192, 3);
  EXPECT_EQ(rig.Write(0, 64, data, 13).status, blk::kStatusOk);
  std::vector<uint8_t> got;
  EXPECT_EQ(rig.Read(0, 64, 8192, &got, 13).status, blk::kStatusOk);
  EXPECT_EQ(got, data);
  const auto data2 = Pattern(4096, 4);
  EXPECT_EQ(rig.Write(0, 80, data2, 9, /*indirect=*/true).status,
            blk::kStatusOk);
  EXPECT_EQ(rig.Read(0, 80, 4096, &got, 9, /*indirect=*/true).status,
            blk::kStatusOk);
  EXPECT_EQ(got, data2);

  // Header and data in one readable descriptor; data and status in one
  // writable descriptor: framing is free (§5.2.6.4 / §2.6.4).
  auto& mem = rig.mem();
  const auto data3 = Pattern(1024, 5);
  const uint64_t out = mem.Alloc(16 + 1024, 16);
  const blk::RequestHeader wh{blk::kTypeOut, 0, 200};
  mem.Write(out, &wh, 16);
  mem.Write(out + 16, data3.data(), 1024);
  const uint64_t st = rig.StatusBuf();
  Result w = rig.Do(0, {{out, 16 + 1024, false}, {st, 1, true}}, st);
  EXPECT_EQ(w.status, blk::kStatusOk);
  const uint64_t hdr = rig.Header(blk::kTypeIn, 200);
  const uint64_t in = mem.Alloc(1024 + 1, 16);
  Result r = rig.Do(0, {{hdr, 16, false}, {in, 1025, true}}, in + 1024);
  EXPECT_EQ(r.status, blk::kStatusOk);
  EXPECT_EQ(r.used_len, 1025u);
  std::vector<uint8_t> back(1024);
  mem.Read(in, back.data(), 1024);
  EXPECT_EQ(back, data3);
}

TYPED_TEST(BlkDeviceTest, BuffersStraddlingGuestRegions) {
  auto disk = MakeRam();
  // Two adjacent regions: a buffer crossing the boundary is two iovecs.
  Rig<TypeParam, RamDisk> rig(*disk, {},
                              {{.gpa = 0x10000, .size = 0x100000},
                               {.gpa = 0x110000, .size = 0x100000}});
  rig.BringUp();
  auto& mem = rig.mem();
  // The last KiB of the first region and the first of the second (the bump
  // allocator hands out the low end of the first region only).
  const uint64_t d = 0x110000 - 1024;
  const auto data = Pattern(2048, 6);
  mem.Write(d, data.data(), 2048);
  const uint64_t h = rig.Header(blk::kTypeOut, 3);
  const uint64_t s = rig.StatusBuf();
  EXPECT_EQ(rig.Do(0, {{h, 16, false}, {d, 2048, false}, {s, 1, true}}, s).status,
            blk::kStatusOk);
  EXPECT_EQ(0, std::memcmp(disk->data().data() + 3 * 512, data.data(), 2048));
}

TYPED_TEST(BlkDeviceTest, FlushReachesTheBackend) {
  ScriptedDisk disk(kDiskBytes);
  Rig<TypeParam, ScriptedDisk> rig(disk);
  rig.BringUp();
  Result r = rig.Simple(0, blk::kTypeFlush);
  EXPECT_EQ(r.status, blk::kStatusOk);
  EXPECT_EQ(r.used_len, 1u);
  EXPECT_EQ(disk.flushes, 1);
}

TYPED_TEST(BlkDeviceTest, GetIdReturnsSerial) {
  auto disk = MakeRam();
  {
    Rig<TypeParam, RamDisk> rig(*disk, {.serial = "0123456789abcdefghij"});
    rig.BringUp();
    auto& mem = rig.mem();
    const uint64_t h = rig.Header(blk::kTypeGetId, 0);
    const uint64_t id = mem.Alloc(20, 1);
    mem.Fill(id, 0xaa, 20);
    const uint64_t s = rig.StatusBuf();
    Result r = rig.Do(0, {{h, 16, false}, {id, 20, true}, {s, 1, true}}, s);
    EXPECT_EQ(r.status, blk::kStatusOk);
    EXPECT_EQ(r.used_len, 21u);
    char got[20];
    mem.Read(id, got, 20);
    EXPECT_EQ(std::string(got, 20), "0123456789abcdefghij");  // no NUL
  }
  {
    Rig<TypeParam, RamDisk> rig(*disk, {.serial = "disk0"});
    rig.BringUp();
    auto& mem = rig.mem();
    const uint64_t h = rig.Header(blk::kTypeGetId, 0);
    const uint64_t id = mem.Alloc(20, 1);
    mem.Fill(id, 0xaa, 20);
    const uint64_t s = rig.StatusBuf();
    EXPECT_EQ(rig.Do(0, {{h, 16, false}, {id, 20, true}, {s, 1, true}}, s).status,
              blk::kStatusOk);
    char got[20];
    mem.Read(id, got, 20);
    EXPECT_EQ(std::string(got, 20), std::string("disk0") + std::string(15, '\0'));
    // A short id buffer gets a truncated id.
    const uint64_t h2 = rig.Header(blk::kTypeGetId, 0);
    const uint64_t id2 = mem.Alloc(3, 1);
    const uint64_t s2 = rig.StatusBuf();
    Result r = rig.Do(0, {{h2, 16, false}, {id2, 3, true}, {s2, 1, true}}, s2);
    EXPECT_EQ(r.status, blk::kStatusOk);
    EXPECT_EQ(r.used_len, 4u);
  }
  // Longer than 20 bytes is refused.
  TestGuestMemory mem;
  RecordingInterrupt irq;
  EXPECT_FALSE((BlkDevice<TestTraits, RamDisk>::Create(
                    mem.map(), irq, *disk, {.serial = std::string(21, 'x')})
                    .ok()));
}

TYPED_TEST(BlkDeviceTest, DiscardAndWriteZeroesOnFile) {
  TempImage img(kDiskBytes, /*pattern=*/true);
  std::vector<uint8_t> model = img.Contents();
  {
    auto disk = MakeUring(img);
    ASSERT_NE(disk, nullptr);
    Rig<TypeParam, UringDisk> rig(*disk);
    rig.BringUp();
    ASSERT_TRUE(rig.dev().device_features() & spec::Bit(blk::kFeatureDiscard));
    ASSERT_TRUE(rig.dev().device_features() &
                spec::Bit(blk::kFeatureWriteZeroes));
    // Discard two ranges (punched holes read back as zeros on files).
    EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, {{8, 8, 0}, {64, 16, 0}}).status,
              blk::kStatusOk);
    std::memset(model.data() + 8 * 512, 0, 8 * 512);
    std::memset(model.data() + 64 * 512, 0, 16 * 512);
    // Write zeroes, allocated and with UNMAP.
    EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes, {{100, 3, 0}}).status,
              blk::kStatusOk);
    std::memset(model.data() + 100 * 512, 0, 3 * 512);
    EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes,
                         {{200, 9, blk::kWriteZeroesFlagUnmap}, {300, 1, 0}})
                  .status,
              blk::kStatusOk);
    std::memset(model.data() + 200 * 512, 0, 9 * 512);
    std::memset(model.data() + 300 * 512, 0, 1 * 512);
    std::vector<uint8_t> got;
    ASSERT_EQ(rig.Read(0, 99, 5 * 512, &got).status, blk::kStatusOk);
    EXPECT_EQ(0, std::memcmp(got.data(), model.data() + 99 * 512, 5 * 512));
  }
  EXPECT_EQ(img.Contents(), model);
}

TYPED_TEST(BlkDeviceTest, DiscardAndWriteZeroesOnRamDisk) {
  auto disk = MakeRam();
  Rig<TypeParam, RamDisk> rig(*disk);
  rig.BringUp();
  ASSERT_EQ(rig.Write(0, 0, Pattern(64 * 512, 9)).status, blk::kStatusOk);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes, {{4, 4, 1}}).status,
            blk::kStatusOk);
  for (int i = 4 * 512; i < 8 * 512; ++i) ASSERT_EQ(disk->data()[i], 0);
  EXPECT_NE(disk->data()[3 * 512], 0);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, {{10, 0, 0}}).status,
            blk::kStatusOk);  // an empty range is a no-op
}

// --- Malformed requests --------------------------------------------------------

TYPED_TEST(BlkDeviceTest, MalformedRequestsLeaveDiskUntouched) {
  auto disk = MakeRam();
  Rig<TypeParam, RamDisk> rig(*disk);
  rig.BringUp();
  auto& mem = rig.mem();
  ASSERT_EQ(rig.Write(0, 0, Pattern(kDiskBytes, 7)).status, blk::kStatusOk);
  const uint64_t before = Hash(disk->data());
  const auto data = Pattern(1024, 8);

  // Out of range, and sector + length overflowing 64 bits.
  EXPECT_EQ(rig.Write(0, kDiskSectors, Pattern(512, 1)).status,
            blk::kStatusIoErr);
  EXPECT_EQ(rig.Write(0, kDiskSectors - 1, data).status, blk::kStatusIoErr);
  EXPECT_EQ(rig.Read(0, kDiskSectors - 1, 1024, nullptr).status,
            blk::kStatusIoErr);
  EXPECT_EQ(rig.Write(0, ~uint64_t{0}, data).status, blk::kStatusIoErr);
  EXPECT_EQ(rig.Write(0, uint64_t{1} << 55, data).status, blk::kStatusIoErr);
  EXPECT_EQ(rig.Read(0, ~uint64_t{0} - 1, 1024, nullptr).status,
            blk::kStatusIoErr);
  // Length not a multiple of 512.
  EXPECT_EQ(rig.Write(0, 0, Pattern(100, 1)).status, blk::kStatusIoErr);
  EXPECT_EQ(rig.Read(0, 0, 513, nullptr).status, blk::kStatusIoErr);
  // Unknown and unoffered types.
  EXPECT_EQ(rig.Simple(0, 0x55).status, blk::kStatusUnsupp);
  EXPECT_EQ(rig.Simple(0, blk::kTypeGetLifetime).status, blk::kStatusUnsupp);
  EXPECT_EQ(rig.Simple(0, blk::kTypeSecureErase).status, blk::kStatusUnsupp);

  // Header shorter than 16 bytes: IOERR in the status byte.
  {
    const uint64_t h = rig.Header(blk::kTypeOut, 0);
    const uint64_t s = rig.StatusBuf();
    Result r = rig.Do(0, {{h, 8, false}, {s, 1, true}}, s);
    EXPECT_EQ(r.status, blk::kStatusIoErr);
    EXPECT_EQ(r.used_len, 1u);
  }
  // No writable byte at all: no status possible, returned with length 0.
  {
    const uint64_t h = rig.Header(blk::kTypeOut, 0);
    const uint64_t d = mem.Alloc(1024, 16);
    mem.Write(d, data.data(), 1024);
    Result r = rig.Do(0, {{h, 16, false}, {d, 1024, false}}, std::nullopt);
    EXPECT_EQ(r.used_len, 0u);
  }
  // A zero-length status buffer is no status either.
  {
    const uint64_t h = rig.Header(blk::kTypeOut, 0);
    const uint64_t d = mem.Alloc(1024, 16);
    mem.Write(d, data.data(), 1024);
    const uint64_t s = rig.StatusBuf();
    Result r = rig.Do(0, {{h, 16, false}, {d, 1024, false}, {s, 0, true}}, s);
    EXPECT_EQ(r.used_len, 0u);
    EXPECT_EQ(r.status, 0xff);
  }
  // A data buffer outside guest memory: the chain is not ok.
  {
    const uint64_t h = rig.Header(blk::kTypeOut, 0);
    const uint64_t s = rig.StatusBuf();
    Result r = rig.Do(0, {{h, 16, false}, {0x7000'0000, 1024, false},
                          {s, 1, true}},
                      s);
    EXPECT_EQ(r.used_len, 0u);  // the status buffer was never translated
    const uint64_t s2 = rig.StatusBuf();
    const uint64_t h2 = rig.Header(blk::kTypeIn, 0);
    const uint64_t d2 = mem.Alloc(512, 16);
    Result r2 = rig.Do(0, {{h2, 16, false}, {d2, 512, true},
                           {0x7000'0000, 1, true}},
                       s2);
    EXPECT_EQ(r2.used_len, 1u);  // IOERR in the last reachable byte
    EXPECT_EQ(mem.template Load<uint8_t>(d2 + 511), blk::kStatusIoErr);
  }
  // Readable after writable: the ring layer rejects the chain.
  {
    const uint64_t h = rig.Header(blk::kTypeOut, 0);
    const uint64_t s = rig.StatusBuf();
    const uint64_t d = mem.Alloc(512, 16);
    Result r = rig.Do(0, {{h, 16, false}, {s, 1, true}, {d, 512, false}}, s);
    EXPECT_EQ(r.status, blk::kStatusIoErr);
  }

  // Discard / write zeroes: too many segments, bad flags, out of range,
  // above max sectors, bad payload size.
  std::vector<blk::DiscardWriteZeroes> many(17, {0, 1, 0});
  EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, many).status, blk::kStatusUnsupp);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes, many).status,
            blk::kStatusUnsupp);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard,
                       {{0, 1, blk::kWriteZeroesFlagUnmap}})
                .status,
            blk::kStatusUnsupp);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes, {{0, 1, 2}}).status,
            blk::kStatusUnsupp);
  // A good range before a bad one: nothing at all is done.
  EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes,
                       {{0, 8, 0}, {kDiskSectors, 1, 0}})
                .status,
            blk::kStatusIoErr);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, {{~uint64_t{0}, 2, 0}}).status,
            blk::kStatusIoErr);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, {{0, 0x400000, 0}}).status,
            blk::kStatusIoErr);
  EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, {}).status, blk::kStatusIoErr);
  {
    const uint64_t h = rig.Header(blk::kTypeDiscard, 0);
    const uint64_t d = mem.Alloc(24, 8);
    const uint64_t s = rig.StatusBuf();
    EXPECT_EQ(rig.Do(0, {{h, 16, false}, {d, 24, false}, {s, 1, true}}, s).status,
              blk::kStatusIoErr);
  }

  EXPECT_EQ(Hash(disk->data()), before);
  EXPECT_FALSE(rig.dev().needs_reset());
  EXPECT_EQ(rig.dev().queue_stats(0).malformed, 6u);
  EXPECT_EQ(rig.dev().queue_stats(0).no_status, 3u);
  // The device still works.
  EXPECT_EQ(rig.Write(0, 0, data).status, blk::kStatusOk);
}

TYPED_TEST(BlkDeviceTest, ReadOnlyFileIsNeverWritten) {
  TempImage img(kDiskBytes, /*pattern=*/true);
  const uint64_t before = img.Checksum();
  {
    auto disk = MakeUring(img, /*ro=*/true);
    ASSERT_NE(disk, nullptr);
    Rig<TypeParam, UringDisk> rig(*disk);
    const uint64_t f = rig.dev().device_features();
    EXPECT_TRUE(f & spec::Bit(blk::kFeatureRo));
    EXPECT_FALSE(f & spec::Bit(blk::kFeatureDiscard));
    rig.BringUp();
    EXPECT_EQ(rig.Write(0, 0, Pattern(4096, 1)).status, blk::kStatusIoErr);
    EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, {{0, 8, 0}}).status,
              blk::kStatusIoErr);
    EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes, {{0, 8, 0}}).status,
              blk::kStatusIoErr);
    std::vector<uint8_t> got;
    EXPECT_EQ(rig.Read(0, 0, 512, &got).status, blk::kStatusOk);
    EXPECT_EQ(got[1], 10);  // 3 + 1 * 7
    EXPECT_EQ(rig.Simple(0, blk::kTypeFlush).status, blk::kStatusOk);
  }
  EXPECT_EQ(img.Checksum(), before);
}

// --- Configuration space and features -----------------------------------------

template <typename V, typename Dev>
V ReadField(Dev& dev, uint32_t offset) {
  V v{};
  EXPECT_TRUE(dev.ReadConfig(offset, &v, sizeof v));
  return v;
}

TYPED_TEST(BlkDeviceTest, ConfigSpaceLayout) {
  auto disk = RamDisk::Create({.capacity = 8 << 20, .block_size = 4096,
                               .num_queues = 2, .queue_depth = 64});
  ASSERT_TRUE(disk.ok());
  Rig<TypeParam, RamDisk> rig(**disk, {.num_queues = 2,
                                       .queue_size = 128,
                                       .size_max = 65536,
                                       .physical_block_exp = 1,
                                       .alignment_offset = 2,
                                       .min_io_size = 3,
                                       .opt_io_size = 4,
                                       .max_discard_sectors = 1000,
                                       .max_discard_seg = 5,
                                       .max_write_zeroes_sectors = 2000,
                                       .max_write_zeroes_seg = 6,
                                       .write_zeroes_may_unmap = true});
  auto& dev = rig.dev();
  const uint64_t f = dev.device_features();
  for (unsigned bit : {blk::kFeatureSizeMax, blk::kFeatureSegMax,
                       blk::kFeatureBlkSize, blk::kFeatureTopology,
                       blk::kFeatureFlush, blk::kFeatureConfigWce,
                       blk::kFeatureMq, blk::kFeatureDiscard,
                       blk::kFeatureWriteZeroes}) {
    EXPECT_TRUE(f & spec::Bit(bit)) << bit;
  }
  for (unsigned bit : {blk::kFeatureRo, blk::kFeatureGeometry,
                       blk::kFeatureLifetime, blk::kFeatureSecureErase,
                       blk::kFeatureZoned}) {
    EXPECT_FALSE(f & spec::Bit(bit)) << bit;
  }
  EXPECT_EQ(dev.device_id(), 2u);
  EXPECT_EQ(dev.num_queues(), 2);
  EXPECT_EQ(dev.queue_max_size(1), 128u);
  EXPECT_EQ(dev.config_size(), 60u);
  EXPECT_EQ(ReadField<uint64_t>(dev, 0), (8u << 20) / 512);   // capacity
  EXPECT_EQ(ReadField<uint32_t>(dev, 8), 65536u);             // size_max
  EXPECT_EQ(ReadField<uint32_t>(dev, 12), 126u);              // seg_max
  EXPECT_EQ(ReadField<uint16_t>(dev, 16), 0u);                // cylinders
  EXPECT_EQ(ReadField<uint8_t>(dev, 18), 0u);                 // heads
  EXPECT_EQ(ReadField<uint8_t>(dev, 19), 0u);                 // sectors
  EXPECT_EQ(ReadField<uint32_t>(dev, 20), 4096u);             // blk_size
  EXPECT_EQ(ReadField<uint8_t>(dev, 24), 1u);   // physical_block_exp
  EXPECT_EQ(ReadField<uint8_t>(dev, 25), 2u);   // alignment_offset
  EXPECT_EQ(ReadField<uint16_t>(dev, 26), 3u);  // min_io_size
  EXPECT_EQ(ReadField<uint32_t>(dev, 28), 4u);  // opt_io_size
  EXPECT_EQ(ReadField<uint8_t>(dev, 32), 1u);   // writeback
  EXPECT_EQ(ReadField<uint16_t>(dev, 34), 2u);  // num_queues
  EXPECT_EQ(ReadField<uint32_t>(dev, 36), 1000u);  // max_discard_sectors
  EXPECT_EQ(ReadField<uint32_t>(dev, 40), 5u);     // max_discard_seg
  EXPECT_EQ(ReadField<uint32_t>(dev, 44), 8u);     // discard_sector_alignment
  EXPECT_EQ(ReadField<uint32_t>(dev, 48), 2000u);  // max_write_zeroes_sectors
  EXPECT_EQ(ReadField<uint32_t>(dev, 52), 6u);     // max_write_zeroes_seg
  EXPECT_EQ(ReadField<uint8_t>(dev, 56), 1u);      // write_zeroes_may_unmap
  uint8_t byte;
  EXPECT_FALSE(dev.ReadConfig(60, &byte, 1));
  // Byte-wise reads agree with the wide ones.
  uint8_t lo[2];
  EXPECT_TRUE(dev.ReadConfig(34, &lo[0], 1));
  EXPECT_TRUE(dev.ReadConfig(35, &lo[1], 1));
  EXPECT_EQ(lo[0], 2);
  EXPECT_EQ(lo[1], 0);
  // Read-only fields ignore writes.
  const uint64_t big = 1;
  EXPECT_TRUE(dev.WriteConfig(0, &big, 8));
  EXPECT_EQ(ReadField<uint64_t>(dev, 0), (8u << 20) / 512);
  // A single queue does not offer MQ; a read-only disk offers RO.
  auto ro = MakeRam(/*ro=*/true);
  Rig<TypeParam, RamDisk> rig2(*ro);
  EXPECT_FALSE(rig2.dev().device_features() & spec::Bit(blk::kFeatureMq));
  EXPECT_TRUE(rig2.dev().device_features() & spec::Bit(blk::kFeatureRo));
}

TYPED_TEST(BlkDeviceTest, CacheModeAndWritethroughFlushes) {
  ScriptedDisk disk(kDiskBytes);
  Rig<TypeParam, ScriptedDisk> rig(disk);
  auto& dev = rig.dev();
  // CONFIG_WCE + FLUSH: writeback, writable.
  rig.BringUp();
  EXPECT_EQ(ReadField<uint8_t>(dev, 32), 1u);
  EXPECT_EQ(rig.Write(0, 0, Pattern(512, 1)).status, blk::kStatusOk);
  EXPECT_EQ(disk.flushes, 0);
  const uint8_t zero = 0, one = 1;
  EXPECT_TRUE(dev.WriteConfig(32, &zero, 1));
  EXPECT_EQ(ReadField<uint8_t>(dev, 32), 0u);
  EXPECT_EQ(rig.Write(0, 0, Pattern(512, 1)).status, blk::kStatusOk);
  EXPECT_EQ(disk.flushes, 1);  // writethrough: flushed before completing
  EXPECT_EQ(rig.Ranges(0, blk::kTypeWriteZeroes, {{0, 1, 0}, {4, 1, 0}}).status,
            blk::kStatusOk);
  EXPECT_EQ(disk.flushes, 2);
  std::vector<uint8_t> got;
  EXPECT_EQ(rig.Read(0, 0, 512, &got).status, blk::kStatusOk);
  EXPECT_EQ(disk.flushes, 2);  // reads are not flushed
  EXPECT_TRUE(dev.WriteConfig(32, &one, 1));
  EXPECT_EQ(rig.Write(0, 0, Pattern(512, 1)).status, blk::kStatusOk);
  EXPECT_EQ(disk.flushes, 2);
  // Without FLUSH the device must write through, and writeback reads 0.
  rig.BringUp(dev.device_features() & ~spec::Bit(blk::kFeatureFlush));
  EXPECT_EQ(ReadField<uint8_t>(dev, 32), 0u);
  EXPECT_EQ(rig.Write(0, 0, Pattern(512, 1)).status, blk::kStatusOk);
  EXPECT_EQ(disk.flushes, 3);
  // Without CONFIG_WCE the byte is read-only.
  rig.BringUp(dev.device_features() & ~spec::Bit(blk::kFeatureConfigWce));
  EXPECT_TRUE(dev.WriteConfig(32, &zero, 1));
  EXPECT_EQ(ReadField<uint8_t>(dev, 32), 1u);
}

// --- Queues, completion and reset ----------------------------------------------

TYPED_TEST(BlkDeviceTest, TwoQueuesAreServicedIndependently) {
  ScriptedDisk disk(kDiskBytes, /*queues=*/2);
  disk.hold = true;
  Rig<TypeParam, ScriptedDisk> rig(disk, {.num_queues = 2});
  rig.BringUp();
  auto& dev = rig.dev();
  auto add_write = [&](uint16_t q, uint64_t sector, uint8_t seed) {
    const uint64_t h = rig.Header(blk::kTypeOut, sector);
    const auto data = Pattern(512, seed);
    const uint64_t d = rig.mem().Alloc(512, 16);
    rig.mem().Write(d, data.data(), 512);
    const uint64_t s = rig.StatusBuf();
    EXPECT_TRUE(rig.driver(q)
                    .Add({{h, 16, false}, {d, 512, false}, {s, 1, true}})
                    .has_value());
    rig.driver(q).Kick();
    dev.Notify(q);
    return s;
  };
  const uint64_t s0 = add_write(0, 0, 1);
  const uint64_t s1 = add_write(1, 1, 2);
  EXPECT_EQ(dev.in_flight(0), 1u);
  EXPECT_EQ(dev.in_flight(1), 1u);
  // Queue 1's backend completes; queue 0's does not.
  disk.queue(1).Release();
  dev.CompleteRequests(1);
  EXPECT_TRUE(rig.driver(1).Reap().has_value());
  EXPECT_FALSE(rig.driver(0).Reap().has_value());
  EXPECT_EQ(rig.mem().template Load<uint8_t>(s1), blk::kStatusOk);
  EXPECT_EQ(rig.mem().template Load<uint8_t>(s0), 0xff);
  EXPECT_EQ(rig.irq().queue_signals(1), 1u);
  EXPECT_EQ(rig.irq().queue_signals(0), 0u);
  disk.queue(0).Release();
  dev.CompleteRequests(0);
  EXPECT_TRUE(rig.driver(0).Reap().has_value());
  EXPECT_EQ(rig.mem().template Load<uint8_t>(s0), blk::kStatusOk);
  EXPECT_EQ(rig.irq().queue_signals(0), 1u);
  EXPECT_EQ(dev.in_flight(0) + dev.in_flight(1), 0u);
  EXPECT_EQ(disk.image[0], Pattern(1, 1)[0]);
  EXPECT_EQ(disk.image[512], Pattern(1, 2)[0]);
}

TYPED_TEST(BlkDeviceTest, MultiqueueUringWritesOnOneReadOnOther) {
  TempImage img(kDiskBytes);
  auto disk = MakeUring(img, false, 2);
  ASSERT_NE(disk, nullptr);
  Rig<TypeParam, UringDisk> rig(*disk, {.num_queues = 2});
  rig.BringUp();
  const auto data = Pattern(8192, 12);
  EXPECT_EQ(rig.Write(0, 16, data).status, blk::kStatusOk);
  std::vector<uint8_t> got;
  EXPECT_EQ(rig.Read(1, 16, 8192, &got).status, blk::kStatusOk);
  EXPECT_EQ(got, data);
}

TYPED_TEST(BlkDeviceTest, StopsPoppingWhenSlotsAreFull) {
  ScriptedDisk disk(kDiskBytes, 1, /*depth=*/2);
  disk.hold = true;
  Rig<TypeParam, ScriptedDisk> rig(disk);
  rig.BringUp();
  auto& dev = rig.dev();
  for (int i = 0; i < 5; ++i) {
    const uint64_t h = rig.Header(blk::kTypeIn, i);
    const uint64_t d = rig.mem().Alloc(513, 16);
    ASSERT_TRUE(
        rig.driver().Add({{h, 16, false}, {d, 513, true}}).has_value());
  }
  rig.driver().Kick();
  dev.Notify(0);
  EXPECT_EQ(dev.in_flight(0), 2u);
  EXPECT_EQ(dev.queue_stats(0).requests, 2u);
  EXPECT_EQ(dev.queue_stats(0).stalls, 1u);
  int reaped = 0;
  for (int round = 0; round < 10 && reaped < 5; ++round) {
    disk.queue(0).Release();
    dev.CompleteRequests(0);
    while (rig.driver().Reap()) ++reaped;
  }
  EXPECT_EQ(reaped, 5);
  EXPECT_EQ(dev.queue_stats(0).ok, 5u);
  EXPECT_EQ(dev.in_flight(0), 0u);
  EXPECT_EQ(rig.driver().device_error(), "");
}

TYPED_TEST(BlkDeviceTest, ResetCancelsInFlightRequests) {
  ScriptedDisk disk(kDiskBytes);
  disk.hold = true;
  Rig<TypeParam, ScriptedDisk> rig(disk);
  rig.BringUp();
  auto& dev = rig.dev();
  for (int i = 0; i < 3; ++i) {
    const uint64_t h = rig.Header(blk::kTypeOut, i);
    const uint64_t d = rig.mem().Alloc(512, 16);
    const uint64_t s = rig.StatusBuf();
    ASSERT_TRUE(rig.driver()
                    .Add({{h, 16, false}, {d, 512, false}, {s, 1, true}})
                    .has_value());
  }
  rig.driver().Kick();
  dev.Notify(0);
  EXPECT_EQ(dev.in_flight(0), 3u);
  const int drains = disk.queue(0).drains;
  dev.SetStatus(0);
  EXPECT_EQ(disk.queue(0).drains, drains + 1);
  EXPECT_EQ(disk.queue(0).outstanding(), 0u);
  EXPECT_EQ(dev.in_flight(0), 0u);
  EXPECT_FALSE(rig.driver().Reap().has_value());  // nothing pushed after reset
  // A late completion notification is harmless.
  dev.CompleteRequests(0);
  // And the device comes back.
  disk.hold = false;
  rig.BringUp();
  EXPECT_EQ(rig.Write(0, 0, Pattern(512, 3)).status, blk::kStatusOk);
}

TYPED_TEST(BlkDeviceTest, ResetDuringUringIoLeaksNothing) {
  const int fds_before = CountOpenFds();
  {
    TempImage img(48 << 20, /*pattern=*/true);
    auto opened = UringDisk::Open({.path = img.path(), .direct = true,
                                   .queue_depth = 64});
    const bool direct = opened.ok();
    if (!opened.ok()) {  // no O_DIRECT here: buffered I/O still works
      opened = UringDisk::Open({.path = img.path(), .queue_depth = 64});
    }
    ASSERT_TRUE(opened.ok()) << opened.status();
    UringDisk& disk = **opened;
    Rig<TypeParam, UringDisk> rig(disk, {}, {{.gpa = 0x10000, .size = 56 << 20}});
    rig.BringUp(std::nullopt, 64);
    auto& mem = rig.mem();
    constexpr uint32_t kLen = 1 << 20;
    for (int i = 0; i < 48; ++i) {
      const uint64_t h = rig.Header(i % 2 ? blk::kTypeOut : blk::kTypeIn,
                                    uint64_t(i) * (kLen / 512));
      // 4 KiB-aligned host buffers so O_DIRECT accepts them.
      uint64_t d = mem.Alloc(kLen + 8192, 16);
      const auto host = reinterpret_cast<uintptr_t>(mem.Host(d, kLen + 8192));
      d += (4096 - host % 4096) % 4096;
      const uint64_t s = rig.StatusBuf();
      ASSERT_TRUE(rig.driver()
                      .Add({{h, 16, false}, {d, kLen, i % 2 == 1},
                            {s, 1, true}},
                           /*indirect=*/true)
                      .has_value());
    }
    rig.driver().Kick();
    rig.dev().Notify(0);
    // Whatever the kernel has not finished yet is in flight now.
    std::printf("in flight at reset: %u of 48 (in kernel: %u, O_DIRECT %d)\n",
                rig.dev().in_flight(0), disk.queue(0).in_kernel(), direct);
    rig.dev().SetStatus(0);
    EXPECT_EQ(rig.dev().in_flight(0), 0u);
    EXPECT_EQ(disk.queue(0).outstanding(), 0u);
    EXPECT_EQ(disk.queue(0).in_kernel(), 0u);
    // The device still works after reset.
    rig.BringUp();
    std::vector<uint8_t> got;
    EXPECT_EQ(rig.Read(0, 0, 512, &got).status, blk::kStatusOk);
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
}

TYPED_TEST(BlkDeviceTest, HostErrorFailsOnlyThatRequest) {
  ScriptedDisk disk(kDiskBytes);
  disk.fail = [](const ScriptedDisk::Request& r) {
    return r.offset == 4096 && r.op != ScriptedDisk::Op::kFlush;
  };
  Rig<TypeParam, ScriptedDisk> rig(disk);
  rig.BringUp();
  const uint64_t before = Hash(disk.image);
  EXPECT_EQ(rig.Write(0, 8, Pattern(512, 1)).status, blk::kStatusIoErr);
  EXPECT_EQ(Hash(disk.image), before);
  Result r = rig.Read(0, 8, 512, nullptr);
  EXPECT_EQ(r.status, blk::kStatusIoErr);
  EXPECT_EQ(r.used_len, 513u);  // a failed read may have written its buffer
  EXPECT_EQ(rig.Ranges(0, blk::kTypeDiscard, {{0, 1, 0}, {8, 1, 0}}).status,
            blk::kStatusIoErr);
  EXPECT_EQ(rig.Write(0, 9, Pattern(512, 1)).status, blk::kStatusOk);
  EXPECT_EQ(rig.Read(0, 9, 512, nullptr).status, blk::kStatusOk);
  EXPECT_EQ(rig.dev().queue_stats(0).backend_errors, 3u);
  EXPECT_FALSE(rig.dev().needs_reset());
}

TYPED_TEST(BlkDeviceTest, UringEioFromTheHostFailsThatRequest) {
  // A file that shrinks under the device: reads past its new end get no
  // data (end of file) and fail with IOERR; reads before it succeed.
  TempImage img(kDiskBytes, /*pattern=*/true);
  auto disk = MakeUring(img);
  ASSERT_NE(disk, nullptr);
  Rig<TypeParam, UringDisk> rig(*disk);
  rig.BringUp();
  ASSERT_EQ(truncate(img.path().c_str(), kDiskBytes / 2), 0);
  EXPECT_EQ(rig.Read(0, kDiskSectors - 8, 4096, nullptr).status,
            blk::kStatusIoErr);
  EXPECT_EQ(rig.Read(0, kDiskSectors / 2 - 4, 4096, nullptr).status,
            blk::kStatusIoErr);  // short read, then EOF
  std::vector<uint8_t> got;
  EXPECT_EQ(rig.Read(0, 0, 4096, &got).status, blk::kStatusOk);
  EXPECT_EQ(got[1], 10);
}

TYPED_TEST(BlkDeviceTest, CreateValidatesOptions) {
  auto disk = MakeRam();
  TestGuestMemory mem;
  RecordingInterrupt irq;
  using Dev = BlkDevice<TestTraits, RamDisk>;
  EXPECT_FALSE(Dev::Create(mem.map(), irq, *disk, {.num_queues = 2}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, *disk, {.num_queues = 0}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, *disk, {.queue_size = 1}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, *disk, {.seg_max = 5000}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, *disk, {.max_discard_seg = 0}).ok());
  EXPECT_TRUE(Dev::Create(mem.map(), irq, *disk, {}).ok());
}

}  // namespace
}  // namespace virtio::blktest
