// net_one_way_bench — the device's cost per packet, alone: what testpmd's
// txonly (rxonly) against the daemon's null (generator) backend costs on the
// device's side, without the second CPU.
//
// WHAT IS MEASURED
//   net_tx/<layout>/<in_order|out_of_order>
//     A minimal in-process driver (not the test harness, whose bookkeeping
//     would dominate) keeps a 1024-entry ring the way DPDK's virtio-user
//     does: every iteration it makes 32 single-descriptor chains available
//     (12-byte header + 64-byte frame, buffer IDs in ring order), then the
//     device runs its transmit queue once (NetDevice::Notify) into NullNet,
//     which drops what it is given. The driver checks only that the whole
//     batch came back (the batch's first slot used on a packed ring,
//     used->idx on a split one). Interrupts are suppressed, as a polling
//     driver does. items_per_second counts packets.
//   net_rx/<layout>/<in_order|out_of_order>
//     The same driver posts 32 writable 1536-byte buffers per iteration; the
//     device fills each with a 64-byte frame from GeneratorNet and its
//     header (mergeable rx buffers), as testpmd's rxonly sees it.
//   Everything stays in one CPU's cache, so this is the instruction cost of
//   pop + validate + push + publish; the cross-CPU cost is what
//   scripts/bench-vhost-user-net.sh measures.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "virtio/backends/generator_net.h"
#include "virtio/backends/null_net.h"
#include "virtio/net_device.h"
#include "virtio/spec.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace {

using virtio::GeneratorNet;
using virtio::NullNet;
using virtio::testing::TestTraits;
namespace net = virtio::net;
namespace spec = virtio::spec;

constexpr uint32_t kBatch = 32;
constexpr uint32_t kRing = 1024;
constexpr uint32_t kFrame = 64;
// An rx buffer as DPDK's virtio-user posts one (a 2 KiB mbuf's data room
// less its headroom), with mergeable rx buffers negotiated.
constexpr uint32_t kRxBuffer = 1536;

// The driver side of one ring, either layout, in ring order.
class RawDriver {
 public:
  // `buffer_len`-byte buffers, device-writable (rx) or holding a
  // transmitted frame (tx).
  RawDriver(virtio::testing::TestGuestMemory& mem, bool packed,
            uint32_t buffer_len, bool writable)
      : mem_(mem), packed_(packed), len_(buffer_len), writable_(writable) {
    // A polling driver: no used-buffer notifications.
    if (packed) {
      desc_ =
          mem.Alloc(spec::PackedDescRingSize(kRing), spec::kPackedDescAlign);
      driver_ =
          mem.Alloc(sizeof(spec::PackedEventSuppress), spec::kPackedEventAlign);
      device_ =
          mem.Alloc(sizeof(spec::PackedEventSuppress), spec::kPackedEventAlign);
      const spec::PackedEventSuppress disable{
          .off_wrap = 0, .flags = spec::kRingEventFlagsDisable};
      mem.Write(driver_, &disable, sizeof disable);
    } else {
      desc_ = mem.Alloc(spec::SplitDescTableSize(kRing), spec::kSplitDescAlign);
      driver_ =
          mem.Alloc(spec::SplitAvailRingSize(kRing), spec::kSplitAvailAlign);
      device_ =
          mem.Alloc(spec::SplitUsedRingSize(kRing), spec::kSplitUsedAlign);
      mem.Write(driver_, &spec::kAvailFlagNoInterrupt,
                sizeof spec::kAvailFlagNoInterrupt);
    }
    for (uint32_t i = 0; i < kRing; ++i) {
      buf_[i] = mem.Alloc(len_, 64);
      if (!writable) mem.Fill(buf_[i] + net::kHeaderSize, 0xab, kFrame);
      if (!packed) {
        // Split: descriptor i always describes buffer i.
        WriteSplitDesc(i);
      }
    }
  }

  // Points the device's queue at this ring (the rest of the config is the
  // device's: negotiated-feature bits).
  void Configure(virtio::QueueConfig& cfg) const {
    cfg.size = kRing;
    cfg.desc_addr = desc_;
    cfg.driver_addr = driver_;
    cfg.device_addr = device_;
  }

