// fuzz/net_fuzzer.cc — virtio-net from an arbitrary guest against NetDevice
// on a LoopbackNet.
//
// The input picks the ring layout, the negotiated features (any subset of
// the offer, so broken dependencies are tried too) and 1..3 queue pairs,
// then a script of operations: tx chains (1..6 buffers of any length over
// guest-chosen header and frame bytes, readable or writable in any order,
// some outside guest memory, some through an indirect table), rx buffers
// of any size and shape, backend service, control commands (any class,
// command and payload, with or without an ack buffer), packets injected
// host-side with arbitrary headers, link flaps, announces and resets.
// Whatever the guest sends, the device must not crash, touch memory
// outside the guest image (ASan: the region is its own heap allocation),
// return a tx chain with a non-zero length, violate the ring protocol
// (checked by the driver-side harness), or enter NEEDS_RESET (the harness
// only builds well-formed rings, so every problem is a per-packet one).
// Violations abort().
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "virtio/backends/loopback_net.h"
#include "virtio/log.h"
#include "virtio/net_device.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace {

using virtio::LoopbackNet;
using virtio::NetDevice;
using virtio::testing::Buffer;
using virtio::testing::TestGuestMemory;
using virtio::testing::TestTraits;
namespace net = virtio::net;
namespace spec = virtio::spec;

#define FUZZ_CHECK(cond)                                                \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, \
                   __LINE__, #cond);                                    \
      std::abort();                                                     \
    }                                                                   \
  } while (0)

constexpr uint64_t kBase = 0x10000;
constexpr uint64_t kMemSize = 2 << 20;
constexpr uint32_t kQueueSize = 16;
constexpr uint32_t kArena = 160 * 1024;
using Dev = NetDevice<TestTraits, LoopbackNet>;

template <typename Driver>
struct Guest {
  TestGuestMemory& mem;
  Dev& dev;
  std::vector<std::unique_ptr<Driver>> rings = {};
  uint64_t arena = 0;  // shared data area for buffers
  bool indirect = false;
  uint16_t pairs = 1;
  uint16_t ctrl = 0xffff;

  bool BringUp(uint64_t features) {
    dev.SetStatus(0);
    dev.SetStatus(spec::kStatusAcknowledge);
    dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    dev.SetDriverFeatures(features);
    dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                  spec::kStatusFeaturesOk);
    if (!(dev.status() & spec::kStatusFeaturesOk)) return false;
    rings.clear();
    indirect = features & spec::Bit(spec::kFeatureIndirectDesc);
    const bool mq = features & spec::Bit(net::kFeatureMq);
    pairs = mq ? dev.max_pairs() : 1;
    const bool has_ctrl = features & spec::Bit(net::kFeatureCtrlVq);
    const uint16_t nq = static_cast<uint16_t>(2 * pairs + (has_ctrl ? 1 : 0));
    ctrl = has_ctrl ? static_cast<uint16_t>(nq - 1) : 0xffff;
    const virtio::testing::DriverOptions opt{
        .event_idx = (features & spec::Bit(spec::kFeatureEventIdx)) != 0,
        .indirect = indirect,
        .max_indirect = 16};
    for (uint16_t q = 0; q < nq; ++q) {
      rings.push_back(std::make_unique<Driver>(mem, kQueueSize, opt));
      virtio::QueueConfig* cfg = dev.queue_config(q);
      FUZZ_CHECK(cfg != nullptr);
      const virtio::QueueConfig want = rings.back()->config();
      cfg->size = want.size;
      cfg->desc_addr = want.desc_addr;
      cfg->driver_addr = want.driver_addr;
      cfg->device_addr = want.device_addr;
      FUZZ_CHECK(dev.EnableQueue(q));
    }
    dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                  spec::kStatusFeaturesOk | spec::kStatusDriverOk);
    FUZZ_CHECK(!dev.needs_reset());
    return true;
  }

  // Reaps everything; tx chains must come back with length 0.
  void ReapAll() {
    for (size_t q = 0; q < rings.size(); ++q) {
      while (auto u = rings[q]->Reap()) {
        if (q % 2 == 1 && q != ctrl) FUZZ_CHECK(u->len == 0);
        if (q == ctrl) FUZZ_CHECK(u->len <= 1);
      }
      if (!rings[q]->device_error().empty()) {
        std::fprintf(stderr, "queue %zu: %s\n", q,
                     rings[q]->device_error().c_str());
        std::abort();
      }
    }
    FUZZ_CHECK(!dev.needs_reset());
  }

  Buffer RandomBuffer(FuzzedDataProvider& in, bool writable) {
    const uint8_t kind = in.ConsumeIntegralInRange<uint8_t>(0, 15);
    uint32_t len;
    switch (kind) {
      case 0: len = 0; break;
      case 1: len = in.ConsumeIntegralInRange<uint32_t>(60000, 70000); break;
      case 2: len = net::kHeaderSize; break;
      default: len = in.ConsumeIntegralInRange<uint32_t>(1, 2048);
    }
    uint64_t gpa;
    if (kind == 3) {
      gpa = in.ConsumeBool() ? kBase + kMemSize - len / 2  // straddles the end
                             : 0x7000'0000'0000;
    } else {
      const uint32_t span = kArena > len ? kArena - len : 0;
      gpa = arena + in.ConsumeIntegralInRange<uint32_t>(0, span);
    }
    return {gpa, len, writable};
  }
};

