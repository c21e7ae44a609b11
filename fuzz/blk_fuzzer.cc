// fuzz/blk_fuzzer.cc — virtio-blk requests from an arbitrary guest against
// BlkDevice on a RamDisk.
//
// The input picks the ring layout and negotiated features, a read-only or
// writable disk, device limits, then a script of requests: header contents
// (any type, reserved field, sector — small, near the end, huge), discard /
// write-zeroes segments, and the chain layout (1..8 buffers of any length,
// readable or writable in any order, some outside guest memory, some through
// an indirect table, header split or merged with data). Each request is
// kicked, served and reaped on its own; interleaved resets bring the device
// up again. Whatever the guest sends, the device must not crash or touch
// memory outside the guest image (ASan: every region is its own heap
// allocation), must never write into device-readable buffers, must answer
// every request, and must leave the disk unchanged unless the request was a
// write / discard / write-zeroes that it reported OK. Violations abort().
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "virtio/backends/ram_disk.h"
#include "virtio/blk_device.h"
#include "virtio/log.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"
#include "fuzz_check.h"

namespace {

using virtio::BlkDevice;
using virtio::RamDisk;
using virtio::testing::Buffer;
using virtio::testing::TestGuestMemory;
using virtio::testing::TestTraits;
namespace blk = virtio::blk;
namespace spec = virtio::spec;

constexpr uint64_t kDiskBytes = 64 << 10;  // 128 sectors
constexpr uint64_t kDiskSectors = kDiskBytes / 512;
constexpr uint64_t kRegionSize = 512 << 10;
constexpr uint64_t kRegion0 = 0x10000, kRegion1 = kRegion0 + kRegionSize;
// Guest bytes the script may allocate (the rest is for rings and tables).
constexpr uint64_t kAllocBudget = 400 << 10;
constexpr int kMaxRequests = 48;
constexpr int kMaxResets = 2;

uint64_t Hash(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

uint64_t GenSector(FuzzedDataProvider& fdp) {
  switch (fdp.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: return fdp.ConsumeIntegralInRange<uint64_t>(0, kDiskSectors);
    case 1: return kDiskSectors - fdp.ConsumeIntegralInRange<uint64_t>(0, 8);
    case 2: return ~uint64_t{0} - fdp.ConsumeIntegralInRange<uint64_t>(0, 8);
    case 3: return uint64_t{1} << fdp.ConsumeIntegralInRange<int>(40, 63);
    default: return fdp.ConsumeIntegral<uint64_t>();
  }
}

uint32_t GenType(FuzzedDataProvider& fdp) {
  static constexpr uint32_t kTypes[] = {
      blk::kTypeIn,      blk::kTypeOut,         blk::kTypeFlush,
      blk::kTypeGetId,   blk::kTypeGetLifetime, blk::kTypeDiscard,
      blk::kTypeWriteZeroes, blk::kTypeSecureErase};
  if (fdp.ConsumeIntegralInRange<int>(0, 15) == 0) {
    return fdp.ConsumeIntegral<uint32_t>();
  }
  return kTypes[fdp.ConsumeIntegralInRange<size_t>(0, 7)];
}

template <typename Driver>
class Harness {
 public:
  using Device = BlkDevice<TestTraits, RamDisk>;

  Harness(FuzzedDataProvider& fdp, bool packed)
      : fdp_(fdp),
        packed_(packed),
        mem_({{.gpa = kRegion0, .size = kRegionSize},
              {.gpa = kRegion1, .size = kRegionSize}}) {}

  bool Init() {
    auto disk = RamDisk::Create({.capacity = kDiskBytes,
                                 .read_only = fdp_.ConsumeBool(),
                                 .queue_depth = fdp_.ConsumeIntegralInRange<uint32_t>(1, 16)});
    FUZZ_CHECK(disk.ok());
    disk_ = std::move(*disk);
    for (size_t i = 0; i < kDiskBytes; ++i) {
      disk_->data()[i] = static_cast<uint8_t>(i * 13 + 7);
    }
    virtio::BlkDeviceOptions o;
    o.queue_size = 16;
    o.seg_max = fdp_.ConsumeIntegralInRange<uint32_t>(1, 14);
    o.serial = "fuzz";
    o.writeback = fdp_.ConsumeBool();
    o.max_discard_seg = fdp_.ConsumeIntegralInRange<uint32_t>(1, 4);
    o.max_write_zeroes_seg = fdp_.ConsumeIntegralInRange<uint32_t>(1, 4);
    o.max_discard_sectors = fdp_.ConsumeIntegralInRange<uint32_t>(1, 256);
    o.max_write_zeroes_sectors = fdp_.ConsumeIntegralInRange<uint32_t>(1, 256);
    auto dev = Device::Create(mem_.map(), irq_, *disk_, o);
    FUZZ_CHECK(dev.ok());
    dev_ = std::move(*dev);
    return BringUp();
  }

  bool BringUp() {
    uint64_t f = dev_->device_features() & fdp_.ConsumeIntegral<uint64_t>();
    f |= spec::Bit(spec::kFeatureVersion1);
    if (packed_) {
      f |= spec::Bit(spec::kFeatureRingPacked);
    } else {
      f &= ~spec::Bit(spec::kFeatureRingPacked);
    }
    dev_->SetStatus(0);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    dev_->SetDriverFeatures(f);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk);
    FUZZ_CHECK(dev_->status() & spec::kStatusFeaturesOk);
    indirect_ = f & spec::Bit(spec::kFeatureIndirectDesc);
    driver_.emplace(mem_, 16,
                    virtio::testing::DriverOptions{
                        .event_idx = (f & spec::Bit(spec::kFeatureEventIdx)) != 0,
                        .indirect = indirect_,
                        .max_indirect = 16});
    virtio::QueueConfig* cfg = dev_->queue_config(0);
    FUZZ_CHECK(cfg != nullptr);
    const virtio::QueueConfig want = driver_->config();
    cfg->size = want.size;
    cfg->desc_addr = want.desc_addr;
    cfg->driver_addr = want.driver_addr;
    cfg->device_addr = want.device_addr;
    FUZZ_CHECK(dev_->EnableQueue(0));
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk | spec::kStatusDriverOk);
    FUZZ_CHECK(!dev_->needs_reset());
    return true;
  }

