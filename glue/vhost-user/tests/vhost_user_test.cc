// vhost-user protocol, device adapter and daemon, driven by an in-process
// front-end over a socketpair / Unix socket with memfd guest memory.
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <functional>
#include <future>
#include <thread>

#include "backend.h"
#include "connection.h"
#include "device_spec.h"
#include "frontend.h"
#include "interrupt.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "server.h"
#include "virtio/blk_spec.h"
#include "virtio/spec.h"

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

// One connection served on a thread.
class Session {
 public:
  explicit Session(VhostDevice& dev) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    front_ = std::make_unique<Frontend>(UniqueFd(sv[0]));
    UniqueFd back(sv[1]);
    result_ = std::async(std::launch::async, [&dev, b = std::move(back)]() mutable {
      ServeOptions o;
      o.message_timeout_ms = 2000;
      return ServeConnection(dev, std::move(b), o);
    });
  }
  ~Session() {
    if (front_) front_->Close();
    if (result_.valid()) result_.wait();
  }
  Frontend& f() { return *front_; }
  // Closes our end and returns how the back-end finished.
  absl::Status Finish() {
    front_->Close();
    return result_.get();
  }
  // Waits for the back-end to give up on its own.
  absl::Status WaitClosed() {
    EXPECT_TRUE(front_->PeerClosed());
    auto s = result_.get();
    front_->Close();
    return s;
  }

 private:
  std::unique_ptr<Frontend> front_;
  std::future<absl::Status> result_;
};

// Feature and protocol negotiation as QEMU does it.
void Negotiate(Frontend& f, uint64_t extra_features = 0,
               uint64_t protocol = Bit(kProtocolReplyAck) | Bit(kProtocolConfig)) {
  auto features = f.GetU64(kGetFeatures);
  ASSERT_TRUE(features);
  ASSERT_TRUE(*features & Bit(kFeatureProtocolFeatures));
  auto pf = f.GetU64(kGetProtocolFeatures);
  ASSERT_TRUE(pf);
  ASSERT_EQ(*pf & protocol, protocol);
  ASSERT_TRUE(f.Send(kSetProtocolFeatures, protocol));
  ASSERT_TRUE(f.Send(kSetOwner));
  ASSERT_TRUE(f.Send(kSetFeatures,
                     uint64_t{kVersion1 | Bit(kFeatureProtocolFeatures) |
                              (extra_features & *features)}));
}

// Reads 64 random bytes through a rng served over `s`.
void RngRoundTrip(Session& s) {
  SharedMemory mem(kGpa, kMemSize);
  SplitRing ring(mem, 16);
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
  EXPECT_FALSE(*pf & Bit(kProtocolInflightShmfd));
  EXPECT_FALSE(*pf & Bit(kProtocolLogShmfd));
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
    for (int i = 0; i < 4096; ++i) mem.host(data)[i] = static_cast<uint8_t>(i * 7);
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

TEST(VhostUserBlk, MemorySlotsAddAndRemove) {
  auto dev = Make("blk,backend=ram,size=1M");
  Session s(*dev);
  Frontend& f = s.f();
  Negotiate(f, 0,
            Bit(kProtocolReplyAck) | Bit(kProtocolConfigureMemSlots));
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
  const uint64_t ring = mem.Alloc(16 * 16, 16), drv = mem.Alloc(4, 4),
                 devev = mem.Alloc(4, 4);
  UniqueFd kick(eventfd(0, EFD_CLOEXEC)), call(eventfd(0, EFD_CLOEXEC));
  // Resume at avail 3 (wrap 1), used 3 (wrap 1).
  const uint32_t base = 3 | (1u << 15) | (3u << 16) | (1u << 31);
  ASSERT_TRUE(f.Send(kSetVringNum, VringState{0, 16}));
  ASSERT_TRUE(f.Send(kSetVringBase, VringState{0, base}));
  ASSERT_TRUE(f.Send(kSetVringAddr, VringAddr{0, 0, mem.uaddr(ring),
                                              mem.uaddr(devev), mem.uaddr(drv), 0}));
  ASSERT_TRUE(f.Send(kSetVringKick, uint64_t{0}, {kick.get()}));
  ASSERT_TRUE(f.Send(kSetVringEnable, VringState{0, 1}));
  ASSERT_TRUE(f.Send(kGetVringBase, VringState{0, 0}));
  auto r = f.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->As<VringState>().num, base);
  EXPECT_TRUE(s.Finish().ok());
}

// --- Hostile front-ends ---------------------------------------------------------

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
     [](Frontend& f, SharedMemory&) { f.SendRaw(kSetOwner, nullptr, 0, {}, 2); }},
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

// --- The daemon loop ------------------------------------------------------------

TEST(VhostUserDaemon, SocketIs0600AndAcceptsNextConnection) {
  auto dev = Make("rng");
  const std::string path =
      absl::StrFormat("/tmp/vhost-user-test-%d.sock", getpid());
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  DaemonOptions o;
  o.socket_path = path;
  o.max_connections = 2;
  o.serve.stop_fd = stop.get();
  auto daemon = std::async(std::launch::async, [&] { return RunDaemon(*dev, o); });
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
  auto daemon = std::async(std::launch::async, [&] { return RunDaemon(*dev, o); });
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

TEST(VhostUserDeviceSpec, RejectsBadSpecs) {
  EXPECT_FALSE(ParseDeviceSpec("").ok());
  EXPECT_FALSE(ParseDeviceSpec("blk,path").ok());
  EXPECT_FALSE(ParseDeviceSpec("blk,a=1,a=2").ok());
  for (const char* bad :
       {"blk", "blk,backend=ram", "blk,backend=ram,size=1M,bogus=1",
        "blk,backend=ram,size=1M,readonly=maybe", "blk,path=/nonexistent/x",
        "blk,backend=ram,size=1M,num-queues=0", "rng,queue-size=x", "net",
        "frobnicator"}) {
    auto s = ParseDeviceSpec(bad);
    ASSERT_TRUE(s.ok()) << bad;
    EXPECT_FALSE(MakeDevice(*s).ok()) << bad;
  }
}

}  // namespace
}  // namespace vhost_user::testing
