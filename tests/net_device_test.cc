// virtio-net on the loopback backend, through the driver-side harness on
// both ring layouts: frames of every size with and without merged rx
// buffers, offload headers round-tripped, control-queue commands and their
// acks, multiqueue steering, link status, receive filtering, and malformed
// tx headers and chains (dropped and counted, the device goes on).
#include "virtio/net_device.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "net_test_util.h"
#include "virtio/backends/loopback_net.h"
#include "virtio/log.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/pci_driver.h"

namespace virtio {
namespace {

using nettest::AllNetFeatures;
using nettest::Bytes;
using nettest::Frame;
using nettest::kDevMac;
using nettest::RxPacket;

constexpr uint64_t kNoMrg = ~spec::Bit(net::kFeatureMrgRxbuf);

void QuietLogs() {
  SetLogSink([](LogLevel, std::string_view) {});
}

template <typename Layout>
class NetDeviceTest : public ::testing::Test {
 protected:
  using R = nettest::Rig<Layout>;
  using Device = typename R::Device;
  void SetUp() override { QuietLogs(); }
  void TearDown() override { SetLogSink(nullptr); }
};
TYPED_TEST_SUITE(NetDeviceTest, nettest::Layouts, nettest::LayoutNames);

TYPED_TEST(NetDeviceTest, IdentityFeaturesAndConfig) {
  typename TestFixture::R rig({.max_pairs = 2, .mtu = 1500});
  auto& dev = rig.dev();
  EXPECT_EQ(dev.device_id(), 1u);
  EXPECT_EQ(dev.num_queues(), 5);
  const uint64_t f = dev.device_features();
  for (unsigned bit :
       {net::kFeatureMac,       net::kFeatureStatus,
        net::kFeatureMrgRxbuf,  net::kFeatureMtu,
        net::kFeatureCtrlVq,    net::kFeatureCtrlRx,
        net::kFeatureCtrlVlan,  net::kFeatureGuestAnnounce,
        net::kFeatureMq,        net::kFeatureCsum,
        net::kFeatureGuestCsum, net::kFeatureHostTso4,
        net::kFeatureHostTso6,  net::kFeatureHostUfo,
        net::kFeatureHostEcn,   net::kFeatureGuestTso4,
        net::kFeatureGuestTso6, net::kFeatureGuestUfo,
        net::kFeatureGuestEcn,  net::kFeatureCtrlGuestOffloads}) {
    EXPECT_TRUE(f & spec::Bit(bit)) << "feature " << bit;
  }
  ASSERT_TRUE(rig.BringUp());
  net::Config c;
  ASSERT_TRUE(dev.ReadConfig(0, &c, sizeof c));
  EXPECT_EQ(0, std::memcmp(c.mac, kDevMac.data(), 6));
  EXPECT_EQ(c.status, net::kStatusLinkUp);
  EXPECT_EQ(c.max_virtqueue_pairs, 2);
  EXPECT_EQ(c.mtu, 1500);
  EXPECT_EQ(dev.ctrl_queue(), 4);
  // Config is read-only.
  const uint8_t z[6] = {};
  EXPECT_TRUE(dev.WriteConfig(0, z, 6));
  EXPECT_EQ(dev.mac(), kDevMac);
  // The backend was told the guest offloads and the active pairs.
  EXPECT_EQ(rig.backend().guest_offloads(), net::kGuestOffloadFeatures);
  EXPECT_EQ(rig.backend().active_pairs(), 1);
}

TYPED_TEST(NetDeviceTest, WithoutMqControlQueueIsQueue2) {
  typename TestFixture::R rig({.max_pairs = 2});
  ASSERT_TRUE(rig.BringUp(~spec::Bit(net::kFeatureMq)));
  EXPECT_EQ(rig.dev().ctrl_queue(), 2);
  EXPECT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxPromisc, {0}), net::kCtrlOk);
  EXPECT_FALSE(rig.dev().promisc());
  // VQ_PAIRS_SET needs MQ.
  EXPECT_EQ(rig.Ctrl(net::kCtrlMq, net::kCtrlMqVqPairsSet, Bytes<uint16_t>(2)),
            net::kCtrlErr);
}

TYPED_TEST(NetDeviceTest, RefusesBrokenFeatureDependencies) {
  typename TestFixture::R rig;
  EXPECT_FALSE(
      rig.BringUp(~spec::Bit(net::kFeatureCsum)));  // HOST_TSO w/o CSUM
  EXPECT_FALSE(rig.BringUp(~spec::Bit(net::kFeatureGuestCsum)));
  EXPECT_FALSE(rig.BringUp(~spec::Bit(net::kFeatureCtrlVq)));
  EXPECT_FALSE(rig.BringUp(~(spec::Bit(net::kFeatureHostTso4) |
                             spec::Bit(net::kFeatureHostTso6))));  // HOST_ECN
  EXPECT_TRUE(rig.BringUp(
      ~spec::Bit(net::kFeatureCtrlVq) & ~spec::Bit(net::kFeatureCtrlRx) &
      ~spec::Bit(net::kFeatureCtrlRxExtra) & ~spec::Bit(net::kFeatureCtrlVlan) &
      ~spec::Bit(net::kFeatureGuestAnnounce) &
      ~spec::Bit(net::kFeatureCtrlMacAddr) &
      ~spec::Bit(net::kFeatureCtrlGuestOffloads) &
      ~spec::Bit(net::kFeatureMq)));
  EXPECT_EQ(rig.dev().num_queues(), 3);
}

// One frame of each size, tx then rx through the loopback.
template <typename Rig>
void RoundTripSizes(Rig& rig, const std::vector<uint32_t>& sizes,
                    uint32_t rx_buf, uint32_t tx_segs) {
  uint32_t i = 0;
  for (uint32_t len : sizes) {
    const auto frame = Frame(len, static_cast<uint8_t>(i++));
    const net::Header hdr{};
    auto used = rig.Send(0, hdr, frame, 1 + len % tx_segs);
    ASSERT_TRUE(used.has_value()) << len;
    ASSERT_EQ(*used, 0u);
    // Enough buffers for the packet.
    const uint32_t need = (len + net::kHeaderSize + rx_buf - 1) / rx_buf;
    rig.Post(0, rig.mrg() ? need : 1, rx_buf);
    auto p = rig.Receive(0);
    ASSERT_TRUE(p.has_value()) << "size " << len;
    ASSERT_EQ(p->frame.size(), len);
    ASSERT_TRUE(p->frame == frame) << "size " << len;
    EXPECT_EQ(p->hdr.num_buffers, rig.mrg() ? need : 1u);
    EXPECT_EQ(p->hdr.flags, 0);
    EXPECT_EQ(p->hdr.gso_type, net::kGsoNone);
  }
  const NetPairStats& s = rig.dev().stats(0);
  EXPECT_EQ(s.tx_packets, sizes.size());
  EXPECT_EQ(s.rx_packets, sizes.size());
  EXPECT_EQ(s.tx_malformed + s.rx_dropped + s.rx_bad_buffers, 0u);
  EXPECT_FALSE(rig.dev().needs_reset());
}

