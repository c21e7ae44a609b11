// vhost-user protocol, device adapter and daemon, driven by an in-process
// front-end over a socketpair / Unix socket with memfd guest memory.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <thread>

#include "absl/strings/str_format.h"
#include "blk_test_util.h"
#include "device_spec.h"
#include "frontend.h"
#include "gtest/gtest.h"
#include "session.h"
#include "vhost_user/backend.h"
#include "vhost_user/connection.h"
#include "vhost_user/device_adapter.h"
#include "vhost_user/interrupt.h"
#include "vhost_user/server.h"
#include "virtio/blk_spec.h"
#include "virtio/net_spec.h"
#include "virtio/spec.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/test_memory.h"

namespace vhost_user::testing {
namespace {

namespace spec = virtio::spec;

constexpr uint64_t kVersion1 = uint64_t{1} << spec::kFeatureVersion1;
constexpr uint64_t kGpa = 0x100000;
constexpr uint64_t kMemSize = 1 << 20;

std::unique_ptr<VhostDevice> Make(const std::string& text) {
  auto s = ParseDeviceSpec(text);
  EXPECT_TRUE(s.ok()) << s.status();
  auto d = MakeDevice(*s);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

// Feature and protocol negotiation as QEMU does it.
void Negotiate(Frontend& f, uint64_t extra_features = 0,
               uint64_t protocol = Bit(kProtocolReplyAck) |
                                   Bit(kProtocolConfig)) {
  auto features = f.GetU64(kGetFeatures);
  ASSERT_TRUE(features);
  ASSERT_TRUE(*features & Bit(kFeatureProtocolFeatures));
  auto pf = f.GetU64(kGetProtocolFeatures);
  ASSERT_TRUE(pf);
  ASSERT_EQ(*pf & protocol, protocol);
  ASSERT_TRUE(f.Send(kSetProtocolFeatures, protocol));
  ASSERT_TRUE(f.Send(kSetOwner));
  ASSERT_TRUE(
      f.Send(kSetFeatures, uint64_t{kVersion1 | Bit(kFeatureProtocolFeatures) |
                                    (extra_features & *features)}));
}

// Reads 64 random bytes through a rng served over `s`, on a split ring
// of `ring_size` entries.
void RngRoundTrip(Session& s, uint16_t ring_size = 16) {
  SharedMemory mem(kGpa, ring_size > 1024 ? 4 * kMemSize : kMemSize);
  SplitRing ring(mem, ring_size);
  Frontend& f = s.f();
  Negotiate(f);
  ASSERT_TRUE(f.SetMemTable(mem));
  UniqueFd kick, call;
  ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
  const uint64_t buf = mem.Alloc(64);
  ring.Add({{buf, 64, true}});
  ASSERT_TRUE(SignalFd(kick.get()));
  ASSERT_TRUE(WaitEvent(call.get()));
  auto used = ring.Reap();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->second, 64u);
  const std::vector<uint8_t> zero(64, 0);
  EXPECT_NE(std::memcmp(mem.host(buf), zero.data(), 64), 0);
  // GET_VRING_BASE stops the ring and reports the next avail index.
  ASSERT_TRUE(f.Send(kGetVringBase, VringState{0, 0}));
  auto r = f.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->As<VringState>().num, 1u);
}

TEST(VhostUserRng, ReadsEntropy) {
  auto dev = Make("rng");
  const int fds = CountOpenFds();
  {
    Session s(*dev);
    RngRoundTrip(s);
    EXPECT_TRUE(s.Finish().ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(dev->status(), 0);  // reset at disconnect
  EXPECT_EQ(dev->memory().num_regions(), 0u);
}

TEST(VhostUserRng, ServesManyConnectionsInTurn) {
  auto dev = Make("rng");
  for (int i = 0; i < 3; ++i) {
    Session s(*dev);
    RngRoundTrip(s);
    EXPECT_TRUE(s.Finish().ok());
  }
}

TEST(VhostUserProtocol, AdvertisesOnlyImplementedFeatures) {
  auto dev = Make("blk,backend=ram,size=1M,num-queues=2");
  Session s(*dev);
  auto pf = s.f().GetU64(kGetProtocolFeatures);
  ASSERT_TRUE(pf);
  EXPECT_EQ(*pf, kImplementedProtocolFeatures);
  EXPECT_TRUE(*pf & Bit(kProtocolInflightShmfd));
  EXPECT_TRUE(*pf & Bit(kProtocolLogShmfd));
  EXPECT_TRUE(*pf & Bit(kProtocolBackendSendFd));
  auto qn = s.f().GetU64(kGetQueueNum);
  ASSERT_TRUE(qn);
  EXPECT_EQ(*qn, 2u);
  ASSERT_TRUE(s.f().Send(kSetProtocolFeatures, *pf));
  auto slots = s.f().GetU64(kGetMaxMemSlots);
  ASSERT_TRUE(slots);
  EXPECT_EQ(*slots, 509u);
  EXPECT_TRUE(s.Finish().ok());
}

TEST(VhostUserProtocol, ReplyAckAndConfig) {
  auto dev = Make("blk,backend=ram,size=1M");
  Session s(*dev);
  Frontend& f = s.f();
  Negotiate(f);
  ASSERT_TRUE(f.SendRaw(kSetOwner, nullptr, 0, {}, kVersion | kFlagNeedReply));
  auto ack = f.Receive();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->header.request, kSetOwner);
  EXPECT_EQ(ack->As<uint64_t>(), 0u);
  // GET_CONFIG of the capacity (first 8 bytes), and past the end (zeros).
  struct {
    ConfigHeader h;
    uint8_t data[256];
  } cfg{{0, 60, 0}, {}};
  ASSERT_TRUE(f.SendRaw(kGetConfig, &cfg, 12 + 60));
  auto r = f.Receive();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->payload.size(), 12u + 60u);
  uint64_t capacity;
  std::memcpy(&capacity, r->payload.data() + 12, 8);
  EXPECT_EQ(capacity, (1u << 20) / 512);
  EXPECT_TRUE(s.Finish().ok());
}

// --- blk over vhost-user ----------------------------------------------------

struct BlkReq {
  uint32_t type, reserved;
  uint64_t sector;
};

TEST(VhostUserBlk, WriteThenRead) {
  auto dev = Make("blk,backend=ram,size=1M,serial=vu0");
  const int fds = CountOpenFds();
  {
    Session s(*dev);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing ring(mem, 64);
    Negotiate(f);
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd kick, call;
    ASSERT_TRUE(f.SetupRing(0, ring, kick, call));

    const uint64_t hdr = mem.Alloc(16), data = mem.Alloc(4096),
                   status = mem.Alloc(1);
    for (int i = 0; i < 4096; ++i)
      mem.host(data)[i] = static_cast<uint8_t>(i * 7);
    BlkReq w{virtio::blk::kTypeOut, 0, 8};
    std::memcpy(mem.host(hdr), &w, sizeof w);
    ring.Add({{hdr, 16, false}, {data, 4096, false}, {status, 1, true}});
    ASSERT_TRUE(SignalFd(kick.get()));
    ASSERT_TRUE(WaitEvent(call.get()));
    auto u = ring.Reap();
    ASSERT_TRUE(u);
    EXPECT_EQ(u->second, 1u);
    EXPECT_EQ(*mem.host(status), virtio::blk::kStatusOk);

    const uint64_t hdr2 = mem.Alloc(16), back = mem.Alloc(4096),
                   status2 = mem.Alloc(1);
    BlkReq rd{virtio::blk::kTypeIn, 0, 8};
    std::memcpy(mem.host(hdr2), &rd, sizeof rd);
    ring.Add({{hdr2, 16, false}, {back, 4096, true}, {status2, 1, true}});
    ASSERT_TRUE(SignalFd(kick.get()));
    ASSERT_TRUE(WaitEvent(call.get()));
    u = ring.Reap();
    ASSERT_TRUE(u);
    EXPECT_EQ(u->second, 4097u);
    EXPECT_EQ(*mem.host(status2), virtio::blk::kStatusOk);
    EXPECT_EQ(std::memcmp(mem.host(back), mem.host(data), 4096), 0);

    // Stop and resume the ring at the reported base: still serves.
    ASSERT_TRUE(f.Send(kGetVringBase, VringState{0, 0}));
    auto r = f.Receive();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->As<VringState>().num, 2u);
    ASSERT_TRUE(f.Send(kSetVringBase, VringState{0, 2}));
    ASSERT_TRUE(f.Send(kSetVringKick, uint64_t{0}, {kick.get()}));
    const uint64_t hdr3 = mem.Alloc(16), id = mem.Alloc(20),
                   status3 = mem.Alloc(1);
    BlkReq gid{virtio::blk::kTypeGetId, 0, 0};
    std::memcpy(mem.host(hdr3), &gid, sizeof gid);
    ring.Add({{hdr3, 16, false}, {id, 20, true}, {status3, 1, true}});
    ASSERT_TRUE(SignalFd(kick.get()));
    ASSERT_TRUE(WaitEvent(call.get()));
    u = ring.Reap();
    ASSERT_TRUE(u);
    EXPECT_EQ(std::string(reinterpret_cast<char*>(mem.host(id)), 3), "vu0");
    EXPECT_TRUE(s.Finish().ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
}

// Two queues on two workers (epoll, then busy polling), driven at once
// from two threads; every request completes with the right data.
class VhostUserBlkWorkers : public ::testing::TestWithParam<bool> {};

TEST_P(VhostUserBlkWorkers, QueuesRunInParallel) {
  auto dev = Make("blk,backend=ram,size=1M,num-queues=2");
  ASSERT_EQ(dev->num_groups(), 2);
  Session s(*dev, GetParam());
  Frontend& f = s.f();
  SharedMemory mem(kGpa, 4 * kMemSize);
  SplitRing r0(mem, 32), r1(mem, 32);
  Negotiate(f);
  ASSERT_TRUE(f.SetMemTable(mem));
  UniqueFd k[2], c[2];
  ASSERT_TRUE(f.SetupRing(0, r0, k[0], c[0]));
  ASSERT_TRUE(f.SetupRing(1, r1, k[1], c[1]));
  SplitRing* rings[2] = {&r0, &r1};
  // Buffers allocated up front (SharedMemory's allocator is not
  // thread-safe).
  constexpr int kRequests = 200;
  struct Bufs {
    uint64_t hdr, data, status;
  };
  std::vector<Bufs> bufs[2];
  for (int q = 0; q < 2; ++q) {
    for (int i = 0; i < 2; ++i) {
      bufs[q].push_back({mem.Alloc(16), mem.Alloc(512), mem.Alloc(1)});
    }
  }
  auto run = [&](int q) {
    SplitRing& ring = *rings[q];
    for (int i = 0; i < kRequests; ++i) {
      const bool write = i % 2 == 0;
      const Bufs& b = bufs[q][i % 2];
      const uint64_t sector = static_cast<uint64_t>(q * 1000 + i / 2) % 2048;
      BlkReq req{write ? virtio::blk::kTypeOut : virtio::blk::kTypeIn, 0,
                 sector};
      std::memcpy(mem.host(b.hdr), &req, sizeof req);
      if (write) {
        std::memset(mem.host(b.data), q * 100 + i, 512);
        ring.Add(
            {{b.hdr, 16, false}, {b.data, 512, false}, {b.status, 1, true}});
      } else {
        ring.Add(
            {{b.hdr, 16, false}, {b.data, 512, true}, {b.status, 1, true}});
      }
      if (!GetParam()) {
        ASSERT_TRUE(SignalFd(k[q].get()));
      }
      std::optional<std::pair<uint32_t, uint32_t>> u;
      for (int spin = 0; spin < 500 && !(u = ring.Reap()); ++spin) {
        WaitEvent(c[q].get(), 10);
      }
      ASSERT_TRUE(u) << "queue " << q << " request " << i;
      ASSERT_EQ(*mem.host(b.status), virtio::blk::kStatusOk);
      if (!write) {
        ASSERT_EQ(mem.host(b.data)[0], static_cast<uint8_t>(q * 100 + i - 1));
      }
    }
  };
  std::thread t0(run, 0), t1(run, 1);
  t0.join();
  t1.join();
  EXPECT_TRUE(s.Finish().ok());
}

INSTANTIATE_TEST_SUITE_P(EpollAndBusyPoll, VhostUserBlkWorkers,
                         ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("BusyPoll")
                                          : std::string("Epoll");
                         });

TEST(VhostUserBlk, MemorySlotsAddAndRemove) {
  auto dev = Make("blk,backend=ram,size=1M");
  Session s(*dev);
  Frontend& f = s.f();
  Negotiate(f, 0, Bit(kProtocolReplyAck) | Bit(kProtocolConfigureMemSlots));
  SharedMemory a(kGpa, kMemSize), b(kGpa + kMemSize, kMemSize);
  ASSERT_TRUE(f.Send(kAddMemReg, SingleMemoryRegion{0, a.region()}, {a.fd()}));
  ASSERT_TRUE(f.Send(kAddMemReg, SingleMemoryRegion{0, b.region()}, {b.fd()},
                     kVersion | kFlagNeedReply));
  auto ack = f.Receive();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->As<uint64_t>(), 0u);
  EXPECT_EQ(dev->memory().num_regions(), 2u);
  ASSERT_TRUE(f.Send(kRemMemReg, SingleMemoryRegion{0, a.region()}, {},
                     kVersion | kFlagNeedReply));
  ack = f.Receive();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->As<uint64_t>(), 0u);
  EXPECT_EQ(dev->memory().num_regions(), 1u);
  EXPECT_TRUE(s.Finish().ok());
}

