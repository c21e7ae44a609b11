// net_bench — virtio-net packet rate through the device model with the
// in-process loopback backend.
//
// WHAT IS MEASURED
//   net/<layout>/<mrg|nomrg>/<frame bytes>
//     Per iteration the driver-side test harness (libvirtio::testing) adds
//     32 tx chains (header + frame in one descriptor, as Linux does with
//     any_header_sg), kicks; the device pops and validates each, hands it to
//     LoopbackNet (which copies it into its ring), publishes; the driver
//     reaps. Then ServiceBackend(0): the device copies each packet with its
//     header into the guest's rx buffers (1526-byte mergeable buffers with
//     MRG_RXBUF; 65562-byte big-packet buffers without), fills
//     num_buffers, publishes; the driver reaps and re-posts them.
//     items_per_second counts packets (each crossing tx AND rx), EVENT_IDX
//     on, all offloads negotiated. Interrupts are a counter. So this is the
//     cost of the device model, one backend copy and one copy into guest
//     memory, plus the harness driver's bookkeeping — not a network.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "virtio/backends/loopback_net.h"
#include "virtio/net_device.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace {

using virtio::LoopbackNet;
using virtio::testing::Buffer;
using virtio::testing::TestTraits;
namespace net = virtio::net;
namespace spec = virtio::spec;
using Dev = virtio::NetDevice<TestTraits, LoopbackNet>;

constexpr uint32_t kBatch = 32;
constexpr uint32_t kQueue = 256;

template <typename Driver>
std::unique_ptr<Driver> SetUpQueue(virtio::testing::TestGuestMemory& mem,
                                   Dev& dev, uint16_t q, uint32_t size) {
  auto d = std::make_unique<Driver>(mem, size,
                                    virtio::testing::DriverOptions{.event_idx = true});
  virtio::QueueConfig* cfg = dev.queue_config(q);
  const virtio::QueueConfig want = d->config();
  cfg->size = want.size;
  cfg->desc_addr = want.desc_addr;
  cfg->driver_addr = want.driver_addr;
  cfg->device_addr = want.device_addr;
  if (!dev.EnableQueue(q)) std::abort();
  return d;
}

template <typename Driver, bool kPacked, bool kMrg>
void BM_Net(benchmark::State& state) {
  const uint32_t frame_len = static_cast<uint32_t>(state.range(0));
  const uint32_t rx_size = kMrg ? 1526 : net::kMaxBigRxBuffer;
  virtio::testing::TestGuestMemory mem(
      {{.gpa = 0x10000, .size = uint64_t{kQueue} * rx_size + (8 << 20)}});
  virtio::testing::RecordingInterrupt irq;
  auto lo = LoopbackNet::Create({.eventfd = false});
  auto dev = Dev::Create(mem.map(), irq, **lo, {.queue_size = kQueue});
  if (!lo.ok() || !dev.ok()) {
    state.SkipWithError("setup failed");
    return;
  }
  Dev& d = **dev;
  uint64_t f = d.device_features();
  if (!kPacked) f &= ~spec::Bit(spec::kFeatureRingPacked);
  if (!kMrg) f &= ~spec::Bit(net::kFeatureMrgRxbuf);
  f &= ~spec::Bit(spec::kFeatureIndirectDesc);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  d.SetDriverFeatures(f);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver | spec::kStatusFeaturesOk);
  auto rx = SetUpQueue<Driver>(mem, d, 0, kQueue);
  auto tx = SetUpQueue<Driver>(mem, d, 1, kQueue);
  auto ctrl = SetUpQueue<Driver>(mem, d, 2, 16);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
              spec::kStatusFeaturesOk | spec::kStatusDriverOk);
  if (d.needs_reset()) {
    state.SkipWithError("bring-up failed");
    return;
  }
  // tx buffers: header (zeros) + a frame to our MAC.
  std::vector<uint64_t> txbuf(kBatch);
  for (uint64_t& b : txbuf) {
    b = mem.Alloc(net::kHeaderSize + frame_len, 64);
    mem.Fill(b + net::kHeaderSize, 0xab, frame_len);
  }
  // rx buffers, all posted; gpa_of_id maps a reaped ID back to its buffer.
  std::vector<uint64_t> gpa_of_id(kQueue);
  for (uint32_t i = 0; i < kQueue; ++i) {
    const uint64_t b = mem.Alloc(rx_size, 64);
    auto id = rx->Add({Buffer{b, rx_size, true}});
    gpa_of_id[*id] = b;
  }
  rx->Kick();
  d.Notify(0);
  uint64_t packets = 0;
  for (auto _ : state) {
    for (uint32_t i = 0; i < kBatch; ++i) {
      tx->Add({Buffer{txbuf[i], net::kHeaderSize + frame_len, false}});
    }
    if (tx->Kick()) d.Notify(1);
    for (uint32_t i = 0; i < kBatch; ++i) {
      if (!tx->Reap()) {
        state.SkipWithError("tx not completed");
        return;
      }
    }
    d.ServiceBackend(0);
    uint32_t got = 0;
    while (auto u = rx->Reap()) {
      const uint64_t b = gpa_of_id[u->id];
      auto id = rx->Add({Buffer{b, rx_size, true}});
      gpa_of_id[*id] = b;
      ++got;
    }
    if (rx->Kick()) d.Notify(0);
    if (got != kBatch) {
      state.SkipWithError("rx count mismatch");
      return;
    }
    packets += kBatch;
  }
  state.SetItemsProcessed(static_cast<int64_t>(packets));
  state.SetBytesProcessed(static_cast<int64_t>(packets * frame_len));
  if (d.total_stats().rx_dropped != 0 || !tx->device_error().empty() ||
      !rx->device_error().empty()) {
    state.SkipWithError("device misbehaved");
  }
  (void)ctrl;
}

using virtio::testing::PackedDriver;
using virtio::testing::SplitDriver;

BENCHMARK(BM_Net<SplitDriver, false, true>)
    ->Name("net/split/mrg")->Arg(64)->Arg(1500);
BENCHMARK(BM_Net<SplitDriver, false, false>)
    ->Name("net/split/nomrg")->Arg(64)->Arg(1500);
BENCHMARK(BM_Net<PackedDriver, true, true>)
    ->Name("net/packed/mrg")->Arg(64)->Arg(1500);
BENCHMARK(BM_Net<PackedDriver, true, false>)
    ->Name("net/packed/nomrg")->Arg(64)->Arg(1500);

}  // namespace

BENCHMARK_MAIN();