std::vector<uint32_t> AllSizes() {
  std::vector<uint32_t> v;
  for (uint32_t n = 14; n <= 1600; ++n) v.push_back(n);
  for (uint32_t n = 1601; n < net::kMaxFrameSize; n += 499) v.push_back(n);
  for (uint32_t n : {2048u, 4084u, 4085u, 4096u, 9000u, 32768u, 65500u, 65523u,
                     65524u, 65535u, 65536u, 65549u, net::kMaxFrameSize}) {
    v.push_back(n);
  }
  return v;
}

TYPED_TEST(NetDeviceTest, EverySizeWithMergedBuffers) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  ASSERT_TRUE(rig.mrg());
  // 1526-byte buffers: a 64 KiB frame takes 43 of them; the ring has 64.
  RoundTripSizes(rig, AllSizes(), 1526, 7);
}

TYPED_TEST(NetDeviceTest, EverySizeWithMergedBuffersOf4K) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  RoundTripSizes(rig, AllSizes(), 4096, 60);
}

TYPED_TEST(NetDeviceTest, EverySizeWithoutMergedBuffers) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp(kNoMrg));
  ASSERT_FALSE(rig.mrg());
  RoundTripSizes(rig, AllSizes(), net::kMaxBigRxBuffer, 3);
}

TYPED_TEST(NetDeviceTest, RxChainsSplitOverManyDescriptors) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp(kNoMrg));
  // Big-packets mode as Linux does it: one chain of 17 writable buffers.
  const auto frame = Frame(60000, 9);
  ASSERT_TRUE(rig.Send(0, {}, frame, 40).has_value());
  rig.Post(0, 1, net::kMaxBigRxBuffer, 17);
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, frame);
  // Through an indirect table on tx.
  ASSERT_TRUE(rig.Send(0, {}, frame, 50, /*indirect=*/true).has_value());
  rig.Post(0, 1, net::kMaxBigRxBuffer, 3);
  p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, frame);
}

TYPED_TEST(NetDeviceTest, WithoutMergedBuffersTooSmallBufferDropsPacket) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp(kNoMrg));
  rig.Post(0, 1, 1526);
  ASSERT_TRUE(rig.Send(0, {}, Frame(3000), 2).has_value());
  rig.dev().ServiceBackend(0);
  EXPECT_EQ(rig.dev().stats(0).rx_dropped, 1u);
  EXPECT_EQ(rig.backend().pair(0).pending(), 0u);
  // The buffer was kept for the next packet that fits.
  const auto small = Frame(1514, 3);
  ASSERT_TRUE(rig.Send(0, {}, small).has_value());
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, small);
}

TYPED_TEST(NetDeviceTest, OutOfRxBuffersKeepsPacketPendingUntilKick) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  const auto frame = Frame(5000, 4);
  ASSERT_TRUE(rig.Send(0, {}, frame).has_value());
  rig.dev().ServiceBackend(0);  // no buffers at all
  EXPECT_EQ(rig.backend().pair(0).pending(), 1u);
  EXPECT_EQ(rig.dev().stats(0).rx_stalls, 1u);
  // Only part of what the packet needs: still pending, chains held.
  rig.Post(0, 2, 1526);
  EXPECT_EQ(rig.backend().pair(0).pending(), 1u);
  EXPECT_EQ(rig.dev().rx_held(0), 2u);
  EXPECT_FALSE(rig.rx(0).ring().Reap().has_value());
  // The rest arrives; the rx kick delivers without any backend event.
  rig.Post(0, 2, 1526);
  EXPECT_EQ(rig.backend().pair(0).pending(), 0u);
  auto p = nettest::ReapRx(rig.mem(), rig.rx(0));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, frame);
  EXPECT_EQ(p->buffers, 4u);
  EXPECT_EQ(rig.dev().stats(0).rx_dropped, 0u);
  EXPECT_EQ(rig.dev().rx_held(0), 0u);
}

TYPED_TEST(NetDeviceTest, DisablingQueueReturnsHeldChainsAndResumes) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  const auto frame = Frame(5000, 9);
  ASSERT_TRUE(rig.Send(0, {}, frame).has_value());
  rig.Post(0, 2, 1526);  // not enough: both chains held
  ASSERT_EQ(rig.dev().rx_held(0), 2u);
  // The ring goes away (vhost-user GET_VRING_BASE, a memory table change):
  // the held chains come back unused, the packet stays pending.
  auto state = rig.dev().DisableQueue(0);
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(rig.dev().rx_held(0), 0u);
  for (int i = 0; i < 2; ++i) {
    auto u = rig.rx(0).Reap();
    ASSERT_TRUE(u.has_value()) << i;
    EXPECT_EQ(u->first.len, 0u);
    rig.rx(0).Recycle(u->second);
  }
  EXPECT_FALSE(rig.rx(0).Reap().has_value());
  EXPECT_EQ(rig.backend().pair(0).pending(), 1u);
  // Resumed where it stopped, the packet arrives whole.
  ASSERT_TRUE(rig.dev().EnableQueue(0, *state));
  rig.Post(0, 4, 1526);
  auto p = nettest::ReapRx(rig.mem(), rig.rx(0));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, frame);
  EXPECT_EQ(rig.dev().rx_held(0), 0u);
  EXPECT_FALSE(rig.dev().needs_reset());
}

// Minimal feature sets (no EVENT_IDX, INDIRECT or offloads): the device
// still serves tx and rx, on both layouts.
TYPED_TEST(NetDeviceTest, MinimalFeatureSetsServeTxAndRx) {
  for (uint64_t extra : {uint64_t{0}, spec::Bit(net::kFeatureMrgRxbuf)}) {
    typename TestFixture::R rig;
    const uint64_t want = spec::Bit(spec::kFeatureVersion1) |
                          spec::Bit(spec::kFeatureRingPacked) | extra;
    ASSERT_TRUE(rig.BringUp(want));
    EXPECT_EQ(rig.features() & ~spec::Bit(spec::kFeatureRingPacked),
              want & ~spec::Bit(spec::kFeatureRingPacked));
    rig.Post(0, 4, 1526);
    const auto f = Frame(100, 3);
    ASSERT_TRUE(rig.Send(0, {}, f).has_value()) << "extra=" << extra;
    auto p = rig.Receive(0);
    ASSERT_TRUE(p.has_value()) << "extra=" << extra;
    EXPECT_EQ(p->frame, f);
    EXPECT_FALSE(rig.dev().needs_reset());
  }
}

TYPED_TEST(NetDeviceTest, PacketLargerThanWholeRingIsDropped) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp(AllNetFeatures(), /*queue_size=*/8));
  rig.Post(0, 8, 1526);  // 8 * 1526 < 65562
  ASSERT_TRUE(rig.Send(0, {}, Frame(60000)).has_value());
  rig.dev().ServiceBackend(0);
  EXPECT_EQ(rig.dev().stats(0).rx_dropped, 1u);
  EXPECT_EQ(rig.backend().pair(0).pending(), 0u);
  // The held buffers serve the next packets.
  const auto f = Frame(100, 5);
  ASSERT_TRUE(rig.Send(0, {}, f).has_value());
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, f);
}