TEST(VhostUserRng, PackedVringBaseRoundTrip) {
  auto dev = Make("rng");
  Session s(*dev);
  Frontend& f = s.f();
  Negotiate(f, uint64_t{1} << spec::kFeatureRingPacked);
  SharedMemory mem(kGpa, kMemSize);
  ASSERT_TRUE(f.SetMemTable(mem));
  const uint64_t ring = mem.Alloc(uint64_t{16} * 16, 16), drv = mem.Alloc(4, 4),
                 devev = mem.Alloc(4, 4);
  UniqueFd kick(eventfd(0, EFD_CLOEXEC)), call(eventfd(0, EFD_CLOEXEC));
  // Resume at avail 3 (wrap 1), used 3 (wrap 1).
  const uint32_t base = 3 | (1u << 15) | (3u << 16) | (1u << 31);
  ASSERT_TRUE(f.Send(kSetVringNum, VringState{0, 16}));
  ASSERT_TRUE(f.Send(kSetVringBase, VringState{0, base}));
  ASSERT_TRUE(f.Send(
      kSetVringAddr,
      VringAddr{0, 0, mem.uaddr(ring), mem.uaddr(devev), mem.uaddr(drv), 0}));
  ASSERT_TRUE(f.Send(kSetVringKick, uint64_t{0}, {kick.get()}));
  ASSERT_TRUE(f.Send(kSetVringEnable, VringState{0, 1}));
  ASSERT_TRUE(f.Send(kGetVringBase, VringState{0, 0}));
  auto r = f.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->As<VringState>().num, base);
  EXPECT_TRUE(s.Finish().ok());
}

// --- Hostile front-ends
// ---------------------------------------------------------

struct Hostile {
  const char* name;
  // Sends something bad after a valid negotiation + memory table.
  std::function<void(Frontend&, SharedMemory&)> attack;
};

void PrintTo(const Hostile& h, std::ostream* os) { *os << h.name; }

class VhostUserHostile : public ::testing::TestWithParam<Hostile> {};