  // Builds, serves and checks one request.
  void OneRequest() {
    const uint32_t type = GenType(fdp_);
    // The request's readable bytes: header, then a payload.
    std::vector<uint8_t> out(16);
    blk::RequestHeader h{type, fdp_.ConsumeBool() ? 0 : fdp_.ConsumeIntegral<uint32_t>(),
                         GenSector(fdp_)};
    std::memcpy(out.data(), &h, 16);
    uint32_t data_len = 512 * fdp_.ConsumeIntegralInRange<uint32_t>(0, 8);
    if (fdp_.ConsumeIntegralInRange<int>(0, 7) == 0) {
      data_len = fdp_.ConsumeIntegralInRange<uint32_t>(0, 4200);
    }
    if (type == blk::kTypeDiscard || type == blk::kTypeWriteZeroes) {
      const int n = fdp_.ConsumeIntegralInRange<int>(0, 6);
      for (int i = 0; i < n; ++i) {
        blk::DiscardWriteZeroes seg{
            fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint64_t>(0, kDiskSectors)
                               : GenSector(fdp_),
            fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint32_t>(0, 64)
                               : fdp_.ConsumeIntegral<uint32_t>(),
            fdp_.ConsumeBool() ? 0u : fdp_.ConsumeIntegral<uint32_t>()};
        const size_t at = out.size();
        out.resize(at + 16);
        std::memcpy(out.data() + at, &seg, 16);
      }
      if (fdp_.ConsumeIntegralInRange<int>(0, 7) == 0) {
        out.resize(out.size() + fdp_.ConsumeIntegralInRange<int>(1, 15));
      }
    } else if (type == blk::kTypeOut) {
      const size_t at = out.size();
      out.resize(at + data_len);
      for (size_t i = at; i < out.size(); ++i) {
        out[i] = static_cast<uint8_t>(i * 29 + type);
      }
    }
    if (fdp_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      out.resize(fdp_.ConsumeIntegralInRange<size_t>(0, 15));  // short header
    }
    uint32_t in_len = (type == blk::kTypeIn ? data_len
                       : type == blk::kTypeGetId ? 20u : 0u) + 1;
    if (fdp_.ConsumeIntegralInRange<int>(0, 7) == 0) {
      in_len = fdp_.ConsumeIntegralInRange<uint32_t>(0, 5000);
    }

    // Lay the bytes out over buffers.
    std::vector<Buffer> bufs;
    std::vector<std::pair<uint64_t, uint64_t>> readable;  // gpa, hash
    auto split = [&](uint64_t total, bool writable, const uint8_t* bytes) {
      const int pieces = fdp_.ConsumeIntegralInRange<int>(1, 3);
      uint64_t done = 0;
      for (int i = 0; i < pieces && (done < total || i == 0); ++i) {
        uint64_t take = i + 1 == pieces
                            ? total - done
                            : fdp_.ConsumeIntegralInRange<uint64_t>(0, total - done);
        uint64_t gpa;
        const int where = fdp_.ConsumeIntegralInRange<int>(0, 31);
        const bool straddle = where == 1 && !writable && take > 0 && take < 4096;
        if (where == 0) {
          // Outside guest memory (possibly wrapping around 2^64).
          const uint64_t x = fdp_.ConsumeIntegral<uint64_t>();
          gpa = x & 1 ? ~uint64_t{0} - (x >> 1 & 0xfff)
                      : 0x1'0000'0000 + (x >> 1 & 0xff'ffff'ffff);
        } else if (straddle) {
          // Readable only: straddles the two regions (two iovecs).
          gpa = kRegion1 - take / 2;
          mem_.Write(gpa, bytes + done, take);
          readable.push_back({gpa, take});
        } else {
          allocated_ += take + 16;
          gpa = mem_.Alloc(take == 0 ? 1 : take,
                           1 + fdp_.ConsumeIntegralInRange<uint64_t>(0, 15));
          if (bytes != nullptr && take > 0) mem_.Write(gpa, bytes + done, take);
          if (!writable && take > 0) {
            readable.push_back({gpa, take});
          }
        }
        bufs.push_back({gpa, static_cast<uint32_t>(take), writable});
        done += take;
      }
    };
    split(out.size(), false, out.data());
    if (fdp_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      // A stray readable buffer after the writable ones.
      split(in_len, true, nullptr);
      split(out.size() < 16 ? out.size() : 16, false, out.data());
    } else if (in_len > 0 || fdp_.ConsumeBool()) {
      split(in_len, true, nullptr);
    }
    std::vector<uint64_t> hashes;
    for (auto& [gpa, len] : readable) hashes.push_back(HashGuest(gpa, len));

    const bool indirect = indirect_ && bufs.size() <= 16 && fdp_.ConsumeBool();
    if (!indirect && bufs.size() > 16) return;
    auto id = driver_->Add(bufs, indirect);
    if (!id) return;  // ring full: cannot happen, every request is answered
    const uint64_t disk_before = Hash(disk_->data().data(), kDiskBytes);
    const uint64_t ok_before = dev_->queue_stats(0).ok;
    driver_->Kick();
    dev_->Notify(0);
    dev_->CompleteRequests(0);
    auto used = driver_->Reap();
    FUZZ_CHECK(used.has_value());  // RamDisk answers synchronously
    FUZZ_CHECK(*id == used->id);
    FUZZ_CHECK(driver_->device_error().empty());
    FUZZ_CHECK(!dev_->needs_reset());
    FUZZ_CHECK(dev_->in_flight(0) == 0);
    for (size_t i = 0; i < readable.size(); ++i) {
      FUZZ_CHECK(HashGuest(readable[i].first, readable[i].second) ==
                 hashes[i]);
    }
    const bool reported_ok = dev_->queue_stats(0).ok == ok_before + 1;
    if (Hash(disk_->data().data(), kDiskBytes) != disk_before) {
      FUZZ_CHECK(reported_ok);
      FUZZ_CHECK(!disk_->read_only());
      FUZZ_CHECK(type == blk::kTypeOut || type == blk::kTypeDiscard ||
                 type == blk::kTypeWriteZeroes);
    }
  }

