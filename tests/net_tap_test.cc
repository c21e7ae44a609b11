// virtio-net on a real TAP interface, end to end: the test makes a network
// namespace, creates a TAP with IFF_VNET_HDR in it, and moves frames between
// the guest side (driver-side harness → NetDevice → TapNet) and the host
// side (an AF_PACKET socket and UDP sockets on the interface), including a
// partially checksummed UDP packet from the guest that the host kernel
// accepts only because the NEEDS_CSUM offload header came through, and a
// host UDP packet that arrives in the guest with NEEDS_CSUM because the
// guest negotiated GUEST_CSUM (TUNSETOFFLOAD). Skipped, with the reason,
// when /dev/net/tun, CAP_NET_ADMIN or unshare(CLONE_NEWNET) is unavailable.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "net_test_util.h"
#include "virtio/backends/tap_net.h"

namespace virtio {
namespace {

using nettest::kDevMac;

constexpr char kIfName[] = "vtap0";
constexpr uint16_t kEtherTypeTest = 0x88b5;  // IEEE local experimental
constexpr uint32_t kHostIp = 0x0a000001;     // 10.0.0.1
constexpr uint32_t kGuestIp = 0x0a000002;    // 10.0.0.2

struct Env {
  std::string skip;  // non-empty: why the test cannot run here
  std::unique_ptr<TapNet> tap;
  int packet_fd = -1;  // AF_PACKET bound to the TAP
  int udp_fd = -1;     // UDP socket bound to 10.0.0.1:7000
  int send_fd = -1;    // unbound UDP socket (sockets stay in their netns)
  int ifindex = 0;
  ~Env() {
    if (packet_fd >= 0) close(packet_fd);
    if (udp_fd >= 0) close(udp_fd);
    if (send_fd >= 0) close(send_fd);
  }
};

std::string Err(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

sockaddr_in Inet(uint32_t ip, uint16_t port = 0) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  a.sin_port = htons(port);
  return a;
}

// Runs on its own thread: the namespace change stays with that thread, the
// fds it creates keep the namespace alive.
void SetUpInNamespace(Env* env) {
  if (access("/dev/net/tun", R_OK | W_OK) != 0) {
    env->skip = Err("/dev/net/tun not usable");
    return;
  }
  if (unshare(CLONE_NEWNET) != 0) {
    env->skip = Err("unshare(CLONE_NEWNET) (needs CAP_SYS_ADMIN)");
    return;
  }
  auto tap = TapNet::Open({.name = kIfName});
  if (!tap.ok()) {
    env->skip = "cannot create a TAP (needs CAP_NET_ADMIN): " +
                std::string(tap.status().message());
    return;
  }
  env->tap = std::move(*tap);
  // No IPv6 chatter (router solicitations, MLD) on the test interface.
  if (FILE* f = std::fopen("/proc/sys/net/ipv6/conf/vtap0/disable_ipv6", "w")) {
    std::fputs("1", f);
    std::fclose(f);
  }
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, kIfName, IFNAMSIZ - 1);
  sockaddr_in addr = Inet(kHostIp);
  std::memcpy(&ifr.ifr_addr, &addr, sizeof addr);
  if (ioctl(s, SIOCSIFADDR, &ifr) != 0) env->skip = Err("SIOCSIFADDR");
  sockaddr_in mask = Inet(0xffffff00);
  std::memcpy(&ifr.ifr_netmask, &mask, sizeof mask);
  if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) env->skip = Err("SIOCSIFNETMASK");
  ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) env->skip = Err("SIOCSIFFLAGS up");
  // The guest's address is resolved statically: no ARP round trip needed.
  arpreq arp{};
  sockaddr_in gip = Inet(kGuestIp);
  std::memcpy(&arp.arp_pa, &gip, sizeof gip);
  arp.arp_ha.sa_family = ARPHRD_ETHER;
  std::memcpy(arp.arp_ha.sa_data, kDevMac.data(), 6);
  arp.arp_flags = ATF_COM | ATF_PERM;
  std::strncpy(arp.arp_dev, kIfName, sizeof arp.arp_dev - 1);
  if (ioctl(s, SIOCSARP, &arp) != 0) env->skip = Err("SIOCSARP");
  close(s);
  env->ifindex = static_cast<int>(if_nametoindex(kIfName));
  env->packet_fd =
      socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_ALL);
  ll.sll_ifindex = env->ifindex;
  if (env->packet_fd < 0 ||
      bind(env->packet_fd, reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0) {
    env->skip = Err("AF_PACKET socket");
  }
  env->udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in local = Inet(kHostIp, 7000);
  if (env->udp_fd < 0 ||
      bind(env->udp_fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    env->skip = Err("UDP socket");
  }
  env->send_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

bool WaitReadable(int fd, int ms = 2000) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

uint16_t Checksum(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

// An IPv4/UDP frame from the guest (10.0.0.2:6000) to 10.0.0.1:7000.
std::vector<uint8_t> UdpFrame(const std::array<uint8_t, 6>& dst_mac,
                              const std::string& payload, uint16_t udp_csum) {
  const uint16_t udp_len = static_cast<uint16_t>(8 + payload.size());
  const uint16_t ip_len = static_cast<uint16_t>(20 + udp_len);
  std::vector<uint8_t> f(14 + ip_len);
  std::memcpy(f.data(), dst_mac.data(), 6);
  std::memcpy(f.data() + 6, kDevMac.data(), 6);
  f[12] = 0x08;
  f[13] = 0x00;
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;
  ip[2] = ip_len >> 8;
  ip[3] = ip_len & 0xff;
  ip[8] = 64;
  ip[9] = 17;
  const uint32_t src = htonl(kGuestIp), dst = htonl(kHostIp);
  std::memcpy(ip + 12, &src, 4);
  std::memcpy(ip + 16, &dst, 4);
  const uint16_t hc = static_cast<uint16_t>(~Checksum(ip, 20));
  ip[10] = hc >> 8;
  ip[11] = hc & 0xff;
  uint8_t* udp = ip + 20;
  udp[0] = 6000 >> 8;
  udp[1] = 6000 & 0xff;
  udp[2] = 7000 >> 8;
  udp[3] = 7000 & 0xff;
  udp[4] = udp_len >> 8;
  udp[5] = udp_len & 0xff;
  udp[6] = udp_csum >> 8;
  udp[7] = udp_csum & 0xff;
  std::memcpy(udp + 8, payload.data(), payload.size());
  return f;
}

template <typename Layout>
class NetTapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::thread t(SetUpInNamespace, &env_);
    t.join();
    if (!env_.skip.empty()) GTEST_SKIP() << env_.skip;
  }
  Env env_;
};
TYPED_TEST_SUITE(NetTapTest, nettest::Layouts, nettest::LayoutNames);

TYPED_TEST(NetTapTest, FramesBothWaysAndChecksumOffload) {
  Env& env = this->env_;
  nettest::Rig<TypeParam, TapNet> rig(*env.tap, NetDeviceOptions{});
  ASSERT_TRUE(rig.BringUp());
  EXPECT_TRUE(rig.features() & spec::Bit(net::kFeatureCsum));
  EXPECT_TRUE(rig.features() & spec::Bit(net::kFeatureGuestCsum));
  auto& dev = rig.dev();

  // Guest → host: a raw frame, split over several descriptors.
  const std::array<uint8_t, 6> bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  auto frame = nettest::Frame(600, 3, bcast);
  std::memcpy(frame.data() + 6, kDevMac.data(), 6);
  frame[12] = kEtherTypeTest >> 8;
  frame[13] = kEtherTypeTest & 0xff;
  ASSERT_TRUE(rig.Send(0, {}, frame, 4).has_value());
  EXPECT_EQ(dev.stats(0).tx_packets, 1u);
  bool seen = false;
  std::vector<uint8_t> buf(70000);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!seen && std::chrono::steady_clock::now() < deadline) {
    if (!WaitReadable(env.packet_fd, 200)) continue;
    const ssize_t n = recv(env.packet_fd, buf.data(), buf.size(), 0);
    if (n == static_cast<ssize_t>(frame.size()) &&
        std::memcmp(buf.data(), frame.data(), frame.size()) == 0) {
      seen = true;
    }
  }
  EXPECT_TRUE(seen) << "frame from the guest never reached the host side";

  // Host → guest: a raw frame sent on the interface.
  rig.Post(0, 16, 2048);
  auto back = nettest::Frame(300, 9, kDevMac);
  back[12] = kEtherTypeTest >> 8;
  back[13] = kEtherTypeTest & 0xff;
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = env.ifindex;
  to.sll_halen = 6;
  std::memcpy(to.sll_addr, kDevMac.data(), 6);
  ASSERT_EQ(sendto(env.packet_fd, back.data(), back.size(), 0,
                   reinterpret_cast<sockaddr*>(&to), sizeof to),
            static_cast<ssize_t>(back.size()))
      << std::strerror(errno);
  auto receive_matching = [&](auto pred) -> std::optional<nettest::RxPacket> {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < end) {
      WaitReadable(env.tap->pair(0).fd(), 200);
      dev.ServiceBackend(0);
      while (auto p = nettest::ReapRx(rig.mem(), rig.rx(0))) {
        rig.Post(0, 1, 2048);
        if (pred(*p)) return p;
      }
    }
    return std::nullopt;
  };
  auto got = receive_matching([&](const nettest::RxPacket& p) { return p.frame == back; });
  ASSERT_TRUE(got.has_value()) << "frame from the host never reached the guest";
  EXPECT_EQ(got->hdr.num_buffers, 1);

  // Guest → host kernel: UDP with a deliberately wrong checksum field and
  // NEEDS_CSUM: accepted because the offload header came through.
  const std::string payload = "checksum offloaded by the host";
  auto udp = UdpFrame(kDevMac, payload, 0x1234);
  const net::Header csum{net::kHdrFlagNeedsCsum, net::kGsoNone, 0, 0,
                         14 + 20, 6, 0};
  // The kernel's ARP for 10.0.0.2 is static; the destination MAC must be the
  // TAP's own, which the kernel reports via SIOCGIFHWADDR.
  {
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, kIfName, IFNAMSIZ - 1);
    ASSERT_EQ(ioctl(env.packet_fd, SIOCGIFHWADDR, &ifr), 0) << std::strerror(errno);
    std::memcpy(udp.data(), ifr.ifr_hwaddr.sa_data, 6);
  }
  ASSERT_TRUE(rig.Send(0, csum, udp, 2).has_value());
  ASSERT_TRUE(WaitReadable(env.udp_fd)) << "UDP with NEEDS_CSUM not delivered";
  char rbuf[256];
  const ssize_t rn = recv(env.udp_fd, rbuf, sizeof rbuf, 0);
  ASSERT_EQ(rn, static_cast<ssize_t>(payload.size()));
  EXPECT_EQ(std::string(rbuf, rn), payload);
  // The same packet without NEEDS_CSUM has a bad checksum: dropped by the
  // kernel (proves the header really was honoured above).
  ASSERT_TRUE(rig.Send(0, {}, udp, 2).has_value());
  EXPECT_FALSE(WaitReadable(env.udp_fd, 300));

  // Host kernel → guest: with GUEST_CSUM the TAP hands partial checksums
  // through (TUNSETOFFLOAD), so the guest sees NEEDS_CSUM.
  sockaddr_in gaddr = Inet(kGuestIp, 6000);
  const std::string msg = "hello guest";
  ASSERT_EQ(sendto(env.send_fd, msg.data(), msg.size(), 0,
                   reinterpret_cast<sockaddr*>(&gaddr), sizeof gaddr),
            static_cast<ssize_t>(msg.size()))
      << std::strerror(errno);
  got = receive_matching([&](const nettest::RxPacket& p) {
    return p.frame.size() >= 42 + msg.size() && p.frame[23] == 17 &&
           std::memcmp(p.frame.data() + 42, msg.data(), msg.size()) == 0;
  });
  ASSERT_TRUE(got.has_value()) << "UDP from the host never reached the guest";
  EXPECT_EQ(got->hdr.flags & net::kHdrFlagNeedsCsum, net::kHdrFlagNeedsCsum);
  EXPECT_EQ(got->hdr.csum_start, 34);
  EXPECT_EQ(got->hdr.csum_offset, 6);
  EXPECT_FALSE(dev.needs_reset());
  EXPECT_EQ(env.tap->pair(0).send_errors(), 0u);
}