  // Makes kBatch buffers available.
  void Submit() {
    if (packed_) {
      auto* ring = reinterpret_cast<spec::PackedDesc*>(
          mem_.Host(desc_, kRing * sizeof(spec::PackedDesc)));
      const uint16_t avail_flags =
          (wrap_ ? spec::kDescFlagAvail : spec::kDescFlagUsed) |
          (writable_ ? spec::kDescFlagWrite : 0);
      // Head last, as a driver publishing a batch does.
      for (uint32_t i = kBatch; i-- > 0;) {
        spec::PackedDesc& d = ring[pos_ + i];
        d.addr = buf_[pos_ + i];
        d.len = len_;
        d.id = static_cast<uint16_t>(pos_ + i);
        std::atomic_ref<uint16_t>(d.flags).store(avail_flags,
                                                 std::memory_order_release);
      }
    } else {
      auto* avail =
          reinterpret_cast<uint16_t*>(mem_.Host(driver_, 4 + 2 * kRing));
      for (uint32_t i = 0; i < kBatch; ++i) {
        avail[2 + ((idx_ + i) % kRing)] =
            static_cast<uint16_t>((idx_ + i) % kRing);
      }
      std::atomic_ref<uint16_t>(avail[1]).store(
          static_cast<uint16_t>(idx_ + kBatch), std::memory_order_release);
    }
  }

  // True if the device used the whole batch.
  bool Reap() {
    bool done;
    if (packed_) {
      auto* ring = reinterpret_cast<spec::PackedDesc*>(
          mem_.Host(desc_, kRing * sizeof(spec::PackedDesc)));
      // In order, a batch may come back as one used descriptor at its
      // first slot, or as one per buffer: either way the batch's first
      // slot is used.
      const uint16_t f = std::atomic_ref<uint16_t>(ring[pos_].flags)
                             .load(std::memory_order_acquire);
      const bool avail = f & spec::kDescFlagAvail;
      const bool used = f & spec::kDescFlagUsed;
      done = avail == wrap_ && used == wrap_;
      pos_ += kBatch;
      if (pos_ == kRing) {
        pos_ = 0;
        wrap_ = !wrap_;
      }
    } else {
      auto* used = reinterpret_cast<uint16_t*>(mem_.Host(device_, 4));
      idx_ += kBatch;
      done = std::atomic_ref<uint16_t>(used[1]).load(
                 std::memory_order_acquire) == static_cast<uint16_t>(idx_);
    }
    return done;
  }

 private:
  void WriteSplitDesc(uint32_t i) {
    const spec::SplitDesc d{
        .addr = buf_[i],
        .len = len_,
        .flags = static_cast<uint16_t>(writable_ ? spec::kDescFlagWrite : 0),
        .next = 0};
    mem_.Write(desc_ + sizeof d * i, &d, sizeof d);
  }

  virtio::testing::TestGuestMemory& mem_;
  bool packed_;
  uint32_t len_;
  bool writable_;
  uint64_t desc_ = 0, driver_ = 0, device_ = 0;
  uint64_t buf_[kRing] = {};
  uint32_t pos_ = 0;  // packed: next slot
  bool wrap_ = true;
  uint32_t idx_ = 0;  // split: avail and used index
};

// Brings up `d` with the rings of `rx` and `tx`. False (and the benchmark
// skipped) if that fails.
template <typename Device>
bool BringUp(benchmark::State& state, Device& d, RawDriver& rx, RawDriver& tx,
             bool packed, bool in_order) {
  uint64_t f = d.device_features() & ~spec::Bit(spec::kFeatureIndirectDesc);
  if (!packed) f &= ~spec::Bit(spec::kFeatureRingPacked);
  if (!in_order) f &= ~spec::Bit(spec::kFeatureInOrder);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  d.SetDriverFeatures(f);
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
              spec::kStatusFeaturesOk);
  rx.Configure(*d.queue_config(0));
  tx.Configure(*d.queue_config(1));
  if (!d.EnableQueue(0) || !d.EnableQueue(1)) {
    state.SkipWithError("queue setup failed");
    return false;
  }
  d.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
              spec::kStatusFeaturesOk | spec::kStatusDriverOk);
  if (d.needs_reset() || (in_order && !d.Negotiated(spec::kFeatureInOrder)) ||
      !d.Negotiated(net::kFeatureMrgRxbuf)) {
    state.SkipWithError("bring-up failed");
    return false;
  }
  return true;
}