// The rx stash is capped (NetRxStash::kMaxChains) below the ring's size: a
// packet that needs more chains than it holds is dropped like one larger than
// the ring, instead of waiting for buffers forever.
TYPED_TEST(NetDeviceTest, PacketNeedingMoreChainsThanTheStashIsDropped) {
  typename TestFixture::R rig({.queue_size = 512, .ctrl_queue_size = 512});
  ASSERT_TRUE(rig.BringUp(AllNetFeatures(), /*queue_size=*/512));
  rig.Post(0, 400, 200);  // 80000 bytes, but 301 chains for the packet
  ASSERT_TRUE(rig.Send(0, {}, Frame(60000)).has_value());
  rig.dev().ServiceBackend(0);
  EXPECT_EQ(rig.dev().stats(0).rx_dropped, 1u);
  EXPECT_EQ(rig.backend().pair(0).pending(), 0u);
  const auto f = Frame(100, 5);
  ASSERT_TRUE(rig.Send(0, {}, f).has_value());
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, f);
}

TYPED_TEST(NetDeviceTest, BatchesManyPacketsPerKick) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < 30; ++i) {
    frames.push_back(Frame(64 + i * 10, static_cast<uint8_t>(i)));
    ASSERT_TRUE(
        nettest::AddTx(rig.mem(), rig.tx(0), net::Header{}, frames.back(), 1));
  }
  rig.tx(0).ring().Kick();
  const uint64_t signals = rig.irq().queue_signals(1);
  rig.dev().Notify(1);
  EXPECT_EQ(rig.irq().queue_signals(1), signals + 1);  // one interrupt
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(rig.tx(0).Reap().has_value());
  rig.Post(0, 60, 2048);
  rig.dev().ServiceBackend(0);
  for (int i = 0; i < 30; ++i) {
    auto p = nettest::ReapRx(rig.mem(), rig.rx(0));
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->frame, frames[i]);
  }
}

TYPED_TEST(NetDeviceTest, OffloadHeadersRoundTrip) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  struct Case {
    uint8_t flags, gso;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
    uint32_t len;
  };
  const Case cases[] = {
      {net::kHdrFlagNeedsCsum, net::kGsoNone, 0, 0, 34, 16, 1514},
      {net::kHdrFlagNeedsCsum, net::kGsoTcpV4, 66, 1448, 34, 16, 65000},
      {net::kHdrFlagNeedsCsum, net::kGsoTcpV6, 86, 1440, 54, 16, 30000},
      {net::kHdrFlagNeedsCsum, net::kGsoUdp, 42, 1472, 34, 6, 8000},
      {net::kHdrFlagNeedsCsum, net::kGsoTcpV4 | net::kGsoEcn, 66, 1448, 34, 16,
       20000},
  };
  for (const Case& c : cases) {
    net::Header h{c.flags,      c.gso,         c.hdr_len, c.gso_size,
                  c.csum_start, c.csum_offset, 0x7777};
    const auto frame = Frame(c.len, c.gso);
    ASSERT_TRUE(rig.Send(0, h, frame, 5).has_value());
    // What the backend got: the header, num_buffers zeroed.
    rig.Post(0, 64, 1526);
    auto p = rig.Receive(0);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->frame, frame);
    EXPECT_EQ(p->hdr.flags, c.flags);
    EXPECT_EQ(p->hdr.gso_type, c.gso);
    EXPECT_EQ(p->hdr.hdr_len, c.hdr_len);
    EXPECT_EQ(p->hdr.gso_size, c.gso_size);
    EXPECT_EQ(p->hdr.csum_start, c.csum_start);
    EXPECT_EQ(p->hdr.csum_offset, c.csum_offset);
    EXPECT_EQ(p->hdr.num_buffers, p->buffers);
    // Drain the spare buffers for the next case.
    rig.dev().Reset();
    ASSERT_TRUE(rig.BringUp());
  }
  EXPECT_EQ(rig.dev().stats(0).tx_malformed, 0u);
}

TYPED_TEST(NetDeviceTest, RxHeaderNeedingUnacceptedOffloadIsDropped) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  // The driver turns guest TSO off at run time (CTRL_GUEST_OFFLOADS).
  const uint64_t csum_only = spec::Bit(net::kFeatureGuestCsum);
  EXPECT_EQ(rig.Ctrl(net::kCtrlGuestOffloads, net::kCtrlGuestOffloadsSet,
                     Bytes(csum_only)),
            net::kCtrlOk);
  EXPECT_EQ(rig.dev().guest_offloads(), csum_only);
  EXPECT_EQ(rig.backend().guest_offloads(), csum_only);
  rig.Post(0, 64, 1526);
  net::Header tso{net::kHdrFlagNeedsCsum, net::kGsoTcpV4, 66, 1448, 34, 16, 0};
  const auto frame = Frame(10000);
  rig.backend().pair(0).Inject(&tso, frame.data(), 10000);
  net::Header csum{
      net::kHdrFlagNeedsCsum | net::kHdrFlagDataValid | net::kHdrFlagRscInfo,
      0,
      0,
      0,
      34,
      16,
      0};
  rig.backend().pair(0).Inject(&csum, frame.data(), 1000);
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame.size(), 1000u);
  // RSC_INFO is not passed on (RSC not negotiated).
  EXPECT_EQ(p->hdr.flags, net::kHdrFlagNeedsCsum | net::kHdrFlagDataValid);
  EXPECT_EQ(rig.dev().stats(0).rx_dropped, 1u);
  // Offloads outside the negotiated set are refused.
  typename TestFixture::R rig2;
  ASSERT_TRUE(rig2.BringUp(~spec::Bit(net::kFeatureGuestUfo)));
  EXPECT_EQ(rig2.Ctrl(net::kCtrlGuestOffloads, net::kCtrlGuestOffloadsSet,
                      Bytes(spec::Bit(net::kFeatureGuestUfo))),
            net::kCtrlErr);
  // Without GUEST_CSUM, plain frames still arrive but flags are cleared.
  typename TestFixture::R rig3;
  ASSERT_TRUE(rig3.BringUp(~net::kGuestOffloadFeatures &
                           ~spec::Bit(net::kFeatureCtrlGuestOffloads)));
  rig3.Post(0, 4, 2048);
  net::Header dv{net::kHdrFlagDataValid, 0, 0, 0, 0, 0, 0};
  rig3.backend().pair(0).Inject(&dv, frame.data(), 100);
  p = rig3.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->hdr.flags, 0);
}

TYPED_TEST(NetDeviceTest, HeaderlessBackendPacketsGetZeroHeader) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  rig.Post(0, 4, 2048);
  const auto frame = Frame(60);
  rig.backend().pair(0).Inject(nullptr, frame.data(), 60);
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, frame);
  EXPECT_EQ(p->hdr.flags, 0);
  EXPECT_EQ(p->hdr.gso_type, 0);
  EXPECT_EQ(p->hdr.num_buffers, 1);
}