TYPED_TEST(NetTapTest, WithoutGuestCsumKernelChecksumsForTheGuest) {
  Env& env = this->env_;
  nettest::Rig<TypeParam, TapNet> rig(*env.tap, NetDeviceOptions{});
  ASSERT_TRUE(rig.BringUp(~net::kGuestOffloadFeatures &
                          ~spec::Bit(net::kFeatureCtrlGuestOffloads)));
  rig.Post(0, 16, 2048);
  sockaddr_in gaddr = Inet(kGuestIp, 6000);
  const std::string msg = "checksummed";
  ASSERT_GT(sendto(env.send_fd, msg.data(), msg.size(), 0,
                   reinterpret_cast<sockaddr*>(&gaddr), sizeof gaddr),
            0);
  std::optional<nettest::RxPacket> got;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!got && std::chrono::steady_clock::now() < end) {
    WaitReadable(rig.backend().pair(0).fd(), 200);
    rig.dev().ServiceBackend(0);
    while (auto p = nettest::ReapRx(rig.mem(), rig.rx(0))) {
      rig.Post(0, 1, 2048);
      if (p->frame.size() > 42 && p->frame[23] == 17) got = p;
    }
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->hdr.flags, 0);
  // The UDP checksum is complete: over pseudo-header + UDP it sums to 0xffff.
  const uint8_t* ip = got->frame.data() + 14;
  const uint16_t udp_len = static_cast<uint16_t>((ip[24] << 8) | ip[25]);
  uint32_t pseudo = Checksum(ip + 12, 8) + 17 + udp_len;
  EXPECT_EQ(Checksum(ip + 20, udp_len, pseudo), 0xffff);
}