template <typename Driver>
void Run(FuzzedDataProvider& in) {
  TestGuestMemory mem({{.gpa = kBase, .size = kMemSize}});
  virtio::testing::RecordingInterrupt irq;
  const uint16_t max_pairs = in.ConsumeIntegralInRange<uint16_t>(1, 3);
  auto lo = LoopbackNet::Create({.num_pairs = max_pairs, .ring_bytes = 256 * 1024});
  FUZZ_CHECK(lo.ok());
  const uint16_t mtu = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<uint16_t>(68, 9000);
  auto dev = Dev::Create(mem.map(), irq, **lo,
                         {.max_pairs = max_pairs, .queue_size = kQueueSize,
                          .ctrl_queue_size = kQueueSize, .mtu = mtu,
                          .tx_batch = in.ConsumeIntegralInRange<uint32_t>(1, 8),
                          .rx_batch = in.ConsumeIntegralInRange<uint32_t>(1, 8)});
  FUZZ_CHECK(dev.ok());
  Guest<Driver> g{mem, **dev};
  constexpr bool kPacked = std::is_same_v<Driver, virtio::testing::PackedDriver>;
  uint64_t features = (*dev)->device_features() & in.ConsumeIntegral<uint64_t>();
  features |= spec::Bit(spec::kFeatureVersion1);
  if (kPacked) {
    features |= spec::Bit(spec::kFeatureRingPacked);
  } else {
    features &= ~spec::Bit(spec::kFeatureRingPacked);
  }
  // Most inputs get a valid feature set, some keep the raw (maybe broken) one.
  if (!g.BringUp(features)) {
    features = (*dev)->device_features();
    if (!kPacked) features &= ~spec::Bit(spec::kFeatureRingPacked);
    FUZZ_CHECK(g.BringUp(features));
  }
  g.arena = mem.Alloc(kArena, 64);
  {
    std::vector<uint8_t> fill = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, 256));
    if (!fill.empty()) {
      std::vector<uint8_t> pattern(kArena);
      size_t have = std::min<size_t>(fill.size(), kArena);
      std::memcpy(pattern.data(), fill.data(), have);
      while (have < kArena) {
        const size_t n = std::min<size_t>(have, kArena - have);
        std::memcpy(pattern.data() + have, pattern.data(), n);
        have += n;
      }
      mem.Write(g.arena, pattern.data(), kArena);
    }
  }
  int resets = 0;
  for (int op = 0; op < 48 && in.remaining_bytes() > 0; ++op) {
    const uint16_t pair = in.ConsumeIntegralInRange<uint16_t>(0, g.pairs - 1);
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
      case 1: {  // tx chain: a header written by the guest, then the frame
        net::Header h{};
        const auto raw = in.ConsumeBytes<uint8_t>(sizeof h);
        if (!raw.empty()) std::memcpy(&h, raw.data(), raw.size());
        const uint32_t nbuf = in.ConsumeIntegralInRange<uint32_t>(1, 6);
        std::vector<Buffer> bufs;
        for (uint32_t i = 0; i < nbuf; ++i) {
          bufs.push_back(g.RandomBuffer(in, in.ConsumeIntegralInRange<int>(0, 9) == 0));
        }
        if (bufs[0].len >= sizeof h && bufs[0].gpa >= g.arena &&
            bufs[0].gpa + bufs[0].len <= g.arena + kArena) {
          mem.Write(bufs[0].gpa, &h, sizeof h);
        }
        const bool ind = g.indirect && in.ConsumeBool();
        g.rings[2 * pair + 1]->Add(bufs, ind);
        g.rings[2 * pair + 1]->Kick();
        (*dev)->Notify(static_cast<uint16_t>(2 * pair + 1));
        break;
      }
      case 2: {  // rx buffers
        const uint32_t n = in.ConsumeIntegralInRange<uint32_t>(1, 8);
        for (uint32_t i = 0; i < n; ++i) {
          std::vector<Buffer> bufs;
          const uint32_t nb = in.ConsumeIntegralInRange<uint32_t>(1, 3);
          for (uint32_t b = 0; b < nb; ++b) {
            bufs.push_back(g.RandomBuffer(in, in.ConsumeIntegralInRange<int>(0, 15) != 0));
          }
          g.rings[2 * pair]->Add(bufs, g.indirect && in.ConsumeBool());
        }
        g.rings[2 * pair]->Kick();
        (*dev)->Notify(static_cast<uint16_t>(2 * pair));
        break;
      }
      case 3:
        (*dev)->ServiceBackend(in.ConsumeIntegralInRange<uint16_t>(0, 3));
        break;
      case 4: {  // control command
        if (g.ctrl == 0xffff) break;
        const uint8_t cls = in.ConsumeIntegralInRange<uint8_t>(0, 6);
        const uint8_t cmd = in.ConsumeIntegralInRange<uint8_t>(0, 6);
        std::vector<uint8_t> data = in.ConsumeBytes<uint8_t>(
            in.ConsumeIntegralInRange<size_t>(0, 40));
        if (cls == net::kCtrlMac && cmd == 0 && in.ConsumeBool()) {
          // A plausible MAC table with fuzzed counts.
          const uint32_t a = in.ConsumeIntegralInRange<uint32_t>(0, 70);
          const uint32_t b = in.ConsumeIntegralInRange<uint32_t>(0, 70);
          data.assign(8 + 6 * (a + b), 0x02);
          std::memcpy(data.data(), &a, 4);
          std::memcpy(data.data() + 4 + 6 * a, &b, 4);
        }
        const uint64_t at = g.arena + kArena - 1024;
        const uint8_t hdr[2] = {cls, cmd};
        mem.Write(at, hdr, 2);
        if (!data.empty() && data.size() < 900) mem.Write(at + 2, data.data(), data.size());
        const uint32_t dlen = static_cast<uint32_t>(std::min<size_t>(data.size(), 900));
        std::vector<Buffer> bufs{{at, 2, false}};
        if (dlen) bufs.push_back({at + 2, dlen, false});
        if (in.ConsumeIntegralInRange<int>(0, 7) != 0) bufs.push_back({at + 1000, 1, true});
        g.rings[g.ctrl]->Add(bufs);
        g.rings[g.ctrl]->Kick();
        (*dev)->Notify(g.ctrl);
        break;
      }
      case 5:
        (*dev)->SetLinkUp(in.ConsumeBool());
        break;
      case 6:
        (*dev)->Announce();
        break;
      case 7: {  // a packet from the host side
        net::Header h{};
        const auto raw = in.ConsumeBytes<uint8_t>(sizeof h);
        if (!raw.empty()) std::memcpy(&h, raw.data(), raw.size());
        const uint32_t len = in.ConsumeBool()
                                 ? in.ConsumeIntegralInRange<uint32_t>(0, 200)
                                 : in.ConsumeIntegralInRange<uint32_t>(0, 70000);
        std::vector<uint8_t> frame(len, 0x5a);
        const auto head = in.ConsumeBytes<uint8_t>(std::min<uint32_t>(len, 18));
        if (!head.empty()) std::memcpy(frame.data(), head.data(), head.size());
        (*lo)->pair(pair).Inject(in.ConsumeBool() ? &h : nullptr, frame.data(), len);
        break;
      }
      case 8:
        if (++resets > 3) break;
        if (in.ConsumeBool()) {
          (*dev)->SetStatus(0);
        }
        FUZZ_CHECK(g.BringUp(features) || g.BringUp((*dev)->device_features() &
                                                    (kPacked ? ~uint64_t{0}
                                                             : ~spec::Bit(spec::kFeatureRingPacked))));
        g.arena = mem.Alloc(kArena, 64);
        break;
      case 9:
        (*dev)->Notify(in.ConsumeIntegralInRange<uint16_t>(0, 8));
        break;
    }
    g.ReapAll();
  }
  // Drain: everything the guest offered must be answered once buffers exist.
  for (uint16_t p = 0; p < g.pairs; ++p) (*dev)->ServiceBackend(p);
  g.ReapAll();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = [] {
    virtio::SetLogSink([](virtio::LogLevel, std::string_view) {});
    return true;
  }();
  (void)quiet;
  FuzzedDataProvider in(data, size);
  if (in.ConsumeBool()) {
    Run<virtio::testing::PackedDriver>(in);
  } else {
    Run<virtio::testing::SplitDriver>(in);
  }
  return 0;
}