// A recycled rx buffer still holds the previous packet's header: the
// device must replace it where it differs, whether or not it skips
// unchanged headers (rx_keep_same_header).
TYPED_TEST(NetDeviceTest, RecycledRxBufferGetsThisPacketsHeader) {
  for (const bool keep : {true, false}) {
    SCOPED_TRACE(keep ? "keep same header" : "always store header");
    typename TestFixture::R rig({.rx_keep_same_header = keep});
    ASSERT_TRUE(rig.BringUp());
    const auto frame = Frame(60);
    const net::Header csum{
        net::kHdrFlagNeedsCsum, net::kGsoNone, 0, 0, 14, 6, 0};
    // One buffer, posted again after each packet: the same guest memory.
    const net::Header* headers[] = {&csum, nullptr, nullptr,
                                    &csum, &csum,   nullptr};
    for (const net::Header* h : headers) {
      ASSERT_EQ(rig.Post(0, 1, 2048), 1u);
      rig.backend().pair(0).Inject(h, frame.data(), 60);
      auto p = rig.Receive(0);
      ASSERT_TRUE(p.has_value());
      EXPECT_EQ(p->frame, frame);
      const net::Header want = h != nullptr ? *h : net::Header{};
      EXPECT_EQ(p->hdr.flags, want.flags);
      EXPECT_EQ(p->hdr.gso_type, want.gso_type);
      EXPECT_EQ(p->hdr.csum_start, want.csum_start);
      EXPECT_EQ(p->hdr.csum_offset, want.csum_offset);
      EXPECT_EQ(p->hdr.num_buffers, 1);
    }
    EXPECT_EQ(rig.dev().stats(0).rx_packets, 6u);
  }
}

TYPED_TEST(NetDeviceTest, MalformedTxIsDroppedAndCounted) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp(~spec::Bit(net::kFeatureHostUfo)));
  auto& dev = rig.dev();
  auto& mem = rig.mem();
  auto& tx = rig.tx(0);
  uint64_t expected = 0;
  auto check_dropped = [&](const char* what) {
    tx.ring().Kick();
    dev.Notify(1);
    auto u = tx.Reap();
    ASSERT_TRUE(u.has_value()) << what;
    EXPECT_EQ(u->first.len, 0u) << what;
    EXPECT_EQ(dev.stats(0).tx_malformed, ++expected) << what;
    EXPECT_FALSE(dev.needs_reset()) << what;
    EXPECT_EQ(rig.backend().pair(0).pending(), 0u) << what;
  };
  const uint64_t buf = mem.Alloc(70000, 64);
  mem.Fill(buf, 0, 70000);
  // Too short for the header.
  tx.Add({{buf, 8, false}});
  check_dropped("short header");
  tx.Add({{buf, 4, false}, {buf + 4, 4, false}});
  check_dropped("short header in two");
  // Header only, no frame / frame below 14 bytes.
  tx.Add({{buf, 12, false}});
  check_dropped("no frame");
  tx.Add({{buf, 12 + 13, false}});
  check_dropped("13-byte frame");
  // Above the largest frame.
  tx.Add({{buf, 12 + net::kMaxFrameSize + 1, false}});
  check_dropped("too big");
  // A device-writable buffer in a tx chain.
  tx.Add({{buf, 12 + 60, false}, {buf + 100, 10, true}});
  check_dropped("writable part");
  // A buffer outside guest memory (the chain lies about where it is).
  tx.Add({{buf, 12, false}, {0x7000'0000'0000, 60, false}});
  check_dropped("out of range");
  tx.Add({{buf, 12, false}, {buf + 12, 0xffff'fff0, false}});
  check_dropped("length beyond memory");
  // Header contents.
  auto bad_header = [&](const net::Header& h, uint32_t len, const char* what) {
    mem.Write(buf, &h, sizeof h);
    tx.Add({{buf, 12, false}, {buf + 12, len, false}});
    check_dropped(what);
  };
  bad_header({net::kHdrFlagDataValid, 0, 0, 0, 0, 0, 0}, 60,
             "DATA_VALID on tx");
  bad_header({net::kHdrFlagNeedsCsum, 0, 0, 0, 50, 9, 0}, 60, "csum past end");
  bad_header({net::kHdrFlagNeedsCsum, 0, 0, 0, 0xffff, 0xffff, 0}, 60,
             "csum overflow");
  bad_header({net::kHdrFlagNeedsCsum, net::kGsoUdp, 42, 1400, 34, 6, 0}, 3000,
             "UFO not negotiated");
  bad_header({net::kHdrFlagNeedsCsum, 7, 42, 1400, 34, 6, 0}, 3000,
             "unknown gso type");
  bad_header({net::kHdrFlagNeedsCsum, net::kGsoTcpV4, 54, 0, 34, 16, 0}, 3000,
             "gso_size 0");
  bad_header({net::kHdrFlagNeedsCsum, net::kGsoTcpV4, 4000, 1448, 34, 16, 0},
             3000, "hdr_len past end");
  bad_header({0, net::kGsoEcn, 0, 0, 0, 0, 0}, 60, "ECN without GSO");
  // The device goes on: a good packet still flows.
  const auto frame = Frame(200, 6);
  ASSERT_TRUE(rig.Send(0, {}, frame, 3).has_value());
  rig.Post(0, 2, 2048);
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, frame);
  EXPECT_EQ(dev.stats(0).tx_packets, 1u);
  EXPECT_EQ(tx.ring().device_error(), "");
}

TYPED_TEST(NetDeviceTest, MtuLimitsNonGsoFrames) {
  typename TestFixture::R rig({.mtu = 1500});
  ASSERT_TRUE(rig.BringUp());
  EXPECT_EQ(*rig.Send(0, {}, Frame(1518)), 0u);
  EXPECT_EQ(rig.dev().stats(0).tx_packets, 1u);
  rig.Send(0, {}, Frame(1519));
  EXPECT_EQ(rig.dev().stats(0).tx_malformed, 1u);
}

TYPED_TEST(NetDeviceTest, MalformedRxBuffersAreReturnedEmpty) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  auto& rx = rig.rx(0);
  const uint64_t b = rig.mem().Alloc(4096, 64);
  rx.Add({{b, 100, false}, {b + 100, 2000, true}});  // readable part
  rx.Add({{b, 8, true}});                            // shorter than the header
  rx.Add({{0x7000'0000'0000, 2048, true}});          // outside memory
  rx.Add({{b + 2048, 2048, true}});                  // good
  rx.ring().Kick();
  rig.dev().Notify(0);
  const auto frame = Frame(300);
  ASSERT_TRUE(rig.Send(0, {}, frame).has_value());
  rig.dev().ServiceBackend(0);
  int empty = 0;
  std::optional<RxPacket> got;
  for (int i = 0; i < 4; ++i) {
    auto u = rx.Reap();
    ASSERT_TRUE(u.has_value());
    if (u->first.len == 0) {
      ++empty;
    } else {
      auto bytes = nettest::ReadChain(rig.mem(), u->second, u->first.len);
      EXPECT_EQ(std::vector<uint8_t>(bytes.begin() + 12, bytes.end()), frame);
    }
  }
  EXPECT_EQ(empty, 3);
  EXPECT_EQ(rig.dev().stats(0).rx_bad_buffers, 3u);
  EXPECT_FALSE(rig.dev().needs_reset());
}