TEST(TapNetTest, MultiQueueAttachDetach) {
  Env env;
  std::string skip;
  std::unique_ptr<TapNet> mq;
  std::thread t([&] {
    SetUpInNamespace(&env);
    if (!env.skip.empty()) return;
    auto tap = TapNet::Open({.name = "vtapmq", .num_pairs = 4});
    if (!tap.ok()) {
      skip = std::string(tap.status().message());
      return;
    }
    mq = std::move(*tap);
  });
  t.join();
  if (!env.skip.empty()) GTEST_SKIP() << env.skip;
  if (!skip.empty()) GTEST_SKIP() << "no multi-queue TAP: " << skip;
  EXPECT_TRUE(mq->multi_queue());
  EXPECT_EQ(mq->num_pairs(), 4);
  EXPECT_EQ(mq->name(), "vtapmq");
  EXPECT_TRUE(mq->SetActivePairs(1));
  EXPECT_TRUE(mq->SetActivePairs(4));
  EXPECT_TRUE(mq->SetActivePairs(2));
  EXPECT_FALSE(mq->SetActivePairs(0));
  EXPECT_FALSE(mq->SetActivePairs(5));
  EXPECT_TRUE(mq->SetOffloads(net::kGuestOffloadFeatures & mq->offloads()));
  EXPECT_TRUE(mq->SetOffloads(0));
  EXPECT_FALSE(TapNet::Open({.name = std::string(40, 'x')}).ok());
}

}  // namespace
}  // namespace virtio
