// NullNet and GeneratorNet (the benchmark backends) under a NetDevice, on
// split and packed rings.
#include <poll.h>

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "net_test_util.h"
#include "virtio/backends/generator_net.h"
#include "virtio/backends/null_net.h"
#include "virtio/net_device.h"

namespace virtio {
namespace {

using nettest::Frame;
using nettest::RxPacket;

template <typename Layout>
class NetBenchBackendsTest : public ::testing::Test {};
TYPED_TEST_SUITE(NetBenchBackendsTest, nettest::Layouts, nettest::LayoutNames);

TEST(NullNetTest, RejectsZeroPairs) {
  EXPECT_FALSE(NullNet::Create({.num_pairs = 0}).ok());
}

TEST(GeneratorNetTest, RejectsBadOptions) {
  EXPECT_FALSE(GeneratorNet::Create({.num_pairs = 0}).ok());
  EXPECT_FALSE(GeneratorNet::Create({.frame_len = 13}).ok());
  EXPECT_FALSE(
      GeneratorNet::Create({.frame_len = net::kMaxFrameSize + 1}).ok());
  EXPECT_FALSE(GeneratorNet::Create({.burst = 0}).ok());
  EXPECT_TRUE(GeneratorNet::Create({.frame_len = 14}).ok());
}

TEST(GeneratorNetTest, FrameIsEthernetIpv4UdpWithValidChecksum) {
  auto g = GeneratorNet::Create({.frame_len = 64});
  ASSERT_TRUE(g.ok()) << g.status();
  const std::vector<uint8_t>& f = (*g)->frame();
  ASSERT_EQ(f.size(), 64u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f[i], 0xff);
  EXPECT_EQ(f[6], 0x02);
  EXPECT_EQ(f[12], 0x08);
  EXPECT_EQ(f[13], 0x00);
  EXPECT_EQ(f[14], 0x45);
  EXPECT_EQ(f[14 + 9], 17);                          // UDP
  EXPECT_EQ(f[16] << 8 | f[17], 64 - 14);            // IP total length
  EXPECT_EQ(f[14 + 24] << 8 | f[14 + 25], 64 - 34);  // UDP length
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += f[14 + i] << 8 | f[14 + i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  EXPECT_EQ(sum, 0xffffu) << "IPv4 header checksum does not verify";
}

TEST(GeneratorNetTest, ReceiveHonoursBurstRefusalAndLimit) {
  auto g = GeneratorNet::Create({.frame_len = 60, .burst = 8, .limit = 20});
  ASSERT_TRUE(g.ok());
  GeneratorNet::Pair& p = (*g)->pair(0);
  uint32_t calls = 0;
  auto take_all = [&](const NetRxPacket& pkt) {
    EXPECT_EQ(pkt.frame_len, 60u);
    EXPECT_EQ(pkt.iovcnt, 1u);
    EXPECT_EQ(pkt.header, nullptr);
    ++calls;
    return true;
  };
  EXPECT_EQ(p.Receive(take_all), 8u);  // at most a burst per call
  // A refused packet is not counted and is offered again next time.
  uint32_t offered = 0;
  EXPECT_EQ(p.Receive([&](const NetRxPacket&) { return ++offered < 3; }), 2u);
  EXPECT_EQ(offered, 3u);
  EXPECT_EQ(p.generated(), 10u);
  EXPECT_EQ(p.Receive(take_all), 8u);
  EXPECT_EQ(p.Receive(take_all), 2u);  // the limit of 20
  EXPECT_EQ(p.Receive(take_all), 0u);
  EXPECT_EQ(p.generated(), 20u);
}

TEST(GeneratorNetTest, FdIsAlwaysReadableUnlessDisabled) {
  auto g = GeneratorNet::Create({.num_pairs = 2});
  ASSERT_TRUE(g.ok());
  for (uint16_t i = 0; i < 2; ++i) {
    const int fd = (*g)->pair(i).fd();
    ASSERT_GE(fd, 0);
    for (int round = 0; round < 2; ++round) {
      pollfd pfd{.fd = fd, .events = POLLIN, .revents = 0};
      ASSERT_EQ(poll(&pfd, 1, 0), 1);
      EXPECT_TRUE(pfd.revents & POLLIN);
    }
  }
  auto quiet = GeneratorNet::Create({.eventfd = false});
  ASSERT_TRUE(quiet.ok());
  EXPECT_EQ((*quiet)->pair(0).fd(), -1);
}

TYPED_TEST(NetBenchBackendsTest, NullNetDropsEveryTransmittedPacket) {
  auto sink = NullNet::Create({});
  ASSERT_TRUE(sink.ok());
  nettest::Rig<TypeParam, NullNet> rig(**sink, {});
  ASSERT_TRUE(rig.BringUp());
  EXPECT_EQ(rig.dev().device_features() & net::kOffloadFeatures, 0u);
  for (uint32_t i = 0; i < 100; ++i) {
    auto len =
        rig.Send(0, net::Header{}, Frame(60 + i, static_cast<uint8_t>(i)));
    ASSERT_TRUE(len.has_value()) << "tx chain " << i << " not returned";
    EXPECT_EQ(*len, 0u);
  }
  EXPECT_EQ((*sink)->pair(0).packets(), 100u);
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < 100; ++i) bytes += 60 + i;
  EXPECT_EQ((*sink)->pair(0).bytes(), bytes);
  EXPECT_EQ(rig.dev().stats(0).tx_packets, 100u);
  EXPECT_EQ(rig.dev().stats(0).tx_dropped, 0u);
  // Nothing ever arrives.
  rig.Post(0, 8, 2048);
  EXPECT_FALSE(rig.Receive(0).has_value());
  EXPECT_EQ(rig.dev().stats(0).rx_packets, 0u);
}

TYPED_TEST(NetBenchBackendsTest, GeneratorFillsEveryPostedBuffer) {
  auto gen = GeneratorNet::Create({.frame_len = 64});
  ASSERT_TRUE(gen.ok());
  nettest::Rig<TypeParam, GeneratorNet> rig(**gen, {});
  ASSERT_TRUE(rig.BringUp());
  const std::vector<uint8_t> want = (*gen)->frame();
  uint64_t received = 0;
  for (int round = 0; round < 5; ++round) {
    // The rx kick alone delivers: a frame into each buffer posted.
    ASSERT_EQ(rig.Post(0, 40, 2048), 40u);
    for (int i = 0; i < 40; ++i) {
      auto p = nettest::ReapRx(rig.mem(), rig.rx(0));
      ASSERT_TRUE(p.has_value()) << "round " << round << " packet " << i;
      EXPECT_EQ(p->frame, want);
      EXPECT_EQ(p->hdr.flags, 0);
      EXPECT_EQ(p->hdr.gso_type, net::kGsoNone);
      ++received;
    }
    // No more than the buffers posted, and no packet lost to the stall.
    EXPECT_FALSE(nettest::ReapRx(rig.mem(), rig.rx(0)).has_value());
  }
  EXPECT_EQ(rig.dev().stats(0).rx_packets, received);
  EXPECT_EQ(rig.dev().stats(0).rx_dropped, 0u);
  EXPECT_EQ((*gen)->pair(0).generated(), received);
  // Servicing with no buffers posted generates nothing.
  rig.dev().ServiceBackend(0);
  EXPECT_EQ((*gen)->pair(0).generated(), received);
  // Transmit goes nowhere.
  auto len = rig.Send(0, net::Header{}, Frame(100));
  ASSERT_TRUE(len.has_value());
  EXPECT_EQ((*gen)->pair(0).sent(), 1u);
}

TYPED_TEST(NetBenchBackendsTest, GeneratorServicedAfterBudgetResumes) {
  // More buffers than one receive pass delivers (rx_batch 8, 4 rounds):
  // the rest is delivered when the glue services the pair again, as the
  // daemon does on the always-readable fd.
  auto gen = GeneratorNet::Create({.frame_len = 128});
  ASSERT_TRUE(gen.ok());
  NetDeviceOptions o;
  o.rx_batch = 8;
  nettest::Rig<TypeParam, GeneratorNet> rig(**gen, o);
  ASSERT_TRUE(rig.BringUp());
  ASSERT_EQ(rig.Post(0, 64, 256), 64u);
  EXPECT_EQ((*gen)->pair(0).generated(), 32u);
  rig.dev().ServiceBackend(0);
  rig.dev().ServiceBackend(0);
  rig.dev().ServiceBackend(0);
  EXPECT_EQ((*gen)->pair(0).generated(), 64u);
  uint32_t n = 0;
  while (nettest::ReapRx(rig.mem(), rig.rx(0))) ++n;
  EXPECT_EQ(n, 64u);
}

// What QEMU's vhost-user net sends its backend: control-queue features
// without CTRL_VQ (it keeps the control queue) and without STATUS.
TYPED_TEST(NetBenchBackendsTest, RelaxedCtrlDependenciesAcceptQemuFeatures) {
  const uint64_t qemu_like =
      nettest::AllNetFeatures() &
      ~(spec::Bit(net::kFeatureCtrlVq) | spec::Bit(net::kFeatureStatus));
  for (bool relaxed : {false, true}) {
    auto sink = NullNet::Create({.num_pairs = 2});
    ASSERT_TRUE(sink.ok());
    NetDeviceOptions o;
    o.max_pairs = 2;
    o.relaxed_ctrl_dependencies = relaxed;
    nettest::Rig<TypeParam, NullNet> rig(**sink, o);
    // Rig negotiates want & offered: offered has CTRL_VQ, want does not.
    EXPECT_EQ(rig.BringUp(qemu_like), relaxed) << "relaxed=" << relaxed;
    if (!relaxed) continue;
    // Both pairs run; no VLAN filtering without a control queue, so a
    // tagged frame is not refused; announce is off.
    EXPECT_FALSE(rig.dev().Announce());
    for (uint16_t pair = 0; pair < 2; ++pair) {
      auto len = rig.Send(pair, net::Header{}, Frame(80));
      ASSERT_TRUE(len.has_value()) << "pair " << pair;
      EXPECT_EQ((*sink)->pair(pair).packets(), 1u);
    }
  }
  // The offload rules still hold in relaxed mode.
  auto sink = NullNet::Create({.offloads = net::kOffloadFeatures});
  ASSERT_TRUE(sink.ok());
  NetDeviceOptions o;
  o.relaxed_ctrl_dependencies = true;
  nettest::Rig<TypeParam, NullNet> rig(**sink, o);
  EXPECT_FALSE(rig.BringUp(spec::Bit(net::kFeatureHostTso4) |
                           spec::Bit(spec::kFeatureVersion1) |
                           spec::Bit(spec::kFeatureRingPacked)));
}

}  // namespace
}  // namespace virtio