// The backend each direction runs against, and what one iteration does.
struct TxOnly {
  using Backend = NullNet;
  static absl::StatusOr<std::unique_ptr<NullNet>> MakeBackend() {
    return NullNet::Create({});
  }
  // The driver's side of one batch, then the device's.
  template <typename Device>
  static bool Iterate(Device& d, RawDriver& rx, RawDriver& tx) {
    (void)rx;
    tx.Submit();
    d.Notify(1);
    return tx.Reap();
  }
  static uint64_t Packets(const virtio::NetPairStats& s) {
    return s.tx_packets;
  }
};
struct RxOnly {
  using Backend = GeneratorNet;
  static absl::StatusOr<std::unique_ptr<GeneratorNet>> MakeBackend() {
    return GeneratorNet::Create(
        {.frame_len = kFrame, .burst = kBatch, .eventfd = false});
  }
  template <typename Device>
  static bool Iterate(Device& d, RawDriver& rx, RawDriver& tx) {
    (void)tx;
    rx.Submit();
    d.ServiceBackend(0);
    return rx.Reap();
  }
  static uint64_t Packets(const virtio::NetPairStats& s) {
    return s.rx_packets;
  }
};

template <typename Direction>
void BM_Net(benchmark::State& state, bool packed, bool in_order) {
  using Device = virtio::NetDevice<TestTraits, typename Direction::Backend>;
  virtio::testing::TestGuestMemory mem({{.gpa = 0x10000, .size = 8 << 20}});
  virtio::testing::RecordingInterrupt irq;
  auto backend = Direction::MakeBackend();
  if (!backend.ok()) {
    state.SkipWithError("backend setup failed");
    return;
  }
  auto dev = Device::Create(mem.map(), irq, **backend, {.queue_size = kRing});
  if (!dev.ok()) {
    state.SkipWithError("device setup failed");
    return;
  }
  Device& d = **dev;
  RawDriver rx(mem, packed, kRxBuffer, true);
  RawDriver tx(mem, packed, net::kHeaderSize + kFrame, false);
  if (!BringUp(state, d, rx, tx, packed, in_order)) return;
  uint64_t packets = 0;
  for (auto _ : state) {
    if (!Direction::Iterate(d, rx, tx)) {
      state.SkipWithError("the device did not use the whole batch");
      return;
    }
    packets += kBatch;
  }
  state.SetItemsProcessed(static_cast<int64_t>(packets));
  if (Direction::Packets(d.total_stats()) != packets) {
    state.SkipWithError("packets lost");
  }
}

void BM_Tx(benchmark::State& state, bool packed, bool in_order) {
  BM_Net<TxOnly>(state, packed, in_order);
}
void BM_Rx(benchmark::State& state, bool packed, bool in_order) {
  BM_Net<RxOnly>(state, packed, in_order);
}

BENCHMARK_CAPTURE(BM_Tx, packed_in_order, true, true)
    ->Name("net_tx/packed/in_order");
BENCHMARK_CAPTURE(BM_Tx, packed, true, false)->Name("net_tx/packed");
BENCHMARK_CAPTURE(BM_Tx, split_in_order, false, true)
    ->Name("net_tx/split/in_order");
BENCHMARK_CAPTURE(BM_Tx, split, false, false)->Name("net_tx/split");
BENCHMARK_CAPTURE(BM_Rx, packed_in_order, true, true)
    ->Name("net_rx/packed/in_order");
BENCHMARK_CAPTURE(BM_Rx, packed, true, false)->Name("net_rx/packed");
BENCHMARK_CAPTURE(BM_Rx, split_in_order, false, true)
    ->Name("net_rx/split/in_order");
BENCHMARK_CAPTURE(BM_Rx, split, false, false)->Name("net_rx/split");

}  // namespace

BENCHMARK_MAIN();