// Under IN_ORDER buffers go back in ring order even when an unusable rx
// chain turns up behind chains held for a packet being assembled: those go
// back first, empty, and the packet takes the chains after. Without it the
// unusable chain goes back at once and the held one carries the packet.
TYPED_TEST(NetDeviceTest, InOrderReturnsHeldChainsBeforeAnUnusableOne) {
  for (const bool in_order : {true, false}) {
    SCOPED_TRACE(in_order ? "IN_ORDER" : "any order");
    typename TestFixture::R rig;
    EXPECT_TRUE(rig.dev().device_features() & spec::Bit(spec::kFeatureInOrder));
    uint64_t want = nettest::AllNetFeatures();
    if (!in_order) want &= ~spec::Bit(spec::kFeatureInOrder);
    ASSERT_TRUE(rig.BringUp(want));
    auto& rx = rig.rx(0);
    const uint64_t b = rig.mem().Alloc(8192, 64);
    const auto small = rx.Add({{b, 100, true}});        // too small alone
    const auto bad = rx.Add({{b + 100, 8, true}});      // shorter than a header
    const auto big = rx.Add({{b + 4096, 2048, true}});  // fits the packet
    ASSERT_TRUE(small && bad && big);
    rx.ring().Kick();
    rig.dev().Notify(0);
    const auto frame = Frame(300);
    ASSERT_TRUE(rig.Send(0, {}, frame).has_value());
    rig.dev().ServiceBackend(0);
    std::vector<std::pair<uint16_t, uint32_t>> used;  // (id, len) in order
    while (auto u = rx.Reap()) used.emplace_back(u->first.id, u->first.len);
    ASSERT_EQ(used.size(), 3u);
    if (in_order) {
      EXPECT_EQ(used[0], std::make_pair(*small, 0u));
      EXPECT_EQ(used[1], std::make_pair(*bad, 0u));
      EXPECT_EQ(used[2], std::make_pair(*big, 12u + 300u));
    } else {
      EXPECT_EQ(used[0], std::make_pair(*bad, 0u));
      EXPECT_EQ(used[1], std::make_pair(*small, 100u));
      EXPECT_EQ(used[2], std::make_pair(*big, 12u + 300u - 100u));
    }
    EXPECT_EQ(rig.dev().stats(0).rx_packets, 1u);
    EXPECT_EQ(rig.dev().stats(0).rx_bad_buffers, 1u);
    EXPECT_FALSE(rig.dev().needs_reset());
  }
}

TYPED_TEST(NetDeviceTest, BusyBackendHoldsTxUntilServiced) {
  typename TestFixture::R rig({}, {.ring_bytes = 256 * 1024});
  ASSERT_TRUE(rig.BringUp());
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < 5; ++i) {
    frames.push_back(Frame(net::kMaxFrameSize, static_cast<uint8_t>(i)));
    nettest::AddTx(rig.mem(), rig.tx(0), net::Header{}, frames.back(), 4);
  }
  rig.tx(0).ring().Kick();
  rig.dev().Notify(1);
  EXPECT_TRUE(rig.dev().tx_blocked(0));
  EXPECT_EQ(rig.backend().pair(0).pending(), 3u);
  EXPECT_EQ(rig.dev().stats(0).tx_busy, 1u);
  // Kicks while blocked do nothing new.
  rig.dev().Notify(1);
  rig.Post(0, 64, 8192);
  for (int round = 0; round < 4; ++round) rig.dev().ServiceBackend(0);
  EXPECT_FALSE(rig.dev().tx_blocked(0));
  for (int i = 0; i < 5; ++i) {
    auto p = nettest::ReapRx(rig.mem(), rig.rx(0));
    ASSERT_TRUE(p.has_value()) << i;
    EXPECT_EQ(p->frame, frames[i]);
  }
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(rig.tx(0).Reap().has_value());
}

TYPED_TEST(NetDeviceTest, LinkStatusChangeInterruptsAndGatesTraffic) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  auto& dev = rig.dev();
  const uint32_t gen = dev.config_generation();
  const uint64_t cfg = rig.irq().config_signals();
  dev.SetLinkUp(false);
  EXPECT_EQ(dev.config_generation(), gen + 1);
  EXPECT_EQ(rig.irq().config_signals(), cfg + 1);
  uint16_t status = 0xffff;
  ASSERT_TRUE(dev.ReadConfig(6, &status, 2));
  EXPECT_EQ(status, 0);
  dev.SetLinkUp(false);  // no change, no interrupt
  EXPECT_EQ(rig.irq().config_signals(), cfg + 1);
  // Link down: transmitted packets are consumed and dropped.
  EXPECT_EQ(*rig.Send(0, {}, Frame(100)), 0u);
  EXPECT_EQ(dev.stats(0).tx_dropped, 1u);
  EXPECT_EQ(rig.backend().pair(0).pending(), 0u);
  // ...and received ones too.
  rig.Post(0, 2, 2048);
  const auto f = Frame(100);
  rig.backend().pair(0).Inject(nullptr, f.data(), 100);
  dev.ServiceBackend(0);
  EXPECT_EQ(dev.stats(0).rx_dropped, 1u);
  dev.SetLinkUp(true);
  EXPECT_EQ(dev.config_generation(), gen + 2);
  EXPECT_EQ(rig.irq().config_signals(), cfg + 2);
  ASSERT_TRUE(dev.ReadConfig(6, &status, 2));
  EXPECT_EQ(status, net::kStatusLinkUp);
  ASSERT_TRUE(rig.Send(0, {}, f).has_value());
  auto p = rig.Receive(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, f);
}

TYPED_TEST(NetDeviceTest, GuestAnnounce) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  const uint64_t cfg = rig.irq().config_signals();
  ASSERT_TRUE(rig.dev().Announce());
  EXPECT_EQ(rig.irq().config_signals(), cfg + 1);
  uint16_t status = 0;
  rig.dev().ReadConfig(6, &status, 2);
  EXPECT_EQ(status, net::kStatusLinkUp | net::kStatusAnnounce);
  EXPECT_EQ(rig.Ctrl(net::kCtrlAnnounce, net::kCtrlAnnounceAck, {}),
            net::kCtrlOk);
  rig.dev().ReadConfig(6, &status, 2);
  EXPECT_EQ(status, net::kStatusLinkUp);
  EXPECT_EQ(rig.Ctrl(net::kCtrlAnnounce, 1, {}), net::kCtrlErr);
  // Not negotiated: no announce.
  typename TestFixture::R rig2;
  ASSERT_TRUE(rig2.BringUp(~spec::Bit(net::kFeatureGuestAnnounce)));
  EXPECT_FALSE(rig2.dev().Announce());
  EXPECT_EQ(rig2.Ctrl(net::kCtrlAnnounce, net::kCtrlAnnounceAck, {}),
            net::kCtrlErr);
}