  uint64_t HashGuest(uint64_t gpa, uint64_t len) {
    std::vector<uint8_t> b(len);
    mem_.Read(gpa, b.data(), len);
    return Hash(b.data(), len);
  }

  void Run() {
    int resets = 0;
    for (int i = 0; i < kMaxRequests && fdp_.remaining_bytes() > 0 &&
                    allocated_ < kAllocBudget;
         ++i) {
      if (fdp_.ConsumeIntegralInRange<int>(0, 31) == 0 && resets < kMaxResets) {
        ++resets;
        BringUp();
        continue;
      }
      OneRequest();
    }
  }

 private:
  FuzzedDataProvider& fdp_;
  bool packed_;
  TestGuestMemory mem_;
  virtio::testing::RecordingInterrupt irq_;
  std::unique_ptr<RamDisk> disk_;
  std::unique_ptr<Device> dev_;
  std::optional<Driver> driver_;
  bool indirect_ = false;
  uint64_t allocated_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = [] {
    virtio::SetLogSink([](virtio::LogLevel, std::string_view) {});
    return true;
  }();
  (void)quiet;
  FuzzedDataProvider fdp(data, size);
  if (fdp.ConsumeBool()) {
    Harness<virtio::testing::PackedDriver> h(fdp, true);
    if (h.Init()) h.Run();
  } else {
    Harness<virtio::testing::SplitDriver> h(fdp, false);
    if (h.Init()) h.Run();
  }
  return 0;
}
