// blk_bench — virtio-blk request rate through the device model alone.
//
// WHAT IS MEASURED
//   blk/<backend>/<layout>/qd:<D>
//     4 KiB random reads: the driver-side test harness (libvirtio::testing)
//     adds D requests (16-byte header, 4096-byte data, 1-byte status; three
//     descriptors, sectors uniformly random over a 1 GiB disk), kicks, the
//     device pops and validates each, hands it to the backend, completes it,
//     publishes, and the driver reaps all D. items_per_second counts
//     requests. NullDisk zero-fills the 4 KiB; RamDisk copies 4 KiB out of
//     its image (pre-touched, so no page faults are measured). No io_uring, no
//     interrupts beyond a counter: this is the cost of the device model plus
//     the harness driver's bookkeeping (not a lean driver, see ring_bench for
//     ring-only numbers).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "virtio/backends/null_disk.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/blk_device.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace {

using virtio::testing::Buffer;
using virtio::testing::TestTraits;
namespace blk = virtio::blk;
namespace spec = virtio::spec;

constexpr uint64_t kDiskBytes = uint64_t{1} << 30;
constexpr uint32_t kBlock = 4096;

template <typename Disk>
std::unique_ptr<Disk> MakeDisk();
template <>
std::unique_ptr<virtio::NullDisk> MakeDisk<virtio::NullDisk>() {
  return std::move(*virtio::NullDisk::Create({.capacity = kDiskBytes}));
}
template <>
std::unique_ptr<virtio::RamDisk> MakeDisk<virtio::RamDisk>() {
  auto disk = std::move(*virtio::RamDisk::Create({.capacity = kDiskBytes}));
  // Touch every page once so the measurement is steady-state copies, not
  // first-touch page faults of the lazily mapped image.
  absl::Span<uint8_t> image = disk->data();
  for (size_t i = 0; i < image.size(); i += 4096) image[i] = 1;
  return disk;
}

template <typename Disk, typename Driver, bool kPacked>
void BM_RandRead(benchmark::State& state) {
  const uint32_t depth = static_cast<uint32_t>(state.range(0));
  virtio::testing::TestGuestMemory mem({{.gpa = 0x10000, .size = 4 << 20}});
  virtio::testing::RecordingInterrupt irq;
  auto disk = MakeDisk<Disk>();
  auto dev = virtio::BlkDevice<TestTraits, Disk>::Create(
      mem.map(), irq, *disk, {.queue_size = 128});
  if (!dev.ok()) {
    state.SkipWithError("device");
    return;
  }
  auto& d = **dev;
  const uint64_t features =
      spec::Bit(spec::kFeatureVersion1) | spec::Bit(spec::kFeatureEventIdx) |
      (kPacked ? spec::Bit(spec::kFeatureRingPacked) : 0);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  d.SetDriverFeatures(features);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
              spec::kStatusFeaturesOk);
  Driver driver(mem, 128, {.event_idx = true});
  virtio::QueueConfig* cfg = d.queue_config(0);
  const virtio::QueueConfig want = driver.config();
  cfg->size = want.size;
  cfg->desc_addr = want.desc_addr;
  cfg->driver_addr = want.driver_addr;
  cfg->device_addr = want.device_addr;
  d.EnableQueue(0);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
              spec::kStatusFeaturesOk | spec::kStatusDriverOk);

  struct Req {
    uint64_t hdr, data, status;
  };
  std::vector<Req> reqs(depth);
  for (Req& r : reqs) {
    r.hdr = mem.Alloc(16, 16);
    r.data = mem.Alloc(kBlock, 4096);
    r.status = mem.Alloc(1, 1);
  }
  std::mt19937_64 rng(42);
  const uint64_t blocks = kDiskBytes / kBlock;
  uint64_t errors = 0;
  for (auto _ : state) {
    for (const Req& r : reqs) {
      const blk::RequestHeader h{blk::kTypeIn, 0, (rng() % blocks) * 8};
      mem.Write(r.hdr, &h, sizeof h);
      driver.Add({Buffer{r.hdr, 16, false}, Buffer{r.data, kBlock, true},
                  Buffer{r.status, 1, true}});
    }
    driver.Kick();
    d.Notify(0);
    for (uint32_t i = 0; i < depth; ++i) {
      auto u = driver.Reap();
      if (!u || u->len != kBlock + 1) ++errors;
    }
  }
  if (errors != 0 || d.needs_reset()) state.SkipWithError("request failed");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * depth);
  state.counters["req/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * depth,
      benchmark::Counter::kIsRate);
}

using virtio::NullDisk;
using virtio::RamDisk;
using virtio::testing::PackedDriver;
using virtio::testing::SplitDriver;

BENCHMARK(BM_RandRead<NullDisk, SplitDriver, false>)
    ->Name("blk/null/split")->ArgName("qd")->Arg(1)->Arg(32);
BENCHMARK(BM_RandRead<NullDisk, PackedDriver, true>)
    ->Name("blk/null/packed")->ArgName("qd")->Arg(1)->Arg(32);
BENCHMARK(BM_RandRead<RamDisk, SplitDriver, false>)
    ->Name("blk/ram/split")->ArgName("qd")->Arg(1)->Arg(32);
BENCHMARK(BM_RandRead<RamDisk, PackedDriver, true>)
    ->Name("blk/ram/packed")->ArgName("qd")->Arg(1)->Arg(32);

}  // namespace

BENCHMARK_MAIN();