TYPED_TEST(NetDeviceTest, ControlCommandsAndAcks) {
  typename TestFixture::R rig({.max_pairs = 2});
  ASSERT_TRUE(rig.BringUp());
  uint32_t used = 0;
  EXPECT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxPromisc, {0}, &used),
            net::kCtrlOk);
  EXPECT_EQ(used, 1u);
  EXPECT_FALSE(rig.dev().promisc());
  EXPECT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxAllMulti, {1}), net::kCtrlOk);
  EXPECT_TRUE(rig.dev().allmulti());
  for (uint8_t cmd = 2; cmd <= 5; ++cmd) {
    EXPECT_EQ(rig.Ctrl(net::kCtrlRx, cmd, {0}), net::kCtrlOk) << int{cmd};
  }
  EXPECT_EQ(rig.Ctrl(net::kCtrlRx, 6, {0}), net::kCtrlErr);
  EXPECT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxPromisc, {0, 0}), net::kCtrlErr);
  EXPECT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxPromisc, {}), net::kCtrlErr);
  // MAC address.
  const std::vector<uint8_t> mac = {2, 0, 0, 0, 0, 9};
  EXPECT_EQ(rig.Ctrl(net::kCtrlMac, net::kCtrlMacAddrSet, mac), net::kCtrlOk);
  EXPECT_EQ(rig.dev().mac()[5], 9);
  net::Config c;
  rig.dev().ReadConfig(0, &c, sizeof c);
  EXPECT_EQ(c.mac[5], 9);
  EXPECT_EQ(rig.Ctrl(net::kCtrlMac, net::kCtrlMacAddrSet, {1, 2, 3}),
            net::kCtrlErr);
  // MAC table: well-formed, truncated, trailing garbage.
  std::vector<uint8_t> table = Bytes<uint32_t>(1);
  table.insert(table.end(), {2, 0, 0, 0, 0, 1});
  auto multi = Bytes<uint32_t>(0);
  table.insert(table.end(), multi.begin(), multi.end());
  EXPECT_EQ(rig.Ctrl(net::kCtrlMac, net::kCtrlMacTableSet, table),
            net::kCtrlOk);
  auto bad = table;
  bad.pop_back();
  EXPECT_EQ(rig.Ctrl(net::kCtrlMac, net::kCtrlMacTableSet, bad), net::kCtrlErr);
  bad = table;
  bad.push_back(0);
  EXPECT_EQ(rig.Ctrl(net::kCtrlMac, net::kCtrlMacTableSet, bad), net::kCtrlErr);
  auto huge = Bytes<uint32_t>(0xffffffff);
  EXPECT_EQ(rig.Ctrl(net::kCtrlMac, net::kCtrlMacTableSet, huge),
            net::kCtrlErr);
  // VLAN.
  EXPECT_EQ(rig.Ctrl(net::kCtrlVlan, net::kCtrlVlanAdd, Bytes<uint16_t>(100)),
            net::kCtrlOk);
  EXPECT_TRUE(rig.dev().vlan_allowed(100));
  EXPECT_FALSE(rig.dev().vlan_allowed(101));
  EXPECT_EQ(rig.Ctrl(net::kCtrlVlan, net::kCtrlVlanDel, Bytes<uint16_t>(100)),
            net::kCtrlOk);
  EXPECT_FALSE(rig.dev().vlan_allowed(100));
  EXPECT_EQ(rig.Ctrl(net::kCtrlVlan, net::kCtrlVlanAdd, Bytes<uint16_t>(4096)),
            net::kCtrlErr);
  // MQ.
  EXPECT_EQ(rig.Ctrl(net::kCtrlMq, net::kCtrlMqVqPairsSet, Bytes<uint16_t>(2)),
            net::kCtrlOk);
  EXPECT_EQ(rig.dev().active_pairs(), 2);
  EXPECT_EQ(rig.backend().active_pairs(), 2);
  EXPECT_EQ(rig.Ctrl(net::kCtrlMq, net::kCtrlMqVqPairsSet, Bytes<uint16_t>(0)),
            net::kCtrlErr);
  EXPECT_EQ(rig.Ctrl(net::kCtrlMq, net::kCtrlMqVqPairsSet, Bytes<uint16_t>(3)),
            net::kCtrlErr);
  EXPECT_EQ(rig.dev().active_pairs(), 2);
  // Unknown class / command.
  EXPECT_EQ(rig.Ctrl(99, 0, {}), net::kCtrlErr);
  EXPECT_EQ(rig.Ctrl(net::kCtrlMq, 7, Bytes<uint16_t>(1)), net::kCtrlErr);
  EXPECT_GT(rig.dev().ctrl_errors(), 0u);
  EXPECT_FALSE(rig.dev().needs_reset());
}

TYPED_TEST(NetDeviceTest, MalformedControlChains) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  auto& q = rig.ctrl();
  const uint64_t b = rig.mem().Alloc(64, 8);
  rig.mem().Fill(b, 0xee, 64);
  // No ack byte: returned with length 0.
  q.Add({{b, 3, false}});
  // Ack only: error ack.
  q.Add({{b + 8, 1, true}});
  // Header outside memory.
  q.Add({{0x7000'0000'0000, 2, false}, {b + 16, 1, true}});
  q.ring().Kick();
  rig.dev().Notify(rig.ctrl_index());
  auto a = q.Reap();
  auto bb = q.Reap();
  auto cc = q.Reap();
  ASSERT_TRUE(a && bb && cc);
  EXPECT_EQ(a->first.len, 0u);
  EXPECT_EQ(bb->first.len, 1u);
  EXPECT_EQ(rig.mem().template Load<uint8_t>(b + 8), net::kCtrlErr);
  EXPECT_EQ(cc->first.len, 0u);
  EXPECT_FALSE(rig.dev().needs_reset());
  EXPECT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxPromisc, {1}), net::kCtrlOk);
}

TYPED_TEST(NetDeviceTest, ReceiveFilter) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  auto& lo = rig.backend().pair(0);
  rig.Post(0, 64, 2048);
  auto deliver = [&](const std::vector<uint8_t>& f) {
    const uint64_t before = rig.dev().stats(0).rx_packets;
    lo.Inject(nullptr, f.data(), static_cast<uint32_t>(f.size()));
    rig.dev().ServiceBackend(0);
    while (rig.rx(0).Reap()) {
    }
    return rig.dev().stats(0).rx_packets > before;
  };
  const std::array<uint8_t, 6> other = {2, 1, 1, 1, 1, 1};
  const std::array<uint8_t, 6> bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  const std::array<uint8_t, 6> mcast = {0x01, 0x00, 0x5e, 0, 0, 1};
  // Promiscuous after reset.
  EXPECT_TRUE(deliver(Frame(60, 0, other)));
  ASSERT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxPromisc, {0}), net::kCtrlOk);
  EXPECT_FALSE(deliver(Frame(60, 0, other)));
  EXPECT_TRUE(deliver(Frame(60, 0, kDevMac)));
  EXPECT_TRUE(deliver(Frame(60, 0, bcast)));
  EXPECT_FALSE(deliver(Frame(60, 0, mcast)));
  ASSERT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxAllMulti, {1}), net::kCtrlOk);
  EXPECT_TRUE(deliver(Frame(60, 0, mcast)));
  ASSERT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxNoBcast, {1}), net::kCtrlOk);
  EXPECT_FALSE(deliver(Frame(60, 0, bcast)));
  // Unicast MAC table.
  std::vector<uint8_t> table = Bytes<uint32_t>(1);
  table.insert(table.end(), other.begin(), other.end());
  auto zero = Bytes<uint32_t>(0);
  table.insert(table.end(), zero.begin(), zero.end());
  ASSERT_EQ(rig.Ctrl(net::kCtrlMac, net::kCtrlMacTableSet, table),
            net::kCtrlOk);
  EXPECT_TRUE(deliver(Frame(60, 0, other)));
  ASSERT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxNoUni, {1}), net::kCtrlOk);
  EXPECT_FALSE(deliver(Frame(60, 0, kDevMac)));
  ASSERT_EQ(rig.Ctrl(net::kCtrlRx, net::kCtrlRxNoUni, {0}), net::kCtrlOk);
  // VLAN: tagged frames need their VLAN added.
  auto tagged = Frame(64, 0, kDevMac);
  tagged[12] = 0x81;
  tagged[13] = 0x00;
  tagged[14] = 0x00;
  tagged[15] = 42;
  EXPECT_FALSE(deliver(tagged));
  ASSERT_EQ(rig.Ctrl(net::kCtrlVlan, net::kCtrlVlanAdd, Bytes<uint16_t>(42)),
            net::kCtrlOk);
  EXPECT_TRUE(deliver(tagged));
  EXPECT_EQ(rig.dev().stats(0).rx_filtered, 5u);
  // Reset restores promiscuous mode and the configured MAC.
  rig.dev().Reset();
  ASSERT_TRUE(rig.BringUp());
  EXPECT_TRUE(rig.dev().promisc());
}