TEST_P(VhostUserHostile, ClosesConnectionAndStaysUsable) {
  auto dev = Make("rng");
  const int fds = CountOpenFds();
  {
    SharedMemory mem(kGpa, kMemSize);
    Session s(*dev);
    Negotiate(s.f(), 0,
              Bit(kProtocolReplyAck) | Bit(kProtocolConfigureMemSlots));
    ASSERT_TRUE(s.f().SetMemTable(mem));
    GetParam().attack(s.f(), mem);
    absl::Status st = s.WaitClosed();
    EXPECT_FALSE(st.ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(dev->memory().num_regions(), 0u);
  // The same device serves the next front-end.
  Session next(*dev);
  RngRoundTrip(next);
  EXPECT_TRUE(next.Finish().ok());
}

uint32_t Region2(Frontend& f, const MemoryRegion& a, int fa,
                 const MemoryRegion& b, int fb) {
  struct {
    uint32_t n, pad;
    MemoryRegion r[2];
  } t{2, 0, {a, b}};
  return f.Send(kSetMemTable, t, {fa, fb});
}

const Hostile kHostile[] = {
    {"InflightRegionLargerThanFd",
     [](Frontend& f, SharedMemory&) {
       f.Send(kSetProtocolFeatures,
              uint64_t{Bit(kProtocolReplyAck) | Bit(kProtocolInflightShmfd)});
       UniqueFd small(memfd_create("small", MFD_CLOEXEC));
       ASSERT_EQ(ftruncate(small.get(), 100), 0);
       f.Send(kSetInflightFd, InflightInfo{4096, 0, 1, 64}, {small.get()});
     }},
    {"InflightZeroQueues",
     [](Frontend& f, SharedMemory&) {
       f.Send(kSetProtocolFeatures,
              uint64_t{Bit(kProtocolReplyAck) | Bit(kProtocolInflightShmfd)});
       f.Send(kGetInflightFd, InflightInfo{0, 0, 0, 64});
     }},
    {"InflightWithoutFd",
     [](Frontend& f, SharedMemory&) {
       f.Send(kSetProtocolFeatures,
              uint64_t{Bit(kProtocolReplyAck) | Bit(kProtocolInflightShmfd)});
       f.Send(kSetInflightFd, InflightInfo{4096, 0, 1, 64});
     }},
    {"InflightNotNegotiated",
     [](Frontend& f, SharedMemory&) {
       f.Send(kGetInflightFd, InflightInfo{0, 0, 1, 64});
     }},
    {"ShortSetFeatures",
     [](Frontend& f, SharedMemory&) {
       uint32_t v = 1;
       f.SendRaw(kSetFeatures, &v, 4);
     }},
    {"OversizedPayload",
     [](Frontend& f, SharedMemory&) {
       f.SendRaw(kSetFeatures, nullptr, 0, {}, kVersion, 100000);
     }},
    {"TruncatedMessage",
     [](Frontend& f, SharedMemory&) {
       uint32_t v = 1;
       f.SendRaw(kSetFeatures, &v, 4, {}, kVersion, 8);  // 4 bytes missing
     }},
    {"BadVersion",
     [](Frontend& f, SharedMemory&) {
       f.SendRaw(kSetOwner, nullptr, 0, {}, 2);
     }},
    {"UnknownRequest",
     [](Frontend& f, SharedMemory&) { f.SendRaw(99, nullptr, 0); }},
    {"UnexpectedFd",
     [](Frontend& f, SharedMemory& m) {
       f.SendRaw(kSetOwner, nullptr, 0, {m.fd()});
     }},
    {"QueueIndexOutOfRange",
     [](Frontend& f, SharedMemory&) {
       f.Send(kSetVringNum, VringState{5, 16});
     }},
    {"KickWithoutFd",
     [](Frontend& f, SharedMemory&) { f.Send(kSetVringKick, uint64_t{0}); }},
    {"RingSizeNotPowerOfTwo",
     [](Frontend& f, SharedMemory&) {
       f.Send(kSetVringNum, VringState{0, 100});
     }},
    {"UnofferedFeature",
     [](Frontend& f, SharedMemory&) {
       f.Send(kSetFeatures, uint64_t{1} << 60);
     }},
    {"OverlappingRegions",
     [](Frontend& f, SharedMemory& m) {
       MemoryRegion a = m.region();
       MemoryRegion b = a;
       b.guest_phys_addr += 4096;
       b.userspace_addr += kMemSize;  // distinct in the front-end's space
       Region2(f, a, m.fd(), b, m.fd());
     }},
    {"RegionBeyondFile",
     [](Frontend& f, SharedMemory& m) {
       MemoryRegion a = m.region();
       a.memory_size *= 2;
       struct {
         uint32_t n, pad;
         MemoryRegion r;
       } t{1, 0, a};
       f.Send(kSetMemTable, t, {m.fd()});
     }},
    {"ZeroSizeRegion",
     [](Frontend& f, SharedMemory& m) {
       MemoryRegion a = m.region();
       a.memory_size = 0;
       f.Send(kAddMemReg, SingleMemoryRegion{0, a}, {m.fd()});
     }},
    {"WrappingRegion",
     [](Frontend& f, SharedMemory& m) {
       MemoryRegion a = m.region();
       a.guest_phys_addr = ~uint64_t{0} - 4095;
       f.Send(kAddMemReg, SingleMemoryRegion{0, a}, {m.fd()});
     }},
    {"UnmappableFd",
     [](Frontend& f, SharedMemory& m) {
       int sv[2];
       socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
       MemoryRegion a = m.region();
       a.guest_phys_addr += 0x10000000;
       a.userspace_addr += 0x10000000;
       f.Send(kAddMemReg, SingleMemoryRegion{0, a}, {sv[0]});
       close(sv[0]);
       close(sv[1]);
     }},
    {"FdCountMismatch",
     [](Frontend& f, SharedMemory& m) {
       MemoryRegion a = m.region(), b = a;
       b.guest_phys_addr += 0x10000000;
       b.userspace_addr += 0x10000000;
       struct {
         uint32_t n, pad;
         MemoryRegion r[2];
       } t{2, 0, {a, b}};
       f.Send(kSetMemTable, t, {m.fd()});
     }},
    {"RingOutsideMemory",
     [](Frontend& f, SharedMemory&) {
       UniqueFd kick(eventfd(0, EFD_CLOEXEC));
       f.Send(kSetVringNum, VringState{0, 16});
       f.Send(kSetVringAddr, VringAddr{0, 0, 0x1000, 0x2000, 0x3000, 0});
       f.Send(kSetVringKick, uint64_t{0}, {kick.get()});
       f.Send(kSetVringEnable, VringState{0, 1});
     }},
    {"RemoveUnknownRegion",
     [](Frontend& f, SharedMemory& m) {
       MemoryRegion a = m.region();
       a.guest_phys_addr += 0x10000000;
       f.Send(kRemMemReg, SingleMemoryRegion{0, a});
     }},
    {"ConfigWithoutProtocolFeature",
     [](Frontend& f, SharedMemory&) {
       ConfigHeader h{0, 0, 0};
       f.Send(kGetConfig, h);
     }},
    {"TooManyFds",
     [](Frontend& f, SharedMemory& m) {
       // 12 fds with one message (SendMessage refuses more than 8).
       struct {
         Header h;
         uint64_t v;
       } msg{{kSetVringCall, kVersion, 8}, 0};
       iovec iov{&msg, sizeof msg};
       alignas(cmsghdr) char control[CMSG_SPACE(12 * sizeof(int))] = {};
       msghdr mh{};
       mh.msg_iov = &iov;
       mh.msg_iovlen = 1;
       mh.msg_control = control;
       mh.msg_controllen = sizeof control;
       cmsghdr* c = CMSG_FIRSTHDR(&mh);
       c->cmsg_level = SOL_SOCKET;
       c->cmsg_type = SCM_RIGHTS;
       c->cmsg_len = CMSG_LEN(12 * sizeof(int));
       for (int i = 0; i < 12; ++i) {
         const int fd = m.fd();
         std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
       }
       EXPECT_EQ(sendmsg(f.fd(), &mh, MSG_NOSIGNAL),
                 static_cast<ssize_t>(sizeof msg));
     }},
};

INSTANTIATE_TEST_SUITE_P(All, VhostUserHostile, ::testing::ValuesIn(kHostile),
                         [](const auto& info) { return info.param.name; });

// --- The daemon loop
// ------------------------------------------------------------

TEST(VhostUserDaemon, SocketIs0600AndAcceptsNextConnection) {
  auto dev = Make("rng");
  const std::string path =
      absl::StrFormat("/tmp/vhost-user-test-%d.sock", getpid());
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  DaemonOptions o;
  o.socket_path = path;
  o.max_connections = 2;
  o.serve.stop_fd = stop.get();
  auto daemon =
      std::async(std::launch::async, [&] { return RunDaemon(*dev, o); });
  struct stat st;
  for (int i = 0; i < 500 && stat(path.c_str(), &st) != 0; ++i) usleep(10000);
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  {
    auto c = Connect(path);
    ASSERT_TRUE(c.ok()) << c.status();
    Frontend f(*std::move(c));
    f.SendRaw(kSetFeatures, nullptr, 0);  // bad size
    EXPECT_TRUE(f.PeerClosed());
  }
  {
    auto c = Connect(path);
    ASSERT_TRUE(c.ok()) << c.status();
    Frontend f(*std::move(c));
    auto features = f.GetU64(kGetFeatures);
    EXPECT_TRUE(features);
  }
  EXPECT_TRUE(daemon.get().ok());
  EXPECT_NE(stat(path.c_str(), &st), 0);  // unlinked
}

TEST(VhostUserDaemon, StopFdEndsServing) {
  auto dev = Make("rng");
  const std::string path =
      absl::StrFormat("/tmp/vhost-user-test-stop-%d.sock", getpid());
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  DaemonOptions o;
  o.socket_path = path;
  o.serve.stop_fd = stop.get();
  auto daemon =
      std::async(std::launch::async, [&] { return RunDaemon(*dev, o); });
  struct stat st;
  for (int i = 0; i < 500 && stat(path.c_str(), &st) != 0; ++i) usleep(10000);
  auto c = Connect(path);
  ASSERT_TRUE(c.ok());
  Frontend f(*std::move(c));
  ASSERT_TRUE(f.GetU64(kGetFeatures));
  ASSERT_TRUE(SignalFd(stop.get()));
  EXPECT_TRUE(daemon.get().ok());
  EXPECT_TRUE(f.PeerClosed());
  EXPECT_NE(stat(path.c_str(), &st), 0);
}

// --- inflight tracking
// ----------------------------------------------------------

using ScriptedBlk =
    virtio::BlkDevice<VhostTraits, virtio::blktest::ScriptedDisk>;

std::unique_ptr<DeviceAdapter<ScriptedBlk>> MakeScriptedBlk(
    virtio::blktest::ScriptedDisk& disk) {
  auto a = DeviceAdapter<ScriptedBlk>::Create([&](const MemoryTable& m,
                                                  CallInterrupt& i) {
    return ScriptedBlk::Create(m, i, disk, {.name = "blk", .queue_size = 64});
  });
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

constexpr uint64_t kInflightProtocol =
    Bit(kProtocolReplyAck) | Bit(kProtocolConfig) | Bit(kProtocolInflightShmfd);

// Driver side of one packed ring in SharedMemory (no event suppression:
// the device is always asked to interrupt).
class PackedRing {
 public:
  PackedRing(SharedMemory& mem, uint16_t size)
      : mem_(mem), size_(size), slots_(size, 0) {
    ring_ = mem.Alloc(16ull * size, 16);
    driver_ = mem.Alloc(4, 4);
    device_ = mem.Alloc(4, 4);
  }
  uint16_t size() const { return size_; }
  // Adds and publishes a chain (buffer ID = its first slot); returns the ID.
  uint16_t Add(const std::vector<Buf>& bufs) {
    const uint16_t id = avail_;
    slots_[id] = static_cast<uint16_t>(bufs.size());
    uint16_t head_flags = 0;
    for (size_t i = 0; i < bufs.size(); ++i) {
      spec::PackedDesc d{bufs[i].gpa, bufs[i].len, id, 0};
      d.flags = avail_wrap_ ? spec::kDescFlagAvail : spec::kDescFlagUsed;
      if (bufs[i].writable) d.flags |= spec::kDescFlagWrite;
      if (i + 1 < bufs.size()) d.flags |= spec::kDescFlagNext;
      auto* slot = reinterpret_cast<spec::PackedDesc*>(mem_.host(ring_) +
                                                       size_t{16} * avail_);
      if (i == 0) {
        head_flags = d.flags;
        d.flags = 0;  // published last
      }
      std::memcpy(slot, &d, sizeof d);
      if (++avail_ == size_) {
        avail_ = 0;
        avail_wrap_ = !avail_wrap_;
      }
    }
    auto* head =
        reinterpret_cast<spec::PackedDesc*>(mem_.host(ring_) + size_t{16} * id);
    __atomic_store_n(&head->flags, head_flags, __ATOMIC_RELEASE);
    return id;
  }
  // The next used element: (buffer ID, length).
  std::optional<std::pair<uint32_t, uint32_t>> Reap() {
    auto* d = reinterpret_cast<spec::PackedDesc*>(mem_.host(ring_) +
                                                  size_t{16} * used_);
    const uint16_t flags = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);
    const bool a = flags & spec::kDescFlagAvail,
               u = flags & spec::kDescFlagUsed;
    if (a != used_wrap_ || u != used_wrap_) return std::nullopt;
    const uint16_t id = d->id;
    const uint32_t len = d->len;
    if (id >= size_ || slots_[id] == 0) return std::nullopt;
    used_ += slots_[id];
    if (used_ >= size_) {
      used_ -= size_;
      used_wrap_ = !used_wrap_;
    }
    return std::make_pair(uint32_t{id}, len);
  }
  bool Setup(Frontend& f, uint16_t q, UniqueFd& kick, UniqueFd& call) {
    kick.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    call.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    // A fresh ring: offset 0, both wrap counters 1 (bits 15 and 31). After
    // a crash QEMU sends this same stale value again.
    const uint32_t base = (1u << 15) | (1u << 31);
    VringAddr a{
        q, 0, mem_.uaddr(ring_), mem_.uaddr(device_), mem_.uaddr(driver_), 0};
    return f.Send(kSetVringNum, VringState{q, size_}) &&
           f.Send(kSetVringBase, VringState{q, base}) &&
           f.Send(kSetVringAddr, a) &&
           f.Send(kSetVringCall, uint64_t{q}, {call.get()}) &&
           f.Send(kSetVringKick, uint64_t{q}, {kick.get()}) &&
           f.Send(kSetVringEnable, VringState{q, 1});
  }

 private:
  SharedMemory& mem_;
  uint16_t size_;
  uint64_t ring_, driver_, device_;
  uint16_t avail_ = 0, used_ = 0;
  bool avail_wrap_ = true, used_wrap_ = true;
  std::vector<uint16_t> slots_;
};

// Split or packed, for the inflight tests.
class AnyRing {
 public:
  AnyRing(SharedMemory& mem, uint16_t size, bool packed) {
    if (packed) {
      packed_.emplace(mem, size);
    } else {
      split_.emplace(mem, size);
    }
  }
  uint16_t Add(const std::vector<Buf>& bufs) {
    return packed_ ? packed_->Add(bufs) : split_->Add(bufs);
  }
  std::optional<std::pair<uint32_t, uint32_t>> Reap() {
    return packed_ ? packed_->Reap() : split_->Reap();
  }
  bool Setup(Frontend& f, uint16_t q, UniqueFd& kick, UniqueFd& call) {
    return packed_ ? packed_->Setup(f, q, kick, call)
                   : f.SetupRing(q, *split_, kick, call);
  }

 private:
  std::optional<SplitRing> split_;
  std::optional<PackedRing> packed_;
};

// Queues a 512-byte write of `fill` to `sector`; returns the head (buffer
// ID) and the status byte's address.
std::pair<uint16_t, uint64_t> QueueWrite(SharedMemory& mem, AnyRing& ring,
                                         uint64_t sector, uint8_t fill) {
  const uint64_t hdr = mem.Alloc(16), data = mem.Alloc(512),
                 status = mem.Alloc(1);
  BlkReq w{virtio::blk::kTypeOut, 0, sector};
  std::memcpy(mem.host(hdr), &w, sizeof w);
  std::memset(mem.host(data), fill, 512);
  *mem.host(status) = 0xff;
  const uint16_t head =
      ring.Add({{hdr, 16, false}, {data, 512, false}, {status, 1, true}});
  return {head, status};
}

class VhostUserInflight : public ::testing::TestWithParam<bool> {};

// A back-end dies with requests in flight; a new instance given the same
// inflight fd resubmits exactly those, and the ring goes on at the right
// positions (packed: although SET_VRING_BASE is stale, as QEMU sends it).
// Runs twice over the same region: the second back-end dies too.
TEST_P(VhostUserInflight, RestartedBackendResubmitsInFlightRequestsOnce) {
  const bool packed = GetParam();
  const uint64_t ring_features =
      packed ? spec::Bit(spec::kFeatureRingPacked) : 0;
  SharedMemory mem(kGpa, kMemSize);
  AnyRing ring(mem, 64, packed);
  UniqueFd inflight;
  std::vector<std::pair<uint16_t, uint64_t>> held;
  virtio::blktest::ScriptedDisk disk1(1 << 20);
  {
    auto dev = MakeScriptedBlk(disk1);
    Session s(*dev);
    Frontend& f = s.f();
    Negotiate(f, ring_features, kInflightProtocol);
    ASSERT_TRUE(f.SetMemTable(mem));
    InflightInfo info{0, 0, 1, 64};
    ASSERT_TRUE(f.Send(kGetInflightFd, info));
    {
      // Frontend::Receive() drops fds; read the reply with a Connection on
      // a duplicate of the socket (closed again right after).
      Connection c(UniqueFd(dup(f.fd())));
      auto r = c.Receive();
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->fds.size(), 1u);
      const auto got = r->As<InflightInfo>();
      EXPECT_EQ(got.mmap_size, InflightQueueRegionSize(64));
      inflight = std::move(r->fds[0]);
      info.mmap_size = got.mmap_size;
    }
    ASSERT_TRUE(f.Send(kSetInflightFd, info, {inflight.get()}));
    UniqueFd kick, call;
    ASSERT_TRUE(ring.Setup(f, 0, kick, call));
    // Three requests complete normally.
    for (int i = 0; i < 3; ++i)
      QueueWrite(mem, ring, i, static_cast<uint8_t>(i));
    ASSERT_TRUE(SignalFd(kick.get()));
    int done = 0;
    for (int spin = 0; spin < 100 && done < 3; ++spin) {
      WaitEvent(call.get(), 50);
      while (ring.Reap()) ++done;
    }
    ASSERT_EQ(done, 3);
    // Five more are held by the disk when the back-end goes away.
    disk1.hold = true;
    for (int i = 0; i < 5; ++i) {
      held.push_back(
          QueueWrite(mem, ring, 10 + i, static_cast<uint8_t>(0x50 + i)));
    }
    ASSERT_TRUE(SignalFd(kick.get()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(ring.Reap().has_value());
    // The connection dies; the held requests never complete.
    (void)s.Finish();
  }
  for (const auto& [head, status] : held) EXPECT_EQ(*mem.host(status), 0xff);

  // The second back-end: resubmits the five, completes one new request,
  // then dies holding two more.
  std::vector<std::pair<uint16_t, uint64_t>> held2;
  {
    virtio::blktest::ScriptedDisk disk2(1 << 20);
    auto dev = MakeScriptedBlk(disk2);
    Session s(*dev);
    Frontend& f = s.f();
    Negotiate(f, ring_features, kInflightProtocol);
    ASSERT_TRUE(f.SetMemTable(mem));
    InflightInfo info{InflightQueueRegionSize(64), 0, 1, 64};
    ASSERT_TRUE(f.Send(kSetInflightFd, info, {inflight.get()}));
    UniqueFd kick, call;
    ASSERT_TRUE(ring.Setup(f, 0, kick, call));  // base ignored: resubmits
    std::map<uint32_t, int> completed;
    for (int spin = 0; spin < 100 && completed.size() < 5; ++spin) {
      WaitEvent(call.get(), 50);
      while (auto u = ring.Reap()) ++completed[u->first];
    }
    ASSERT_EQ(completed.size(), 5u);
    for (const auto& [head, status] : held) {
      EXPECT_EQ(completed[head], 1) << "head " << head;
      EXPECT_EQ(*mem.host(status), virtio::blk::kStatusOk);
    }
    // Without FLUSH negotiated each write is followed by a flush: count
    // the writes.
    auto writes = [&] {
      return std::count_if(
          disk2.log.begin(), disk2.log.end(), [](const auto& r) {
            return r.op == virtio::blktest::ScriptedDisk::Op::kWrite;
          });
    };
    ASSERT_EQ(writes(), 5);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(disk2.image[static_cast<size_t>(10 + i) * 512], 0x50 + i);
    }
    // New requests follow at the right ring positions. Drain any call
    // signal left over from the resubmitted completions first, so the wait
    // below is for this request's interrupt and not a stale one.
    while (WaitEvent(call.get(), 0)) {
    }
    auto more = QueueWrite(mem, ring, 20, 0x77);
    ASSERT_TRUE(SignalFd(kick.get()));
    ASSERT_TRUE(WaitEvent(call.get()));
    auto u = ring.Reap();
    ASSERT_TRUE(u);
    EXPECT_EQ(u->first, more.first);
    EXPECT_EQ(*mem.host(more.second), virtio::blk::kStatusOk);
    EXPECT_FALSE(ring.Reap().has_value());
    EXPECT_EQ(writes(), 6);
    disk2.hold = true;
    for (int i = 0; i < 2; ++i) {
      held2.push_back(
          QueueWrite(mem, ring, 30 + i, static_cast<uint8_t>(0x90 + i)));
    }
    ASSERT_TRUE(SignalFd(kick.get()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(ring.Reap().has_value());
    (void)s.Finish();
  }

  virtio::blktest::ScriptedDisk disk3(1 << 20);
  auto dev = MakeScriptedBlk(disk3);
  Session s(*dev);
  Frontend& f = s.f();
  Negotiate(f, ring_features, kInflightProtocol);
  ASSERT_TRUE(f.SetMemTable(mem));
  InflightInfo info{InflightQueueRegionSize(64), 0, 1, 64};
  ASSERT_TRUE(f.Send(kSetInflightFd, info, {inflight.get()}));
  UniqueFd kick, call;
  ASSERT_TRUE(ring.Setup(f, 0, kick, call));
  std::map<uint32_t, int> completed;
  for (int spin = 0; spin < 100 && completed.size() < 2; ++spin) {
    WaitEvent(call.get(), 50);
    while (auto u = ring.Reap()) ++completed[u->first];
  }
  ASSERT_EQ(completed.size(), 2u);
  for (const auto& [head, status] : held2) {
    EXPECT_EQ(completed[head], 1) << "head " << head;
    EXPECT_EQ(*mem.host(status), virtio::blk::kStatusOk);
  }
  EXPECT_EQ(disk3.image[size_t{30} * 512], 0x90);
  EXPECT_EQ(disk3.image[size_t{31} * 512], 0x91);
  // Nothing else was redone.
  EXPECT_EQ(std::count_if(disk3.log.begin(), disk3.log.end(),
                          [](const auto& r) {
                            return r.op ==
                                   virtio::blktest::ScriptedDisk::Op::kWrite;
                          }),
            2);
  EXPECT_TRUE(s.Finish().ok());
}

// GET_INFLIGHT_FD for rings of the front-end's queue-size (QEMU
// vhost-user-blk: 128), a guest that sets larger rings (microvm: 1024): the
// region returned holds the largest ring the device accepts, and the
// front-end's queue_size sent back with SET_INFLIGHT_FD does not shrink it:
// the larger ring is tracked across a back-end crash.
TEST_P(VhostUserInflight, RegionAskedForSmallerRingsStillTracksTheRing) {
  const bool packed = GetParam();
  const uint64_t ring_features =
      packed ? spec::Bit(spec::kFeatureRingPacked) : 0;
  SharedMemory mem(kGpa, kMemSize);
  AnyRing ring(mem, 64, packed);  // the device's limit: 64
  UniqueFd inflight;
  InflightInfo info{0, 0, 1, 16};
  std::vector<std::pair<uint16_t, uint64_t>> held;
  virtio::blktest::ScriptedDisk disk1(1 << 20);
  {
    auto dev = MakeScriptedBlk(disk1);
    Session s(*dev);
    Frontend& f = s.f();
    Negotiate(f, ring_features, kInflightProtocol);
    ASSERT_TRUE(f.SetMemTable(mem));
    ASSERT_TRUE(f.Send(kGetInflightFd, info));
    {
      Connection c(UniqueFd(dup(f.fd())));
      auto r = c.Receive();
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->fds.size(), 1u);
      EXPECT_EQ(r->As<InflightInfo>().mmap_size, InflightQueueRegionSize(64));
      inflight = std::move(r->fds[0]);
      info.mmap_size = r->As<InflightInfo>().mmap_size;
    }
    ASSERT_TRUE(f.Send(kSetInflightFd, info, {inflight.get()}));
    UniqueFd kick, call;
    ASSERT_TRUE(ring.Setup(f, 0, kick, call));
    disk1.hold = true;
    // 20 chains of 3 descriptors: heads (split) and buffer IDs (packed) up
    // to 57, far past entry 16 of the region the front-end asked for.
    for (int i = 0; i < 20; ++i) {
      held.push_back(QueueWrite(mem, ring, i, static_cast<uint8_t>(i + 1)));
    }
    ASSERT_TRUE(SignalFd(kick.get()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(ring.Reap().has_value());
    (void)s.Finish();
  }
  virtio::blktest::ScriptedDisk disk2(1 << 20);
  auto dev = MakeScriptedBlk(disk2);
  Session s(*dev);
  Frontend& f = s.f();
  Negotiate(f, ring_features, kInflightProtocol);
  ASSERT_TRUE(f.SetMemTable(mem));
  ASSERT_TRUE(f.Send(kSetInflightFd, info, {inflight.get()}));
  UniqueFd kick, call;
  ASSERT_TRUE(ring.Setup(f, 0, kick, call));
  std::map<uint32_t, int> completed;
  for (int spin = 0; spin < 100 && completed.size() < held.size(); ++spin) {
    WaitEvent(call.get(), 50);
    while (auto u = ring.Reap()) ++completed[u->first];
  }
  ASSERT_EQ(completed.size(), held.size());
  for (const auto& [head, status] : held) {
    EXPECT_EQ(completed[head], 1) << "head " << head;
    EXPECT_EQ(*mem.host(status), virtio::blk::kStatusOk);
  }
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(disk2.image[static_cast<size_t>(i) * 512], i + 1);
  EXPECT_TRUE(s.Finish().ok());
}

// A region the front-end made itself for 16-entry rings, a 64-entry ring:
// the queue is served (untracked, said once in the log), and nothing is
// written to the region, let alone beyond it.
TEST_P(VhostUserInflight, RingLargerThanTheRegionIsServedUntracked) {
  const bool packed = GetParam();
  const uint64_t ring_features =
      packed ? spec::Bit(spec::kFeatureRingPacked) : 0;
  SharedMemory mem(kGpa, kMemSize);
  AnyRing ring(mem, 64, packed);
  const uint64_t bytes = InflightQueueRegionSize(16);
  UniqueFd region(memfd_create("small-inflight", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(region.get(), static_cast<off_t>(bytes)), 0);
  virtio::blktest::ScriptedDisk disk(1 << 20);
  auto dev = MakeScriptedBlk(disk);
  Session s(*dev);
  Frontend& f = s.f();
  Negotiate(f, ring_features, kInflightProtocol);
  ASSERT_TRUE(f.SetMemTable(mem));
  InflightInfo info{bytes, 0, 1, 16};
  ASSERT_TRUE(f.Send(kSetInflightFd, info, {region.get()}));
  UniqueFd kick, call;
  ASSERT_TRUE(ring.Setup(f, 0, kick, call));
  std::vector<std::pair<uint16_t, uint64_t>> reqs;
  for (int round = 0; round < 4; ++round) {  // wraps the 64-entry ring
    for (int i = 0; i < 20; ++i) {           // 60 descriptors
      reqs.push_back(QueueWrite(mem, ring, i, static_cast<uint8_t>(i + 1)));
    }
    ASSERT_TRUE(SignalFd(kick.get()));
    size_t done = 0;
    for (int spin = 0; spin < 100 && done < 20; ++spin) {
      WaitEvent(call.get(), 50);
      while (ring.Reap()) ++done;
    }
    ASSERT_EQ(done, 20u) << "round " << round;
  }
  for (const auto& [head, status] : reqs) {
    EXPECT_EQ(*mem.host(status), virtio::blk::kStatusOk);
  }
  std::vector<uint8_t> content(bytes + 4096, 0xee);
  const ssize_t n = pread(region.get(), content.data(), content.size(), 0);
  ASSERT_EQ(n, static_cast<ssize_t>(bytes));
  EXPECT_TRUE(std::all_of(content.begin(), content.begin() + n,
                          [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(s.Finish().ok());
}

INSTANTIATE_TEST_SUITE_P(Rings, VhostUserInflight, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "Packed" : "Split";
                         });

// --- inflight tracking, crash at every hook ----------------------------------
//
// A device runs a random workload on one queue with InflightQueue attached
// (out-of-order completions, batches of several pushes, multi-slot packed
// chains, ring wrap-around). Before and after every hook call the test
// "crashes" there: with the guest memory and a copy of the region as they
// are at that instant, a new InflightQueue recovers, a new queue resumes
// from its state and resubmit list (packed: from a stale base, as QEMU
// gives it), and a new device completes everything. The driver (a copy of
// its state at that instant) must then get every outstanding chain back
// exactly once, and the ring must go on.

// Crash points: before a hook, after it, and after it but with the
// region's position fields (header bytes 12-23: split used_idx, packed
// used_pos and avail_commit) as they were before it: a crash inside the
// hook, between its marks and the position store that commits them.
enum class CrashAt { kBefore, kAfter, kBeforeCommit };

struct CrashObserver {
  InflightQueue* inflight = nullptr;
  std::function<void(CrashAt)> crash_point;  // empty: none
  void Crash(CrashAt at) {
    if (crash_point) crash_point(at);
  }
  void Around(auto&& hook) {
    Crash(CrashAt::kBefore);
    hook();
    Crash(CrashAt::kAfter);
    Crash(CrashAt::kBeforeCommit);
  }
  void OnPop(const virtio::DescriptorChain& c, uint16_t p, bool r) {
    Around([&] { inflight->OnPop(c, p, r); });
  }
  void OnPush(virtio::UsedToken t, uint32_t len, uint16_t p) {
    Around([&] { inflight->OnPush(t, len, p); });
  }
  void OnPublish(const virtio::QueueState& st) {
    Around([&] { inflight->OnPublish(st); });
  }
};

struct SplitCrash {
  static constexpr const char* kName = "split";
  static constexpr bool kPacked = false;
  static constexpr bool kInOrder = false;
  using Driver = virtio::testing::SplitDriver;
  using Queue = virtio::SplitQueue<virtio::GuestMemoryMap, CrashObserver>;
};
struct PackedCrash {
  static constexpr const char* kName = "packed";
  static constexpr bool kPacked = true;
  static constexpr bool kInOrder = false;
  using Driver = virtio::testing::PackedDriver;
  using Queue = virtio::PackedQueue<virtio::GuestMemoryMap, CrashObserver>;
};
// IN_ORDER: buffers completed oldest first, mostly with length 0, so that
// runs of them share one used descriptor that recovery must step over.
struct PackedInOrderCrash : PackedCrash {
  static constexpr const char* kName = "packed_in_order";
  static constexpr bool kInOrder = true;
};
struct CrashNames {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

template <typename L>
class InflightCrashTest : public ::testing::Test {};
using CrashLayouts =
    ::testing::Types<SplitCrash, PackedCrash, PackedInOrderCrash>;
TYPED_TEST_SUITE(InflightCrashTest, CrashLayouts, CrashNames);

TYPED_TEST(InflightCrashTest,
           EveryChainCompletesExactlyOnceAfterACrashAnywhere) {
  using Driver = typename TypeParam::Driver;
  using Queue = typename TypeParam::Queue;
  constexpr uint64_t kBase = 0x10000, kBytes = uint64_t{64} * 1024;
  constexpr uint16_t kSize = 8;
  virtio::testing::TestGuestMemory mem({{kBase, kBytes}});
  Driver driver(mem, kSize, {.in_order = TypeParam::kInOrder});
  const virtio::QueueConfig cfg = driver.config();
  InflightRing ring{.packed = TypeParam::kPacked,
                    .size = kSize,
                    .in_order = TypeParam::kInOrder};
  ring.ring = TypeParam::kPacked
                  ? mem.Host(cfg.desc_addr, spec::PackedDescRingSize(kSize))
                  : mem.Host(cfg.device_addr, spec::SplitUsedRingSize(kSize));
  const uint64_t region_bytes = InflightQueueRegionSize(kSize);
  std::vector<uint64_t> region(region_bytes / 8, 0);
  auto* region_p = reinterpret_cast<uint8_t*>(region.data());
  std::vector<uint64_t> bufs;
  bufs.reserve(size_t{3} * kSize);
  for (int i = 0; i < 3 * kSize; ++i) bufs.push_back(mem.Alloc(64, 16));

  // Recovers from the current memory and a copy of the region; restores
  // the guest memory afterwards so the live run goes on.
  int crashes = 0, resubmitted_total = 0;
  uint8_t header_before[12];
  auto check_crash = [&](const Driver& at_crash, CrashAt at) {
    if (at == CrashAt::kBefore) std::memcpy(header_before, region_p + 12, 12);
    ++crashes;
    std::vector<uint8_t> saved(mem.Host(kBase, kBytes),
                               mem.Host(kBase, kBytes) + kBytes);
    std::vector<uint64_t> reg = region;
    if (at == CrashAt::kBeforeCommit) {
      std::memcpy(reinterpret_cast<uint8_t*>(reg.data()) + 12, header_before,
                  12);
    }
    Driver d = at_crash;
    const uint32_t outstanding = d.outstanding();
    InflightQueue iq;
    InflightRecovery rec;
    virtio::QueueState base;  // packed: stale (a fresh ring), as QEMU sends
    if (!TypeParam::kPacked) {
      uint16_t used_idx;
      std::memcpy(&used_idx, ring.ring + 2, 2);
      base.next_avail = base.next_used = used_idx;  // QEMU: last avail = used
    }
    absl::Status st = iq.Start(reinterpret_cast<uint8_t*>(reg.data()),
                               region_bytes, ring, base, &rec);
    ASSERT_TRUE(st.ok()) << st << " at crash " << crashes;
    EXPECT_FALSE(rec.fresh);
    resubmitted_total += static_cast<int>(rec.resubmit.size());
    CrashObserver obs{&iq, {}};
    auto q = Queue::Create(mem.map(), cfg, rec.state, &obs);
    ASSERT_TRUE(q.ok()) << q.status() << " at crash " << crashes;
    ASSERT_TRUE(q->Resubmit(rec.resubmit).ok()) << " at crash " << crashes;
    virtio::DescriptorChain chain;
    auto serve = [&] {
      for (int round = 0; round < 4; ++round) {
        std::vector<virtio::UsedToken> popped;
        while (q->Pop(chain) == virtio::PopStatus::kChain)
          popped.push_back(chain.token());
        for (auto t : popped) q->Push(t, 0);
        q->Publish();
      }
    };
    serve();
    ASSERT_EQ(q->error(), virtio::RingError::kNone) << " at crash " << crashes;
    uint32_t reaped = 0;
    while (d.Reap()) ++reaped;
    EXPECT_EQ(d.device_error(), "") << " at crash " << crashes;
    EXPECT_EQ(reaped, outstanding) << " at crash " << crashes;
    EXPECT_EQ(d.outstanding(), 0u) << " at crash " << crashes;
    // The ring goes on at the right positions.
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(d.Add({{bufs[i], 64, false}, {bufs[i + 1], 64, true}}));
    }
    d.Kick();
    serve();
    reaped = 0;
    while (d.Reap()) ++reaped;
    EXPECT_EQ(reaped, 3u) << " at crash " << crashes;
    EXPECT_EQ(d.device_error(), "") << " at crash " << crashes;
    std::memcpy(mem.Host(kBase, kBytes), saved.data(), kBytes);
  };

  InflightQueue live;
  InflightRecovery rec;
  ASSERT_TRUE(live.Start(region_p, region_bytes, ring, {}, &rec).ok());
  ASSERT_TRUE(rec.fresh);
  CrashObserver obs{&live, [&](CrashAt at) { check_crash(driver, at); }};
  auto q = Queue::Create(mem.map(), cfg, rec.state, &obs);
  ASSERT_TRUE(q.ok()) << q.status();
  std::mt19937 rng(12345);
  std::vector<virtio::UsedToken> popped;
  virtio::DescriptorChain chain;
  int completed = 0;
  for (int step = 0; step < 2000 && !::testing::Test::HasFatalFailure();
       ++step) {
    switch (rng() % 4) {
      case 0: {  // the driver adds one to three chains of 1-3 buffers
        const int n = 1 + static_cast<int>(rng() % 3);
        for (int i = 0; i < n; ++i) {
          std::vector<virtio::testing::Buffer> b;
          const int len = 1 + static_cast<int>(rng() % 3);
          b.reserve(len);
          for (int j = 0; j < len; ++j) {
            b.push_back({bufs[(step + j) % bufs.size()], 64, j == len - 1});
          }
          if (!driver.Add(b)) break;
        }
        driver.Kick();
        break;
      }
      case 1: {  // the device pops a few
        const int n = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < n && q->Pop(chain) == virtio::PopStatus::kChain;
             ++i) {
          popped.push_back(chain.token());
        }
        break;
      }
      case 2: {  // pushes a random subset in random order, one publish
        // (in order: the oldest ones, mostly with length 0)
        if (!TypeParam::kInOrder)
          std::shuffle(popped.begin(), popped.end(), rng);
        const size_t n = popped.empty() ? 0 : 1 + rng() % popped.size();
        for (size_t i = 0; i < n; ++i) {
          q->Push(popped[i], TypeParam::kInOrder && rng() % 3 != 0 ? 0 : 1);
        }
        popped.erase(popped.begin(), popped.begin() + static_cast<long>(n));
        q->Publish();
        break;
      }
      default:  // the driver reaps
        while (driver.Reap()) ++completed;
        break;
    }
    ASSERT_EQ(q->error(), virtio::RingError::kNone) << "step " << step;
  }
  EXPECT_EQ(driver.device_error(), "");
  std::printf(
      "%s: %d chains completed live, %d crash points recovered, %d "
      "chains resubmitted in all\n",
      TypeParam::kName, completed, crashes, resubmitted_total);
  EXPECT_GT(completed, 300);
  EXPECT_GT(crashes, 3000);
  EXPECT_GT(resubmitted_total, 100);  // crashes with chains in flight
  EXPECT_EQ(live.untracked(), 0u);
}

// The front-end can write anything into the region: recovery either
// refuses it or yields a state and resubmit list the queue validates, and
// nothing reads or writes out of bounds (run under ASan).
TYPED_TEST(InflightCrashTest, GarbageRegionIsRefusedOrHarmless) {
  using Driver = typename TypeParam::Driver;
  using Queue = typename TypeParam::Queue;
  constexpr uint16_t kSize = 8;
  virtio::testing::TestGuestMemory mem({{0x10000, uint64_t{64} * 1024}});
  Driver driver(mem, kSize, {.in_order = TypeParam::kInOrder});
  const virtio::QueueConfig cfg = driver.config();
  InflightRing ring{.packed = TypeParam::kPacked,
                    .size = kSize,
                    .in_order = TypeParam::kInOrder};
  ring.ring = TypeParam::kPacked
                  ? mem.Host(cfg.desc_addr, spec::PackedDescRingSize(kSize))
                  : mem.Host(cfg.device_addr, spec::SplitUsedRingSize(kSize));
  const uint64_t bytes = InflightQueueRegionSize(kSize);
  std::mt19937 rng(777);
  int refused = 0, started = 0;
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<uint64_t> region(bytes / 8);
    for (auto& w : region) {
      // Mostly small values, so that flags, counts and links are often
      // plausible and recovery goes deep.
      w = rng() % 4 == 0 ? (uint64_t{rng()} << 32 | rng())
                         : (rng() & 0x0003000100070001ull);
    }
    auto* r = reinterpret_cast<uint8_t*>(region.data());
    const uint16_t version = TypeParam::kPacked ? 2 : 1;
    std::copy_n(reinterpret_cast<const uint8_t*>(&version), 2, r + 8);
    std::copy_n(reinterpret_cast<const uint8_t*>(&kSize), 2, r + 10);
    // Random ring contents too (used elements, descriptors).
    for (uint64_t i = 0; i < spec::PackedDescRingSize(kSize); ++i) {
      mem.Host(cfg.desc_addr)[i] = static_cast<uint8_t>(rng());
    }
    InflightQueue iq;
    InflightRecovery rec;
    if (!iq.Start(r, bytes, ring, {}, &rec).ok()) {
      ++refused;
      continue;
    }
    ++started;
    CrashObserver obs{&iq, {}};
    auto q = Queue::Create(mem.map(), cfg, rec.state, &obs);
    if (!q.ok() || !q->Resubmit(rec.resubmit).ok()) continue;
    virtio::DescriptorChain chain;
    for (int i = 0; i < 2 * kSize; ++i) {
      if (q->Pop(chain) != virtio::PopStatus::kChain) break;
      q->Push(chain.token(), 0);
      q->Publish();
    }
  }
  std::printf("%s: %d garbage regions refused, %d recovered\n",
              TypeParam::kName, refused, started);
  // Both outcomes are exercised.
  EXPECT_GT(refused, 50);
  EXPECT_GT(started, 50);
}

// --- net over vhost-user (loopback backend) ---------------------------------

// Queues a tx packet (header + `frame_len` bytes) and kicks.
void SendFrame(SharedMemory& mem, SplitRing& tx, int kick, uint32_t frame_len,
               uint8_t seed) {
  const uint64_t buf = mem.Alloc(virtio::net::kHeaderSize + frame_len);
  std::memset(mem.host(buf), 0, virtio::net::kHeaderSize);
  uint8_t* f = mem.host(buf) + virtio::net::kHeaderSize;
  for (uint32_t i = 0; i < frame_len; ++i)
    f[i] = static_cast<uint8_t>(seed + i);
  f[12] = 0x08;
  f[13] = 0x00;
  tx.Add({{buf, virtio::net::kHeaderSize + frame_len, false}});
  ASSERT_TRUE(SignalFd(kick));
}

void PostRx(SharedMemory& mem, SplitRing& rx, int kick, int n, uint32_t len) {
  for (int i = 0; i < n; ++i) rx.Add({{mem.Alloc(len), len, true}});
  ASSERT_TRUE(SignalFd(kick));
}

TEST(VhostUserNet, LoopbackAndHeldRxChainsAtGetVringBase) {
  auto dev = Make("net,backend=loopback,mac=52:54:00:00:00:01");
  ASSERT_NE(dev, nullptr);
  uint8_t mac[6];
  ASSERT_TRUE(dev->ReadConfig(0, mac, 6));
  EXPECT_EQ(mac[5], 1);
  EXPECT_EQ(dev->num_queues(), 3);  // rx, tx, ctrl
  const int fds = CountOpenFds();
  {
    Session s(*dev);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing rx(mem, 16), tx(mem, 16);
    Negotiate(f, spec::Bit(virtio::net::kFeatureMrgRxbuf));
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd rk, rc, tk, tc;
    ASSERT_TRUE(f.SetupRing(0, rx, rk, rc));
    ASSERT_TRUE(f.SetupRing(1, tx, tk, tc));
    // A 1000-byte frame into 256-byte buffers: one posted, then four.
    PostRx(mem, rx, rk.get(), 1, 256);
    SendFrame(mem, tx, tk.get(), 1000, 3);
    ASSERT_TRUE(WaitEvent(tc.get()));
    ASSERT_TRUE(tx.Reap());
    PostRx(mem, rx, rk.get(), 4, 256);
    ASSERT_TRUE(WaitEvent(rc.get()));
    uint32_t total = 0;
    int used = 0;
    while (auto u = rx.Reap()) {
      total += u->second;
      ++used;
    }
    EXPECT_EQ(used, 4);
    EXPECT_EQ(total, 1000u + virtio::net::kHeaderSize);
    // Again with one buffer: the device holds it when the ring stops, and
    // hands it back unused; the packet waits for the resumed ring.
    SendFrame(mem, tx, tk.get(), 1000, 5);
    ASSERT_TRUE(WaitEvent(tc.get()));
    PostRx(mem, rx, rk.get(), 1, 256);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(f.Send(kGetVringBase, VringState{0, 0}));
    auto r = f.Receive();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->As<VringState>().num, 6u);
    auto u = rx.Reap();
    ASSERT_TRUE(u);
    EXPECT_EQ(u->second, 0u);
    EXPECT_TRUE(WaitEvent(rc.get(), 0));  // the call for it
    ASSERT_TRUE(f.Send(kSetVringBase, VringState{0, 6}));
    ASSERT_TRUE(f.Send(kSetVringKick, uint64_t{0}, {rk.get()}));
    PostRx(mem, rx, rk.get(), 4, 256);
    ASSERT_TRUE(WaitEvent(rc.get()));
    total = 0;
    while (auto v = rx.Reap()) total += v->second;
    EXPECT_EQ(total, 1000u + virtio::net::kHeaderSize);
    EXPECT_TRUE(s.Finish().ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
}

// --- console over vhost-user (socket backend)
// ---------------------------------

TEST(VhostUserConsole, SocketBackendBothWays) {
  const std::string path =
      absl::StrFormat("/tmp/vu-console-%d.sock", static_cast<int>(getpid()));
  unlink(path.c_str());
  auto dev = Make("console,backend=socket=" + path);
  ASSERT_NE(dev, nullptr);
  {
    Session s(*dev);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing rx(mem, 16), tx(mem, 16);
    Negotiate(f);
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd rk, rc, tk, tc;
    ASSERT_TRUE(f.SetupRing(0, rx, rk, rc));
    ASSERT_TRUE(f.SetupRing(1, tx, tk, tc));
    // A host client connects and types; the guest receives it.
    UniqueFd client(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    ASSERT_EQ(connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a),
              0);
    const uint64_t in = mem.Alloc(64);
    rx.Add({{in, 64, true}});
    ASSERT_TRUE(SignalFd(rk.get()));
    ASSERT_EQ(write(client.get(), "ping", 4), 4);
    ASSERT_TRUE(WaitEvent(rc.get()));
    auto u = rx.Reap();
    ASSERT_TRUE(u);
    EXPECT_EQ(std::string(reinterpret_cast<char*>(mem.host(in)), u->second),
              "ping");
    // The guest writes; the client reads it.
    const uint64_t out = mem.Alloc(5);
    std::memcpy(mem.host(out), "hello", 5);
    tx.Add({{out, 5, false}});
    ASSERT_TRUE(SignalFd(tk.get()));
    ASSERT_TRUE(WaitEvent(tc.get()));
    char buf[16] = {};
    pollfd p{client.get(), POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    EXPECT_EQ(read(client.get(), buf, sizeof buf), 5);
    EXPECT_EQ(std::string(buf, 5), "hello");
    EXPECT_TRUE(s.Finish().ok());
  }
  dev.reset();
  unlink(path.c_str());
}

// The terminal of the pty the device opened: the /dev/ptmx this process
// holds.
std::string DevicePty() {
  std::string path;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[64];
    const std::string proc = absl::StrFormat("/proc/self/fd/%d", fd);
    const ssize_t n = readlink(proc.c_str(), link, sizeof link - 1);
    if (n <= 0) continue;
    link[n] = '\0';
    if (std::strcmp(link, "/dev/ptmx") != 0) continue;
    char name[64];
    EXPECT_TRUE(path.empty()) << "more than one pty master open";
    if (ptsname_r(fd, name, sizeof name) == 0) path = name;
  }
  return path;
}

// A pty whose terminal was closed is rechecked on a timer (no fd reports a
// reopen), and the daemon's loop services every watch when a timeout
// passes. The closed pty's port had no watch of its own, so it was never
// looked at again: input typed after the terminal was reopened never
// reached the guest (found with UML, uml_console_pty.sh).
TEST(VhostUserConsole, PtyClosedAndReopenedStillDeliversInput) {
  auto dev = Make("console,backend=pty");
  ASSERT_NE(dev, nullptr);
  const std::string pts = DevicePty();
  ASSERT_EQ(pts.rfind("/dev/pts/", 0), 0u) << pts;
  {
    Session s(*dev);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing rx(mem, 16), tx(mem, 16);
    Negotiate(f);
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd rk, rc, tk, tc;
    ASSERT_TRUE(f.SetupRing(0, rx, rk, rc));
    ASSERT_TRUE(f.SetupRing(1, tx, tk, tc));
    std::map<uint32_t, uint64_t> buf_of;
    for (int i = 0; i < 8; ++i) {
      const uint64_t b = mem.Alloc(64);
      buf_of[rx.Add({{b, 64, true}})] = b;
    }
    ASSERT_TRUE(SignalFd(rk.get()));
    // Bytes the guest receives within `timeout_ms`, until `want` are in.
    auto receive = [&](size_t want, int timeout_ms) {
      std::string got;
      const auto deadline = std::chrono::steady_clock::now() +
                            std::chrono::milliseconds(timeout_ms);
      while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
        WaitEvent(rc.get(), 50);
        while (auto u = rx.Reap()) {
          got.append(reinterpret_cast<char*>(mem.host(buf_of[u->first])),
                     u->second);
          rx.Add({{buf_of[u->first], 64, true}});
          SignalFd(rk.get());
        }
      }
      return got;
    };
    int term = open(pts.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT_GE(term, 0) << std::strerror(errno);
    ASSERT_EQ(write(term, "one\n", 4), 4);
    EXPECT_EQ(receive(4, 5000), "one\n");
    // The terminal closes; the device notices (the master hangs up) ...
    close(term);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    // ... and is opened again: what is typed now must arrive (the pty
    // backend rechecks every 500 ms).
    term = open(pts.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT_GE(term, 0) << std::strerror(errno);
    ASSERT_EQ(write(term, "two\n", 4), 4);
    EXPECT_EQ(receive(4, 5000), "two\n");
    close(term);
    EXPECT_TRUE(s.Finish().ok());
  }
}

TEST(VhostUserConsole, FileBackend) {
  char tmpl[] = "/tmp/vu-console-file-XXXXXX";
  const int tfd = mkstemp(tmpl);
  ASSERT_GE(tfd, 0);
  close(tfd);
  auto dev = Make(std::string("console,backend=file=") + tmpl);
  ASSERT_NE(dev, nullptr);
  {
    Session s(*dev);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing rx(mem, 16), tx(mem, 16);
    Negotiate(f);
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd rk, rc, tk, tc;
    ASSERT_TRUE(f.SetupRing(0, rx, rk, rc));
    ASSERT_TRUE(f.SetupRing(1, tx, tk, tc));
    const uint64_t out = mem.Alloc(6);
    std::memcpy(mem.host(out), "booted", 6);
    tx.Add({{out, 6, false}});
    ASSERT_TRUE(SignalFd(tk.get()));
    ASSERT_TRUE(WaitEvent(tc.get()));
    EXPECT_TRUE(s.Finish().ok());
  }
  dev.reset();
  FILE* fp = std::fopen(tmpl, "r");
  ASSERT_NE(fp, nullptr);
  char buf[16] = {};
  EXPECT_EQ(std::fread(buf, 1, sizeof buf, fp), 6u);
  std::fclose(fp);
  EXPECT_EQ(std::string(buf), "booted");
  unlink(tmpl);
}

// SET_VRING_NUM with REPLY_ACK: the back-end's answer (0: accepted), or
// nullopt if it closed the connection instead.
std::optional<uint64_t> SetVringNum(Frontend& f, uint16_t q, uint32_t num) {
  VringState st{q, num};
  if (!f.SendRaw(kSetVringNum, &st, sizeof st, {}, kVersion | kFlagNeedReply)) {
    return std::nullopt;
  }
  auto r = f.Receive();
  if (!r || r->payload.size() != sizeof(uint64_t)) return std::nullopt;
  return r->As<uint64_t>();
}

// Real front-ends pick their ring sizes (QEMU microvm and DPDK: 1024) and
// cannot ask for ours: by default every size the spec allows is accepted.
TEST(VhostUserRingSizes, DefaultAcceptsEverySizeTheSpecAllows) {
  for (uint16_t size : {1024, 32768}) {
    auto dev = Make("rng");
    Session s(*dev);
    RngRoundTrip(s, size);
    EXPECT_TRUE(s.Finish().ok()) << size;
  }
  for (const char* text :
       {"rng", "blk,backend=ram,size=1M", "net,backend=loopback",
        "console,backend=file=/dev/null"}) {
    auto dev = Make(text);
    ASSERT_NE(dev, nullptr);
    for (bool packed : {false, true}) {
      Session s(*dev);
      Negotiate(s.f(), packed ? spec::Bit(spec::kFeatureRingPacked) : 0);
      for (uint16_t q = 0; q < dev->num_queues(); ++q) {
        for (uint32_t n : {1u, 2u, 256u, 1024u, 32768u}) {
          EXPECT_EQ(SetVringNum(s.f(), q, n), 0u) << text << " " << n;
        }
        // Packed rings may have any size.
        if (packed) {
          EXPECT_EQ(SetVringNum(s.f(), q, 1000), 0u) << text;
        }
      }
      if (!packed) {
        // A split ring's size is a power of two: refused, connection closed.
        EXPECT_NE(SetVringNum(s.f(), 0, 1000), 0u) << text;
        EXPECT_FALSE(s.WaitClosed().ok()) << text;
      }
    }
    // Above the specification's maximum.
    Session s(*dev);
    Negotiate(s.f(), spec::Bit(spec::kFeatureRingPacked));
    EXPECT_NE(SetVringNum(s.f(), 0, 32769), 0u) << text;
    EXPECT_FALSE(s.WaitClosed().ok()) << text;
  }
}

// queue-size= stays an explicit limit.
TEST(VhostUserRingSizes, QueueSizeIsALimit) {
  for (const char* text :
       {"rng,queue-size=64", "blk,backend=ram,size=1M,queue-size=64",
        "net,backend=loopback,queue-size=64",
        "console,backend=file=/dev/null,queue-size=64"}) {
    auto dev = Make(text);
    ASSERT_NE(dev, nullptr);
    Session s(*dev);
    Negotiate(s.f());
    EXPECT_EQ(SetVringNum(s.f(), 0, 64), 0u) << text;
    EXPECT_NE(SetVringNum(s.f(), 0, 128), 0u) << text;
    EXPECT_FALSE(s.WaitClosed().ok()) << text;
  }
}

// --- a front-end that shrinks the memory it shared (SIGBUS)
// ---------------------

// Guest memory truncated after SET_MEM_TABLE: the back-end's next ring
// access would SIGBUS. The connection is closed with the reason; the
// process lives on and the next front-end is served.
TEST(VhostUserShrunkMemory, GuestMemoryClosesTheConnectionNotTheProcess) {
  auto dev = Make("rng");
  for (int round = 0; round < 2; ++round) {
    Session s(*dev);
    SharedMemory mem(kGpa, kMemSize);
    SplitRing ring(mem, 16);
    Negotiate(s.f());
    ASSERT_TRUE(s.f().SetMemTable(mem));
    UniqueFd kick, call;
    ASSERT_TRUE(s.f().SetupRing(0, ring, kick, call));
    ring.Add({{mem.Alloc(64), 64, true}});
    // Every message handled (a reply comes after them) before the shrink.
    ASSERT_TRUE(s.f().GetU64(kGetFeatures));
    // From here on our own mapping of it faults too: not touched again.
    ASSERT_EQ(ftruncate(mem.fd(), 0), 0);
    ASSERT_TRUE(SignalFd(kick.get()));
    const absl::Status st = s.WaitClosed();
    EXPECT_TRUE(absl::IsDataLoss(st)) << st;
    EXPECT_NE(st.message().find("guest memory"), std::string::npos) << st;
  }
  Session s(*dev);
  RngRoundTrip(s);
  EXPECT_TRUE(s.Finish().ok());
}

// The inflight region truncated after SET_INFLIGHT_FD: the first pop
// tracked in it would SIGBUS.
TEST(VhostUserShrunkMemory, InflightRegionClosesTheConnectionNotTheProcess) {
  auto dev = Make("blk,backend=ram,size=1M,queue-size=64");
  for (bool packed : {false, true}) {
    Session s(*dev);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    AnyRing ring(mem, 64, packed);
    Negotiate(f, packed ? spec::Bit(spec::kFeatureRingPacked) : 0,
              kInflightProtocol);
    ASSERT_TRUE(f.SetMemTable(mem));
    const uint64_t bytes = InflightQueueRegionSize(64);
    UniqueFd region(memfd_create("shrinking-inflight", MFD_CLOEXEC));
    ASSERT_EQ(ftruncate(region.get(), static_cast<off_t>(bytes)), 0);
    InflightInfo info{bytes, 0, 1, 64};
    ASSERT_TRUE(f.Send(kSetInflightFd, info, {region.get()}));
    UniqueFd kick, call;
    ASSERT_TRUE(ring.Setup(f, 0, kick, call));
    ASSERT_TRUE(f.GetU64(kGetFeatures));  // all of the above handled
    ASSERT_EQ(ftruncate(region.get(), 0), 0);
    QueueWrite(mem, ring, 1, 0x11);
    ASSERT_TRUE(SignalFd(kick.get()));
    const absl::Status st = s.WaitClosed();
    EXPECT_TRUE(absl::IsDataLoss(st)) << st;
    EXPECT_NE(st.message().find("inflight region"), std::string::npos) << st;
  }
  // The next front-end: served.
  Session s(*dev);
  Frontend& f = s.f();
  SharedMemory mem(kGpa, kMemSize);
  AnyRing ring(mem, 64, false);
  Negotiate(f);
  ASSERT_TRUE(f.SetMemTable(mem));
  UniqueFd kick, call;
  ASSERT_TRUE(ring.Setup(f, 0, kick, call));
  const auto [head, status] = QueueWrite(mem, ring, 1, 0x22);
  ASSERT_TRUE(SignalFd(kick.get()));
  ASSERT_TRUE(WaitEvent(call.get()));
  auto u = ring.Reap();
  ASSERT_TRUE(u);
  EXPECT_EQ(u->first, head);
  EXPECT_EQ(*mem.host(status), virtio::blk::kStatusOk);
  EXPECT_TRUE(s.Finish().ok());
}

// Log lines captured by CaptureSink.
std::mutex g_log_mu;
std::vector<std::string> g_log;
void CaptureSink(virtio::LogLevel, std::string_view m) {
  std::lock_guard<std::mutex> l(g_log_mu);
  g_log.emplace_back(m);
}
int CountLogged(std::string_view what) {
  std::lock_guard<std::mutex> l(g_log_mu);
  return static_cast<int>(std::count_if(
      g_log.begin(), g_log.end(),
      [&](const std::string& m) { return m.find(what) != std::string::npos; }));
}

// A guest that floods the log uses up its own budget only: the next
// connection's guest errors are logged again.
TEST(VhostUserGuestErrors, EachConnectionHasItsOwnLogBudget) {
  auto dev = Make("rng");
  {
    std::lock_guard<std::mutex> l(g_log_mu);
    g_log.clear();
  }
  virtio::SetLogSink(&CaptureSink);
  {
    Session s(*dev);
    ASSERT_TRUE(s.f().GetU64(kGetFeatures));        // served: the budget is set
    for (int i = 0; i < 100; ++i) dev->Kick(1000);  // no such queue
    EXPECT_TRUE(s.Finish().ok());
  }
  EXPECT_EQ(CountLogged("nonexistent queue"), 20);
  {
    Session s(*dev);
    ASSERT_TRUE(s.f().GetU64(kGetFeatures));
    dev->Kick(1000);
    EXPECT_TRUE(s.Finish().ok());
  }
  virtio::SetLogSink(nullptr);
  EXPECT_EQ(CountLogged("nonexistent queue"), 21);
}

// Waits up to `seconds` for `count` log lines containing `what`.
bool WaitLogged(std::string_view what, int seconds, int count = 1) {
  for (int i = 0;; ++i) {
    if (CountLogged(what) >= count) return true;
    if (i >= seconds * 20) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// A request that never completes: the back-end says so on its own after
// a few seconds, with the queue's state, and dumps every queue on request.
TEST(VhostUserStall, StalledQueueIsLoggedAndStateDumpedOnRequest) {
  virtio::blktest::ScriptedDisk disk(1 << 20);
  auto dev = MakeScriptedBlk(disk);
  {
    std::lock_guard<std::mutex> l(g_log_mu);
    g_log.clear();
  }
  virtio::SetLogSink(&CaptureSink);
  UniqueFd dump(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  {
    Session s(*dev, false, dump.get());
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    AnyRing ring(mem, 64, false);
    Negotiate(f, spec::Bit(spec::kFeatureEventIdx));
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd kick, call;
    ASSERT_TRUE(ring.Setup(f, 0, kick, call));
    disk.hold = true;
    QueueWrite(mem, ring, 1, 0x11);
    QueueWrite(mem, ring, 2, 0x22);
    ASSERT_TRUE(SignalFd(kick.get()));
    // Nothing before kStallAfter...
    std::this_thread::sleep_for(std::chrono::seconds(3));
    EXPECT_EQ(CountLogged("no completion"), 0);
    // ... then one report with the queue's state.
    ASSERT_TRUE(WaitLogged("no completion for 5 s", 6));
    EXPECT_TRUE(WaitLogged("queue 0: running, size 64, split", 1));
    EXPECT_EQ(CountLogged("2 chains popped and not used"), 1);
    EXPECT_EQ(CountLogged("2 in the backend"), 1);
    EXPECT_EQ(CountLogged("kicks 1 (last"), 1);
    EXPECT_EQ(CountLogged("driver avail.idx 2"), 1);
    EXPECT_EQ(CountLogged("used_event"), 1);
    // On request, at any time.
    ASSERT_TRUE(SignalFd(dump.get()));
    ASSERT_TRUE(WaitLogged("queue state dump requested", 5));
    EXPECT_TRUE(WaitLogged("2 in the backend", 5, 2));
    EXPECT_EQ(CountLogged("no completion for 5 s"), 1);  // not repeated
    EXPECT_TRUE(s.Finish().ok());
  }
  virtio::SetLogSink(nullptr);
}

// QEMU swaps a running ring's call fd (guest MSI-X mask / unmask) without
// waiting for us and checks the old fd for a pending interrupt before we
// switch: the back-end signals the new fd once, so that an interrupt sent
// to the old one in that window is not lost. Not at the first setup.
TEST(VhostUserCallFd, NewCallFdOfARunningRingIsSignalledOnce) {
  auto dev = Make("rng");
  Session s(*dev);
  Frontend& f = s.f();
  SharedMemory mem(kGpa, kMemSize);
  SplitRing ring(mem, 16);
  Negotiate(f);
  ASSERT_TRUE(f.SetMemTable(mem));
  UniqueFd kick, call;
  ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
  ASSERT_TRUE(f.GetU64(kGetFeatures));
  EXPECT_FALSE(WaitEvent(call.get(), 100));  // nothing used, nothing sent
  UniqueFd call2(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(f.Send(kSetVringCall, uint64_t{0}, {call2.get()}));
  ASSERT_TRUE(f.GetU64(kGetFeatures));
  EXPECT_TRUE(WaitEvent(call2.get(), 1000));
  EXPECT_FALSE(WaitEvent(call2.get(), 100));  // once
  // And the ring goes on with it.
  const uint64_t buf = mem.Alloc(64);
  ring.Add({{buf, 64, true}});
  ASSERT_TRUE(SignalFd(kick.get()));
  ASSERT_TRUE(WaitEvent(call2.get()));
  EXPECT_TRUE(ring.Reap().has_value());
  EXPECT_TRUE(s.Finish().ok());
}

TEST(VhostUserDeviceSpec, RejectsBadSpecs) {
  EXPECT_FALSE(ParseDeviceSpec("").ok());
  EXPECT_FALSE(ParseDeviceSpec("blk,path").ok());
  EXPECT_FALSE(ParseDeviceSpec("blk,a=1,a=2").ok());
  // The grammar refuses these (virtio/catalog, tests/device_catalog_test.cc).
  for (const char* bad :
       {"blk", "blk,backend=ram", "blk,backend=ram,size=1M,bogus=1",
        "blk,backend=ram,size=1M,readonly=maybe",
        "blk,backend=ram,size=1M,num-queues=0", "rng,queue-size=x",
        "net,backend=loopback,mac=52:54:00:00:00",
        "net,backend=loopback,queue-pairs=2,ctrl-vq=off",
        "net,backend=loopback,ifname=tap0", "net,backend=vde",
        "console,backend=socket", "console,backend=stdio,path=/x",
        "frobnicator"}) {
    EXPECT_FALSE(ParseDeviceSpec(bad).ok()) << bad;
  }
  // These parse; opening the backend or building the device fails.
  for (const char* bad :
       {"blk,path=/nonexistent/x", "console,backend=file=/nonexistent/dir/x",
        "blk,backend=ram,size=1M,serial=123456789012345678901"}) {
    auto s = ParseDeviceSpec(bad);
    ASSERT_TRUE(s.ok()) << bad << ": " << s.status();
    EXPECT_FALSE(MakeDevice(*s).ok()) << bad;
  }
}

}  // namespace
}  // namespace vhost_user::testing