TYPED_TEST(NetDeviceTest, MultiqueueSteering) {
  typename TestFixture::R rig({.max_pairs = 4});
  ASSERT_TRUE(rig.BringUp());
  ASSERT_EQ(rig.Ctrl(net::kCtrlMq, net::kCtrlMqVqPairsSet, Bytes<uint16_t>(4)),
            net::kCtrlOk);
  for (uint16_t p = 0; p < 4; ++p) rig.Post(p, 8, 2048);
  for (uint16_t p = 0; p < 4; ++p) {
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(
          rig.Send(p, {}, Frame(100 + p, static_cast<uint8_t>(10 * p + k)))
              .has_value());
    }
  }
  for (uint16_t p = 0; p < 4; ++p) rig.dev().ServiceBackend(p);
  for (uint16_t p = 0; p < 4; ++p) {
    for (int k = 0; k < 3; ++k) {
      auto pkt = nettest::ReapRx(rig.mem(), rig.rx(p));
      ASSERT_TRUE(pkt.has_value());
      EXPECT_EQ(pkt->frame, Frame(100 + p, static_cast<uint8_t>(10 * p + k)));
    }
    EXPECT_FALSE(rig.rx(p).ring().Reap().has_value());
    EXPECT_EQ(rig.dev().stats(p).tx_packets, 3u);
    EXPECT_EQ(rig.dev().stats(p).rx_packets, 3u);
    // Each pair's queue interrupts on its own index.
    EXPECT_GE(rig.irq().queue_signals(2 * p), 1u);
    EXPECT_GE(rig.irq().queue_signals(2 * p + 1), 1u);
  }
  EXPECT_EQ(rig.dev().total_stats().rx_packets, 12u);
}

TYPED_TEST(NetDeviceTest, ResetDropsHeldStateAndComesBack) {
  typename TestFixture::R rig;
  ASSERT_TRUE(rig.BringUp());
  ASSERT_TRUE(rig.Send(0, {}, Frame(9000)).has_value());
  rig.Post(0, 2, 1526);  // not enough: chains held
  EXPECT_EQ(rig.dev().rx_held(0), 2u);
  rig.dev().SetStatus(0);
  EXPECT_EQ(rig.dev().rx_held(0), 0u);
  EXPECT_EQ(rig.backend().guest_offloads(), 0u);
  ASSERT_TRUE(rig.BringUp());
  rig.Post(0, 8, 1526);
  rig.dev().ServiceBackend(0);
  auto p = nettest::ReapRx(rig.mem(), rig.rx(0));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, Frame(9000));
}

TYPED_TEST(NetDeviceTest, CreateValidatesOptions) {
  auto lo = LoopbackNet::Create({.num_pairs = 2});
  ASSERT_TRUE(lo.ok());
  testing::TestGuestMemory mem;
  testing::RecordingInterrupt irq;
  using Dev = typename TestFixture::Device;
  EXPECT_FALSE(Dev::Create(mem.map(), irq, **lo, {.max_pairs = 3}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, **lo, {.max_pairs = 0}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, **lo, {.queue_size = 1}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, **lo, {.mtu = 10}).ok());
  EXPECT_FALSE(
      Dev::Create(mem.map(), irq, **lo, {.max_pairs = 2, .ctrl_vq = false})
          .ok());
  EXPECT_TRUE(Dev::Create(mem.map(), irq, **lo, {.max_pairs = 2}).ok());
  EXPECT_FALSE(LoopbackNet::Create({.ring_bytes = 1000}).ok());
}

// --- Through the transports
// ---------------------------------------------------

struct MmioTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = MmioInterrupt<testing::RecordingIrqLine>;
};
struct PciTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = PciInterrupt<testing::MsiRecorder>;
};

template <typename Layout>
class NetTransportTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;
  using Ring = typename Layout::Driver;
  using Q = nettest::GuestQueue<Ring>;

  uint64_t Wanted() const {
    return kPacked ? ~uint64_t{0} : ~spec::Bit(spec::kFeatureRingPacked);
  }

  // tx `frame` on tx ring, rx it on rx ring; `kick(q)` notifies queue q,
  // `service()` polls the backend.
  template <typename Kick, typename Service>
  void Echo(testing::TestGuestMemory& mem, Q& tx, uint16_t txq, Q& rx,
            uint16_t rxq, Kick kick, Service service, uint32_t len) {
    const auto frame = Frame(len, static_cast<uint8_t>(len));
    net::Header h{net::kHdrFlagNeedsCsum, net::kGsoTcpV4, 54, 1448, 34, 16, 0};
    if (len < 2000) h = net::Header{};
    ASSERT_TRUE(nettest::AddTx(mem, tx, h, frame, 3));
    if (tx.ring().Kick()) kick(txq);
    auto used = tx.Reap();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->first.len, 0u);
    tx.Recycle(used->second);
    nettest::PostRx(rx, 48, 1526);
    if (rx.ring().Kick()) kick(rxq);
    service();
    auto p = nettest::ReapRx(mem, rx);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->frame, frame);
    EXPECT_EQ(p->hdr.gso_type, h.gso_type);
    EXPECT_EQ(p->hdr.gso_size, h.gso_size);
    EXPECT_EQ(tx.ring().device_error(), "");
    EXPECT_EQ(rx.ring().device_error(), "");
  }

  template <typename Kick>
  uint8_t Ctrl(testing::TestGuestMemory& mem, Q& q, uint16_t index, Kick kick,
               uint8_t cls, uint8_t cmd, const std::vector<uint8_t>& data) {
    const uint64_t g = q.Get(static_cast<uint32_t>(3 + data.size()));
    const uint8_t h[2] = {cls, cmd};
    mem.Write(g, h, 2);
    if (!data.empty()) mem.Write(g + 2, data.data(), data.size());
    mem.Fill(g + 2 + data.size(), 0xff, 1);
    q.Add({{g, static_cast<uint32_t>(2 + data.size()), false},
           {g + 2 + data.size(), 1, true}});
    if (q.ring().Kick()) kick(index);
    auto used = q.Reap();
    EXPECT_TRUE(used.has_value());
    if (!used) return 0xff;
    EXPECT_EQ(used->first.len, 1u);
    return mem.Load<uint8_t>(g + 2 + data.size());
  }
};
TYPED_TEST_SUITE(NetTransportTest, nettest::Layouts, nettest::LayoutNames);

TYPED_TEST(NetTransportTest, Mmio) {
  QuietLogs();
  testing::TestGuestMemory mem({{.gpa = 0x10000, .size = 16 << 20}});
  MmioTraits::Interrupt irq;
  auto lo = LoopbackNet::Create({});
  ASSERT_TRUE(lo.ok());
  using Dev = NetDevice<MmioTraits, LoopbackNet>;
  auto dev = Dev::Create(mem.map(), irq, **lo,
                         {.mac = kDevMac, .queue_size = 64, .mtu = 9000});
  ASSERT_TRUE(dev.ok()) << dev.status();
  MmioTransport<Dev> mmio(**dev);
  testing::MmioDriver driver(mmio);
  ASSERT_TRUE(driver.Probe().ok());
  EXPECT_EQ(driver.device_id(), spec::kDeviceIdNet);
  ASSERT_TRUE(driver.Reset().ok());
  auto f = driver.Negotiate(this->Wanted());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(*f & spec::Bit(net::kFeatureMrgRxbuf));
  EXPECT_FALSE(*f & spec::Bit(net::kFeatureMq));
  uint8_t mac[6];
  ASSERT_TRUE(driver.ReadConfig(0, mac, 6).ok());
  EXPECT_EQ(0, std::memcmp(mac, kDevMac.data(), 6));
  EXPECT_EQ(*driver.template ReadConfigField<uint16_t>(6), net::kStatusLinkUp);
  EXPECT_EQ(*driver.template ReadConfigField<uint16_t>(10), 9000);
  // Wanted() takes every offered feature, IN_ORDER included.
  const testing::DriverOptions dopt{
      .event_idx = true, .indirect = true, .in_order = true};
  typename TestFixture::Ring r0(mem, 64, dopt), r1(mem, 64, dopt),
      r2(mem, 16, dopt);
  typename TestFixture::Q rx(mem, r0), tx(mem, r1), ctrl(mem, r2);
  ASSERT_TRUE(driver.SetUpQueue(0, r0.config()).ok());
  ASSERT_TRUE(driver.SetUpQueue(1, r1.config()).ok());
  ASSERT_TRUE(driver.SetUpQueue(2, r2.config()).ok());
  ASSERT_TRUE(driver.DriverOk().ok());
  auto kick = [&](uint16_t q) { driver.Kick(q); };
  auto service = [&] { (*dev)->ServiceBackend(0); };
  for (uint32_t len : {14u, 60u, 1514u, 9000u, 65550u}) {
    this->Echo(mem, tx, 1, rx, 0, kick, service, len);
  }
  EXPECT_EQ(driver.HandleInterrupt() & kMmioInterruptUsedBuffer,
            kMmioInterruptUsedBuffer);
  EXPECT_EQ(
      this->Ctrl(mem, ctrl, 2, kick, net::kCtrlRx, net::kCtrlRxPromisc, {0}),
      net::kCtrlOk);
  EXPECT_FALSE((*dev)->promisc());
  // Link down: a configuration-change interrupt and a new generation.
  driver.HandleInterrupt();
  const uint32_t gen = driver.config_generation();
  (*dev)->SetLinkUp(false);
  EXPECT_EQ(driver.HandleInterrupt(), kMmioInterruptConfigChange);
  EXPECT_NE(driver.config_generation(), gen);
  EXPECT_EQ(*driver.template ReadConfigField<uint16_t>(6), 0);
  EXPECT_FALSE((*dev)->needs_reset());
  ASSERT_TRUE(driver.Reset().ok());
  EXPECT_FALSE((*dev)->queue_enabled(0));
}

TYPED_TEST(NetTransportTest, PciMultiqueue) {
  QuietLogs();
  testing::TestGuestMemory mem({{.gpa = 0x10000, .size = 16 << 20}});
  testing::MsiRecorder sink;
  PciTraits::Interrupt irq(sink, 5);
  auto lo = LoopbackNet::Create({.num_pairs = 2});
  ASSERT_TRUE(lo.ok());
  using Dev = NetDevice<PciTraits, LoopbackNet>;
  auto dev = Dev::Create(mem.map(), irq, **lo,
                         {.mac = kDevMac, .max_pairs = 2, .queue_size = 64});
  ASSERT_TRUE(dev.ok()) << dev.status();
  PciTransport<Dev> pci(**dev);
  testing::PciDriver driver(pci);
  ASSERT_TRUE(driver.Probe()) << driver.error();
  ASSERT_TRUE(driver.Negotiate(this->Wanted())) << driver.error();
  EXPECT_EQ(driver.num_queues(), 5);
  uint16_t pairs = 0;
  ASSERT_TRUE(driver.ReadDeviceConfig(8, &pairs, 2));
  EXPECT_EQ(pairs, 2);
  // Wanted() takes every offered feature, IN_ORDER included.
  const testing::DriverOptions dopt{
      .event_idx = true, .indirect = true, .in_order = true};
  std::vector<std::unique_ptr<typename TestFixture::Ring>> rings;
  std::vector<std::unique_ptr<typename TestFixture::Q>> qs;
  for (uint16_t q = 0; q < 5; ++q) {
    rings.push_back(
        std::make_unique<typename TestFixture::Ring>(mem, 64, dopt));
    qs.push_back(std::make_unique<typename TestFixture::Q>(mem, *rings.back()));
    ASSERT_TRUE(driver.SetUpQueue(q, rings.back()->config()) &&
                driver.EnableQueue(q))
        << driver.error();
  }
  ASSERT_TRUE(driver.DriverOk()) << driver.error();
  auto kick = [&](uint16_t q) { driver.Kick(q); };
  EXPECT_EQ(this->Ctrl(mem, *qs[4], 4, kick, net::kCtrlMq,
                       net::kCtrlMqVqPairsSet, Bytes<uint16_t>(2)),
            net::kCtrlOk);
  EXPECT_EQ((*lo)->active_pairs(), 2);
  // Pair 1 (queues 2, 3): its interrupts go to vectors 3 and 4.
  sink.Clear();
  this->Echo(
      mem, *qs[3], 3, *qs[2], 2, kick, [&] { (*dev)->ServiceBackend(1); },
      3000);
  EXPECT_GE(sink.Count(testing::MsiAddress(3), testing::MsiData(3)), 1u);
  EXPECT_GE(sink.Count(testing::MsiAddress(4), testing::MsiData(4)), 1u);
  EXPECT_EQ(sink.Count(testing::MsiAddress(1), testing::MsiData(1)), 0u);
  EXPECT_EQ((*dev)->stats(0).tx_packets, 0u);
  this->Echo(
      mem, *qs[1], 1, *qs[0], 0, kick, [&] { (*dev)->ServiceBackend(0); }, 100);
  EXPECT_GE(sink.Count(testing::MsiAddress(1), testing::MsiData(1)), 1u);
  // Link change → the config vector (0).
  sink.Clear();
  (*dev)->SetLinkUp(false);
  EXPECT_EQ(sink.Count(testing::MsiAddress(0), testing::MsiData(0)), 1u);
  uint16_t status = 0xffff;
  ASSERT_TRUE(driver.ReadDeviceConfig(6, &status, 2));
  EXPECT_EQ(status, 0);
  EXPECT_FALSE((*dev)->needs_reset());
}

}  // namespace
}  // namespace virtio
