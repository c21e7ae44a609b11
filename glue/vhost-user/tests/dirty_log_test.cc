// Dirty-page logging (dirty_log.h): the bitmap, the per-queue observer on
// split and packed rings, the memory table's reverse lookup, and the
// vhost-user messages (SET_LOG_BASE, SET_LOG_FD, LOG_ALL, VHOST_VRING_F_LOG)
// end to end against a RAM-disk virtio-blk; plus BACKEND_SEND_FD.
#include "vhost_user/dirty_log.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <set>
#include <string>

#include "device_spec.h"
#include "frontend.h"
#include "gtest/gtest.h"
#include "session.h"
#include "vhost_user/backend.h"
#include "vhost_user/connection.h"
#include "vhost_user/interrupt.h"
#include "vhost_user/memory_table.h"
#include "vhost_user/server.h"
#include "virtio/blk_spec.h"
#include "virtio/packed_queue.h"
#include "virtio/spec.h"
#include "virtio/split_queue.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/test_memory.h"

namespace vhost_user::testing {
namespace {

namespace spec = virtio::spec;
using virtio::testing::Buffer;

constexpr uint64_t kPage = kLogPageSize;

// A memfd of `size` bytes named `name` (so its mappings can be counted).
UniqueFd MakeMemfd(const char* name, uint64_t size) {
  UniqueFd fd(memfd_create(name, MFD_CLOEXEC));
  if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) std::abort();
  return fd;
}

// Mappings of memfd `name` in this process.
int CountMappings(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) {
    if (line.find("/memfd:" + name + " ") != std::string::npos) ++n;
  }
  return n;
}

// The pages whose bits are set, read from the fd (not through DirtyLog).
std::set<uint64_t> DirtyPages(int fd, uint64_t size, uint64_t offset = 0) {
  std::vector<uint8_t> bits(size);
  EXPECT_EQ(pread(fd, bits.data(), size, static_cast<off_t>(offset)),
            static_cast<ssize_t>(size));
  std::set<uint64_t> pages;
  for (uint64_t i = 0; i < size * 8; ++i) {
    if (bits[i / 8] >> (i % 8) & 1) pages.insert(i);
  }
  return pages;
}

void ClearLog(int fd, uint64_t size) {
  std::vector<uint8_t> zero(size, 0);
  ASSERT_EQ(pwrite(fd, zero.data(), size, 0), static_cast<ssize_t>(size));
}

// Pages [gpa, gpa + len) touches.
void AddPages(std::set<uint64_t>& s, uint64_t gpa, uint64_t len) {
  for (uint64_t p = gpa / kPage; p <= (gpa + len - 1) / kPage; ++p) s.insert(p);
}

// --- DirtyLog ----------------------------------------------------------------

TEST(DirtyLog, MarksExactlyThePagesARangeTouches) {
  UniqueFd fd = MakeMemfd("dirty-log-math", 64);
  auto log = DirtyLog::Map(fd.get(), 64, 0);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->covered_end(), uint64_t{64} * 8 * kPage);
  std::set<uint64_t> want;
  EXPECT_TRUE(log->Mark(0x0fff, 1));  // last byte of page 0
  want.insert(0);
  EXPECT_TRUE(log->Mark(0x2fff, 2));  // straddles pages 2 and 3
  want.insert(2);
  want.insert(3);
  EXPECT_TRUE(log->Mark(5 * kPage, kPage));  // exactly page 5
  want.insert(5);
  EXPECT_TRUE(log->Mark(7 * kPage, 3 * kPage + 1));  // 7..10
  AddPages(want, 7 * kPage, 3 * kPage + 1);
  EXPECT_TRUE(log->Mark(20 * kPage + 5, 30 * kPage));  // 20..50, many bytes
  AddPages(want, 20 * kPage + 5, 30 * kPage);
  EXPECT_TRUE(log->Mark(100 * kPage, 0));  // nothing
  EXPECT_EQ(DirtyPages(fd.get(), 64), want);
  for (uint64_t p : want) EXPECT_TRUE(log->IsDirty(p * kPage + 17));
  EXPECT_FALSE(log->IsDirty(4 * kPage));
}

TEST(DirtyLog, NeverWritesPastTheLog) {
  // 16 bytes of log inside a 2-page file at an unaligned offset: bytes
  // around it must stay untouched.
  UniqueFd fd = MakeMemfd("dirty-log-edge", 2 * kPage);
  const uint64_t offset = kPage + 8;
  auto log = DirtyLog::Map(fd.get(), 16, offset);
  ASSERT_TRUE(log.ok()) << log.status();
  const uint64_t end = log->covered_end();
  EXPECT_EQ(end, 128 * kPage);
  EXPECT_FALSE(log->Mark(end - 1, 2));  // last page marked, beyond dropped
  EXPECT_FALSE(log->Mark(end, 1));
  EXPECT_FALSE(log->Mark(UINT64_MAX - 10, 100));  // wraps
  EXPECT_FALSE(log->Mark(126 * kPage, UINT64_MAX));
  std::vector<uint8_t> all(2 * kPage);
  ASSERT_EQ(pread(fd.get(), all.data(), all.size(), 0),
            static_cast<ssize_t>(all.size()));
  for (uint64_t i = 0; i < all.size(); ++i) {
    const uint8_t want = i == offset + 15 ? 0xc0 : 0;  // pages 126, 127
    ASSERT_EQ(all[i], want) << "byte " << i;
  }
}

TEST(DirtyLog, MapRejectsBadDescriptions) {
  UniqueFd fd = MakeMemfd("dirty-log-map", kPage);
  EXPECT_FALSE(DirtyLog::Map(-1, 16, 0).ok());
  EXPECT_FALSE(DirtyLog::Map(fd.get(), 0, 0).ok());
  EXPECT_FALSE(DirtyLog::Map(fd.get(), kPage + 1, 0).ok());
  EXPECT_FALSE(DirtyLog::Map(fd.get(), 16, kPage - 8).ok());
  EXPECT_FALSE(DirtyLog::Map(fd.get(), 16, UINT64_MAX - 8).ok());
  EXPECT_FALSE(DirtyLog::Map(fd.get(), DirtyLog::kMaxSize + 1, 0).ok());
  UniqueFd ev(eventfd(0, EFD_CLOEXEC));
  EXPECT_FALSE(DirtyLog::Map(ev.get(), 16, 0).ok());
  EXPECT_EQ(CountMappings("dirty-log-map"), 0);
  {
    auto log = DirtyLog::Map(fd.get(), kPage, 0);
    ASSERT_TRUE(log.ok());
    EXPECT_EQ(CountMappings("dirty-log-map"), 1);
    DirtyLog moved = *std::move(log);
    EXPECT_TRUE(moved.mapped());
  }
  EXPECT_EQ(CountMappings("dirty-log-map"), 0);
}

// --- MemoryTable::HostToGuest ----------------------------------------------

TEST(MemoryTableReverse, HostToGuestFindsTheRegion) {
  MemoryTable t;
  std::vector<UniqueFd> fds;
  fds.push_back(MakeMemfd("rev-a", 0x10000));
  fds.push_back(MakeMemfd("rev-b", 0x20000));
  const MemoryRegion regions[] = {{0x200000, 0x20000, 0x7000000000, 0},
                                  {0x100000, 0x10000, 0x7100000000, 0}};
  std::swap(fds[0], fds[1]);
  ASSERT_TRUE(t.Replace(regions, std::move(fds)).ok());
  EXPECT_EQ(t.guest_end(), 0x220000u);
  for (uint64_t gpa : {0x100000ull, 0x10ffffull, 0x200000ull, 0x21fff0ull}) {
    const uint8_t* h = t.TranslateContiguous(gpa, 1);
    ASSERT_NE(h, nullptr);
    auto back = t.HostToGuest(h, 1);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, gpa);
  }
  const uint8_t* last = t.TranslateContiguous(0x10ffff, 1);
  EXPECT_FALSE(t.HostToGuest(last, 2));  // runs off the mapping
  int local = 0;
  EXPECT_FALSE(t.HostToGuest(&local, 1));
  t.Clear();
  EXPECT_FALSE(t.HostToGuest(last, 1));
  EXPECT_EQ(t.guest_end(), 0u);
}

// --- DirtyLogQueue on real rings -----------------------------------------

// Two adjacent guest regions backed by memfds, seen by the driver through
// one mapping each and by the device through a MemoryTable of the same fds.
class RingFixture : public ::testing::Test {
 protected:
  static constexpr uint64_t kA = 0x100000, kB = 0x200000, kSize = 0x100000;

  void SetUp() override {
    fa_ = MakeMemfd("ring-a", kSize);
    fb_ = MakeMemfd("ring-b", kSize);
    ha_ = Map(fa_.get());
    hb_ = Map(fb_.get());
    const virtio::GuestRegion r[] = {{kA, kSize, ha_}, {kB, kSize, hb_}};
    mem_ = std::make_unique<virtio::testing::TestGuestMemory>(
        virtio::testing::kExternalMemory, r);
    std::vector<UniqueFd> fds;
    fds.emplace_back(dup(fa_.get()));
    fds.emplace_back(dup(fb_.get()));
    const MemoryRegion regions[] = {{kA, kSize, 0x10000000, 0},
                                    {kB, kSize, 0x10000000 + kSize, 0}};
    ASSERT_TRUE(table_.Replace(regions, std::move(fds)).ok());
    logfd_ = MakeMemfd("ring-log", kLogBytes);
    auto log = DirtyLog::Map(logfd_.get(), kLogBytes, 0);
    ASSERT_TRUE(log.ok());
    log_ = *std::move(log);
  }
  void TearDown() override {
    munmap(ha_, kSize);
    munmap(hb_, kSize);
  }
  static uint8_t* Map(int fd) {
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) std::abort();
    return static_cast<uint8_t*>(p);
  }
  std::set<uint64_t> Dirty() { return DirtyPages(logfd_.get(), kLogBytes); }

  static constexpr uint64_t kLogBytes = 128;  // 4 MiB of guest memory
  UniqueFd fa_, fb_, logfd_;
  uint8_t *ha_ = nullptr, *hb_ = nullptr;
  std::unique_ptr<virtio::testing::TestGuestMemory> mem_;
  MemoryTable table_;
  DirtyLog log_;
};

using SplitQ = virtio::SplitQueue<MemoryTable, DirtyLogQueue>;
using PackedQ = virtio::PackedQueue<MemoryTable, DirtyLogQueue>;

TEST_F(RingFixture, SplitLogsWrittenPrefixStatusByteAndUsedRing) {
  virtio::testing::SplitDriver driver(*mem_, 16);
  DirtyLogQueue dl;
  dl.Start(log_, table_,
           {.size = 16, .log_used = true, .used_log_gpa = driver.used_gpa()},
           -1);
  auto q = SplitQ::Create(table_, driver.config(), {}, &dl);
  ASSERT_TRUE(q.ok()) << q.status();
  // Readable header on its own page; a 3-page writable buffer crossing the
  // region boundary; 4 more pages; a status byte on its own page.
  const uint64_t hdr = kA + 0x40000;
  const uint64_t data = kB - 0x800;
  const uint64_t more = kB + 0x10000;
  const uint64_t status = kB + 0x30000 + 0x123;
  ASSERT_TRUE(driver.Add({{hdr, 16, false},
                          {data, 0x2000, true},
                          {more, 4 * 0x1000, true},
                          {status, 1, true}}));
  driver.Kick();
  virtio::DescriptorChain chain;
  ASSERT_EQ(q->Pop(chain), virtio::PopStatus::kChain);
  EXPECT_TRUE(Dirty().empty());  // nothing before the push
  // The device wrote 0x2000 + 0x1001 bytes and the status byte at the end.
  q->Push(chain.token(), 0x3001);
  std::set<uint64_t> want;
  AddPages(want, data, 0x2000);
  AddPages(want, more, 0x1001);
  AddPages(want, status, 1);
  EXPECT_EQ(Dirty(), want);  // the used element is not written yet
  q->Publish();
  AddPages(want, driver.used_gpa(), 4 + 8);
  AddPages(want, driver.used_gpa() + spec::SplitAvailEventOffset(16), 2);
  EXPECT_EQ(Dirty(), want);
  EXPECT_FALSE(Dirty().count(hdr / kPage));
  EXPECT_FALSE(Dirty().count((more + 0x2000) / kPage));
  EXPECT_EQ(dl.dropped(), 0u);
  ASSERT_TRUE(driver.Reap());
}

TEST_F(RingFixture, SplitWithoutVringLogSkipsTheUsedRing) {
  virtio::testing::SplitDriver driver(*mem_, 16);
  DirtyLogQueue dl;
  dl.Start(log_, table_, {.size = 16}, -1);
  auto q = SplitQ::Create(table_, driver.config(), {}, &dl);
  ASSERT_TRUE(q.ok());
  const uint64_t buf = kA + 0x80000;
  ASSERT_TRUE(driver.Add({{buf, 100, true}}));
  driver.Kick();
  virtio::DescriptorChain chain;
  ASSERT_EQ(q->Pop(chain), virtio::PopStatus::kChain);
  q->Push(chain.token(), 0);  // nothing written: nothing marked
  q->Publish();
  EXPECT_TRUE(Dirty().empty());
  ASSERT_TRUE(driver.Add({{buf, 100, true}}));
  driver.Kick();
  ASSERT_EQ(q->Pop(chain), virtio::PopStatus::kChain);
  q->Push(chain.token(), 100);
  q->Publish();
  EXPECT_EQ(Dirty(), std::set<uint64_t>{buf / kPage});
}

TEST_F(RingFixture, ManySegmentsCoalesceWithoutLosingAPage) {
  virtio::testing::SplitDriver driver(*mem_, 64, {.indirect = true});
  DirtyLogQueue dl;
  dl.Start(log_, table_, {.size = 64}, -1);
  auto q = SplitQ::Create(table_, driver.config(), {}, &dl);
  ASSERT_TRUE(q.ok());
  // 40 one-page buffers scattered over both regions, in a jumbled order.
  std::vector<Buffer> bufs;
  std::set<uint64_t> want;
  for (uint64_t i = 0; i < 40; ++i) {
    const uint64_t page = (i * 37) % 200;  // distinct
    const uint64_t gpa = (page < 100 ? kA : kB) + (page % 100) * 2 * kPage;
    bufs.push_back({gpa, static_cast<uint32_t>(kPage), true});
    want.insert(gpa / kPage);
  }
  ASSERT_TRUE(driver.Add(bufs, /*indirect=*/true));
  driver.Kick();
  virtio::DescriptorChain chain;
  ASSERT_EQ(q->Pop(chain), virtio::PopStatus::kChain);
  q->Push(chain.token(), 40 * kPage);
  q->Publish();
  const std::set<uint64_t> got = Dirty();
  for (uint64_t p : want) EXPECT_TRUE(got.count(p)) << "page " << p;
  // Coalescing over-marks, but only inside the hulls of what was written.
  for (uint64_t p : got) {
    EXPECT_TRUE(p >= kA / kPage && p < (kB + kSize) / kPage) << "page " << p;
  }
  // A short write still marks every page the prefix reached.
  ClearLog(logfd_.get(), kLogBytes);
  ASSERT_TRUE(driver.Reap());
  ASSERT_TRUE(driver.Add(bufs, true));
  driver.Kick();
  ASSERT_EQ(q->Pop(chain), virtio::PopStatus::kChain);
  q->Push(chain.token(), 5 * kPage);
  q->Publish();
  const std::set<uint64_t> got2 = Dirty();
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(got2.count(bufs[i].gpa / kPage)) << "buffer " << i;
  }
  EXPECT_TRUE(got2.count(bufs.back().gpa / kPage));  // last byte rule
}

TEST_F(RingFixture, ReusedHeadMarksBothChainsWhole) {
  virtio::testing::SplitDriver driver(*mem_, 16);
  DirtyLogQueue dl;
  dl.Start(log_, table_, {.size = 16}, -1);
  auto q = SplitQ::Create(table_, driver.config(), {}, &dl);
  ASSERT_TRUE(q.ok());
  const uint64_t a = kA + 0x10000, b = kB + 0x50000;
  auto head = driver.Add({{a, 3 * kPage, true}});
  ASSERT_TRUE(head);
  driver.Kick();
  virtio::DescriptorChain c1, c2;
  ASSERT_EQ(q->Pop(c1), virtio::PopStatus::kChain);
  // A hostile driver points the head elsewhere and posts it again.
  driver.WriteDesc(*head, {b, 2 * kPage, spec::kDescFlagWrite, 0});
  driver.PostHead(*head);
  ASSERT_EQ(q->Pop(c2), virtio::PopStatus::kChain);
  q->Push(c1.token(), 1);
  q->Publish();
  std::set<uint64_t> want;
  AddPages(want, a, 3 * kPage);
  AddPages(want, b, 2 * kPage);
  EXPECT_EQ(Dirty(), want);
}

TEST_F(RingFixture, PackedLogsDescriptorSlotsAndDeviceArea) {
  virtio::testing::PackedDriver driver(*mem_, 8);
  DirtyLogQueue dl;
  const virtio::QueueConfig cfg = driver.config();
  dl.Start(log_, table_,
           {.packed = true,
            .size = 8,
            .desc_gpa = cfg.desc_addr,
            .log_used = true,
            .used_log_gpa = driver.device_event_gpa()},
           -1);
  auto q = PackedQ::Create(table_, cfg, {}, &dl);
  ASSERT_TRUE(q.ok()) << q.status();
  const uint64_t buf = kB + 0x70000;
  ASSERT_TRUE(driver.Add({{kA + 0x60000, 16, false}, {buf, 2 * kPage, true}}));
  driver.Kick();
  virtio::DescriptorChain chain;
  ASSERT_EQ(q->Pop(chain), virtio::PopStatus::kChain);
  q->Push(chain.token(), 2 * kPage);
  q->Publish();
  std::set<uint64_t> want;
  AddPages(want, buf, 2 * kPage);
  AddPages(want, driver.desc_gpa(0), 16);
  AddPages(want, driver.device_event_gpa(), 4);
  EXPECT_EQ(Dirty(), want);
  ASSERT_TRUE(driver.Reap());
  // Stopping marks the whole descriptor ring.
  ClearLog(logfd_.get(), kLogBytes);
  dl.MarkRing();
  std::set<uint64_t> ring;
  AddPages(ring, driver.desc_gpa(0), uint64_t{16} * 8);
  AddPages(ring, driver.device_event_gpa(), 4);
  EXPECT_EQ(Dirty(), ring);
}

// --- vhost-user end to end
// ----------------------------------------------------

constexpr uint64_t kVersion1 = uint64_t{1} << spec::kFeatureVersion1;
constexpr uint64_t kGpa = 0x100000;
constexpr uint64_t kMemSize = 1 << 20;
// Covers guest-physical 0..4 MiB.
constexpr uint64_t kLogSize = 128;

std::unique_ptr<VhostDevice> Make(const std::string& text) {
  auto s = ParseDeviceSpec(text);
  EXPECT_TRUE(s.ok()) << s.status();
  auto d = MakeDevice(*s);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

constexpr uint64_t kProtocol =
    Bit(kProtocolReplyAck) | Bit(kProtocolConfig) | Bit(kProtocolLogShmfd);

// QEMU's negotiation; returns the offered features.
uint64_t Negotiate(Frontend& f, bool log_all, uint64_t protocol = kProtocol) {
  auto features = f.GetU64(kGetFeatures);
  EXPECT_TRUE(features);
  if (!features) return 0;
  EXPECT_TRUE(f.Send(kSetProtocolFeatures, protocol));
  EXPECT_TRUE(f.Send(kSetOwner));
  EXPECT_TRUE(
      f.Send(kSetFeatures, uint64_t{kVersion1 | Bit(kFeatureProtocolFeatures) |
                                    (log_all ? Bit(kFeatureLogAll) : 0)}));
  return *features;
}

// Sends `request` with NEED_REPLY and expects a zero u64 reply.
void SendAcked(Frontend& f, uint32_t request, const void* p, uint32_t len,
               const std::vector<int>& fds = {}) {
  ASSERT_TRUE(f.SendRaw(request, p, len, fds, kVersion | kFlagNeedReply));
  auto r = f.Receive();
  ASSERT_TRUE(r) << RequestName(request);
  EXPECT_EQ(r->request(), request);
  EXPECT_EQ(r->As<uint64_t>(), 0u);
}

void SetLogBase(Frontend& f, int fd, uint64_t size, uint64_t offset = 0) {
  const LogDescription d{size, offset};
  ASSERT_TRUE(f.Send(kSetLogBase, d, {fd}));
  // Answered without NEED_REPLY: QEMU waits for it.
  auto r = f.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->request(), static_cast<uint32_t>(kSetLogBase));
  EXPECT_EQ(r->As<uint64_t>(), 0u);
}

struct BlkReq {
  uint32_t type, reserved;
  uint64_t sector;
};

// One blk request on `ring`; returns the used length.
uint32_t Request(SharedMemory& mem, SplitRing& ring, int kick, int call,
                 uint32_t type, uint64_t sector, uint64_t hdr, uint64_t data,
                 uint32_t len, uint64_t status) {
  BlkReq r{type, 0, sector};
  std::memcpy(mem.host(hdr), &r, sizeof r);
  std::vector<Buf> bufs = {{hdr, 16, false}};
  if (len > 0) bufs.push_back({data, len, type == virtio::blk::kTypeIn});
  bufs.push_back({status, 1, true});
  ring.Add(bufs);
  EXPECT_TRUE(SignalFd(kick));
  EXPECT_TRUE(WaitEvent(call));
  auto u = ring.Reap();
  EXPECT_TRUE(u);
  return u ? u->second : 0;
}

class DirtyLogBlk : public ::testing::Test {
 protected:
  void SetUp() override {
    dev_ = Make("blk,backend=ram,size=1M,queue-size=64");
    ASSERT_TRUE(dev_);
    fds_ = CountOpenFds();
  }
  void TearDown() override {
    EXPECT_EQ(CountOpenFds(), fds_);
    EXPECT_EQ(CountMappings("vu-log"), 0);
    EXPECT_EQ(CountMappings("vu-log2"), 0);
  }
  // The used ring's guest-physical address.
  static uint64_t UsedGpa(const SharedMemory& mem, const SplitRing& ring) {
    return ring.used_uaddr() - mem.uaddr(mem.gpa()) + mem.gpa();
  }
  // Pages a used element in slot `slot` plus the header and avail_event
  // touch.
  static void AddUsed(std::set<uint64_t>& s, uint64_t used, uint16_t slot,
                      uint16_t size) {
    AddPages(s, used, 4);
    AddPages(s, used + 4 + 8ull * slot, 8);
    AddPages(s, used + spec::SplitAvailEventOffset(size), 2);
  }

  std::unique_ptr<VhostDevice> dev_;
  int fds_ = 0;
};

// A hostile front-end shrinks the dirty log after SET_LOG_BASE: the first
// mark would SIGBUS. The connection is closed with the reason, the process
// lives on and serves the next front-end.
TEST_F(DirtyLogBlk, ShrunkLogClosesTheConnectionNotTheProcess) {
  {
    Session s(*dev_);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing ring(mem, 64);
    Negotiate(f, false);
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd kick, call;
    ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
    mem.Alloc(kPage, kPage);
    const uint64_t hdr = mem.Alloc(kPage, kPage);
    const uint64_t data = mem.Alloc(kPage, kPage);
    const uint64_t status = mem.Alloc(kPage, kPage);
    UniqueFd logfd = MakeMemfd("vu-log", kLogSize);
    SetLogBase(f, logfd.get(), kLogSize);
    const uint64_t features =
        kVersion1 | Bit(kFeatureProtocolFeatures) | Bit(kFeatureLogAll);
    SendAcked(f, kSetFeatures, &features, sizeof features);
    ASSERT_TRUE(f.GetU64(kGetFeatures));  // all of the above handled
    ASSERT_EQ(ftruncate(logfd.get(), 0), 0);
    BlkReq r{virtio::blk::kTypeIn, 0, 0};
    std::memcpy(mem.host(hdr), &r, sizeof r);
    ring.Add({{hdr, 16, false}, {data, kPage, true}, {status, 1, true}});
    ASSERT_TRUE(SignalFd(kick.get()));
    const absl::Status st = s.WaitClosed();
    EXPECT_TRUE(absl::IsDataLoss(st)) << st;
    EXPECT_NE(st.message().find("dirty log"), std::string::npos) << st;
  }
  Session s(*dev_);
  Frontend& f = s.f();
  SharedMemory mem(kGpa, kMemSize);
  SplitRing ring(mem, 64);
  Negotiate(f, false);
  ASSERT_TRUE(f.SetMemTable(mem));
  UniqueFd kick, call;
  ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
  const uint64_t hdr = mem.Alloc(kPage, kPage);
  const uint64_t data = mem.Alloc(kPage, kPage);
  const uint64_t status = mem.Alloc(kPage, kPage);
  EXPECT_EQ(Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn, 0,
                    hdr, data, kPage, status),
            kPage + 1);
  EXPECT_TRUE(s.Finish().ok());
}

TEST_F(DirtyLogBlk, LogsExactlyTheDevicesWritesWhileLogAllIsOn) {
  {
    Session s(*dev_);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing ring(mem, 64);
    const uint64_t offered = Negotiate(f, false);
    EXPECT_TRUE(offered & Bit(kFeatureLogAll));
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd kick, call;
    ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
    // Buffers on their own pages, away from the rings (first page).
    mem.Alloc(kPage, kPage);
    const uint64_t hdr = mem.Alloc(kPage, kPage);
    const uint64_t data = mem.Alloc(3 * kPage, kPage) + 0x800;  // 3 pages
    const uint64_t status = mem.Alloc(kPage, kPage) + 0x7ff;
    const uint64_t used = UsedGpa(mem, ring);
    UniqueFd logfd = MakeMemfd("vu-log", kLogSize);

    // Before migration: no log, nothing to mark.
    EXPECT_EQ(Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn,
                      0, hdr, data, 2 * kPage, status),
              2 * kPage + 1);

    // Migration starts as QEMU does it: log, LOG_ALL, then F_LOG per ring.
    SetLogBase(f, logfd.get(), kLogSize);
    const uint64_t features =
        kVersion1 | Bit(kFeatureProtocolFeatures) | Bit(kFeatureLogAll);
    SendAcked(f, kSetFeatures, &features, sizeof features);
    VringAddr a{0,
                kVringFlagLog,
                ring.desc_uaddr(),
                ring.used_uaddr(),
                ring.avail_uaddr(),
                used};
    SendAcked(f, kSetVringAddr, &a, sizeof a);
    EXPECT_TRUE(DirtyPages(logfd.get(), kLogSize).empty());

    // A read: data, status and the used ring.
    EXPECT_EQ(Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn,
                      0, hdr, data, 2 * kPage, status),
              2 * kPage + 1);
    std::set<uint64_t> want;
    AddPages(want, data, 2 * kPage);
    AddPages(want, status, 1);
    AddUsed(want, used, 1, 64);
    EXPECT_EQ(DirtyPages(logfd.get(), kLogSize), want);

    // A write: only the status byte and the used ring.
    ClearLog(logfd.get(), kLogSize);
    Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeOut, 0, hdr,
            data, kPage, status);
    want.clear();
    AddPages(want, status, 1);
    AddUsed(want, used, 2, 64);
    EXPECT_EQ(DirtyPages(logfd.get(), kLogSize), want);

    // A failed read (beyond the disk): len 1, the status byte at the end.
    ClearLog(logfd.get(), kLogSize);
    EXPECT_EQ(Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn,
                      1u << 30, hdr, data, kPage, status),
              1u);
    EXPECT_EQ(*mem.host(status), virtio::blk::kStatusIoErr);
    // len counts from the chain's start, so the first data byte's page is
    // marked too (over-marking is safe); the status byte's page must be.
    want.clear();
    AddPages(want, data, 1);
    AddPages(want, status, 1);
    AddUsed(want, used, 3, 64);
    EXPECT_EQ(DirtyPages(logfd.get(), kLogSize), want);

    // SET_LOG_FD: signalled after logging.
    UniqueFd logcall(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    SendAcked(f, kSetLogFd, nullptr, 0, {logcall.get()});
    Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn, 0, hdr,
            data, kPage, status);
    EXPECT_TRUE(WaitEvent(logcall.get(), 1000));

    // The log grows (new SET_LOG_BASE while running): the old one is left
    // alone from the reply on.
    UniqueFd logfd2 = MakeMemfd("vu-log2", 2 * kLogSize);
    SetLogBase(f, logfd2.get(), 2 * kLogSize);
    ClearLog(logfd.get(), kLogSize);
    Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn, 0, hdr,
            data, kPage, status);
    EXPECT_TRUE(DirtyPages(logfd.get(), kLogSize).empty());
    want.clear();
    AddPages(want, data, kPage);
    AddPages(want, status, 1);
    AddUsed(want, used, 5, 64);
    // (The stop around the swap marked the used ring in the old log.)
    EXPECT_EQ(DirtyPages(logfd2.get(), 2 * kLogSize), want);

    // Migration ends: LOG_ALL off, nothing is marked any more.
    const uint64_t plain = kVersion1 | Bit(kFeatureProtocolFeatures);
    SendAcked(f, kSetFeatures, &plain, sizeof plain);
    ClearLog(logfd2.get(), 2 * kLogSize);
    Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn, 0, hdr,
            data, kPage, status);
    EXPECT_TRUE(DirtyPages(logfd2.get(), 2 * kLogSize).empty());

    // GET_VRING_BASE with logging on marks the whole used ring.
    SendAcked(f, kSetFeatures, &features, sizeof features);
    ClearLog(logfd2.get(), 2 * kLogSize);
    ASSERT_TRUE(f.Send(kGetVringBase, VringState{0, 0}));
    auto r = f.Receive();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->As<VringState>().num, 7u);
    want.clear();
    AddPages(want, used, spec::SplitUsedRingSize(64));
    EXPECT_EQ(DirtyPages(logfd2.get(), 2 * kLogSize), want);
    EXPECT_TRUE(s.Finish().ok());
  }
}

TEST_F(DirtyLogBlk, NothingIsMarkedWithoutLogAll) {
  {
    Session s(*dev_);
    Frontend& f = s.f();
    SharedMemory mem(kGpa, kMemSize);
    SplitRing ring(mem, 64);
    Negotiate(f, false);
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd kick, call;
    ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
    UniqueFd logfd = MakeMemfd("vu-log", kLogSize);
    SetLogBase(f, logfd.get(), kLogSize);
    VringAddr a{0,
                kVringFlagLog,
                ring.desc_uaddr(),
                ring.used_uaddr(),
                ring.avail_uaddr(),
                UsedGpa(mem, ring)};
    SendAcked(f, kSetVringAddr, &a, sizeof a);
    const uint64_t hdr = mem.Alloc(16), data = mem.Alloc(kPage, kPage),
                   status = mem.Alloc(1);
    Request(mem, ring, kick.get(), call.get(), virtio::blk::kTypeIn, 0, hdr,
            data, kPage, status);
    EXPECT_TRUE(DirtyPages(logfd.get(), kLogSize).empty());
    EXPECT_TRUE(s.Finish().ok());
  }
}

// --- Hostile SET_LOG_BASE
// -----------------------------------------------------

struct BadLog {
  const char* name;
  uint64_t protocol;
  std::function<void(Frontend&, int memfd, SharedMemory&, SplitRing&)> send;
};

void PrintTo(const BadLog& b, std::ostream* os) { *os << b.name; }

class DirtyLogHostile : public ::testing::TestWithParam<BadLog> {};

void SendLog(Frontend& f, uint64_t size, uint64_t offset,
             const std::vector<int>& fds) {
  const LogDescription d{size, offset};
  EXPECT_TRUE(f.Send(kSetLogBase, d, fds));
}

const BadLog kBadLogs[] = {
    {"TooSmallForTheMemoryTable", kProtocol,
     [](Frontend& f, int fd, SharedMemory&, SplitRing&) {
       // 8 bytes cover 256 KiB; guest memory reaches 2 MiB.
       SendLog(f, 8, 0, {fd});
     }},
    {"OffsetPastTheFile", kProtocol,
     [](Frontend& f, int fd, SharedMemory&, SplitRing&) {
       SendLog(f, kLogSize, 2 * kPage, {fd});
     }},
    {"OffsetOverflows", kProtocol,
     [](Frontend& f, int fd, SharedMemory&, SplitRing&) {
       SendLog(f, kLogSize, UINT64_MAX - 64, {fd});
     }},
    {"Empty", kProtocol,
     [](Frontend& f, int fd, SharedMemory&, SplitRing&) {
       SendLog(f, 0, 0, {fd});
     }},
    {"NoFd", kProtocol,
     [](Frontend& f, int, SharedMemory&, SplitRing&) {
       SendLog(f, kLogSize, 0, {});
     }},
    {"EventfdNotMappable", kProtocol,
     [](Frontend& f, int, SharedMemory&, SplitRing&) {
       UniqueFd ev(eventfd(0, EFD_CLOEXEC));
       SendLog(f, kLogSize, 0, {ev.get()});
     }},
    {"WithoutLogShmfd", Bit(kProtocolReplyAck),
     [](Frontend& f, int fd, SharedMemory&, SplitRing&) {
       SendLog(f, kLogSize, 0, {fd});
     }},
    {"WrongPayloadSize", kProtocol,
     [](Frontend& f, int fd, SharedMemory&, SplitRing&) {
       const uint64_t v = kLogSize;
       EXPECT_TRUE(f.Send(kSetLogBase, v, {fd}));
     }},
    {"LogFdWithoutFd", kProtocol,
     [](Frontend& f, int, SharedMemory&, SplitRing&) {
       EXPECT_TRUE(f.Send(kSetLogFd));
     }},
    {"UsedLogAddressBeyondTheLog", kProtocol,
     [](Frontend& f, int fd, SharedMemory&, SplitRing& ring) {
       UniqueFd kick, call;
       ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
       SetLogBase(f, fd, kLogSize);
       const uint64_t features =
           kVersion1 | Bit(kFeatureProtocolFeatures) | Bit(kFeatureLogAll);
       SendAcked(f, kSetFeatures, &features, sizeof features);
       VringAddr a{0,
                   kVringFlagLog,
                   ring.desc_uaddr(),
                   ring.used_uaddr(),
                   ring.avail_uaddr(),
                   kLogSize * 8 * kPage - 8};
       EXPECT_TRUE(f.Send(kSetVringAddr, a));
     }},
    {"RunningRingMoved", kProtocol,
     [](Frontend& f, int, SharedMemory&, SplitRing& ring) {
       UniqueFd kick, call;
       ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
       VringAddr a{0,
                   kVringFlagLog,
                   ring.desc_uaddr() + 4096,
                   ring.used_uaddr(),
                   ring.avail_uaddr(),
                   0};
       EXPECT_TRUE(f.Send(kSetVringAddr, a));
     }},
};

TEST_P(DirtyLogHostile, ClosesTheConnectionAndLeaksNothing) {
  auto dev = Make("blk,backend=ram,size=64K,queue-size=64");
  ASSERT_TRUE(dev);
  const int fds = CountOpenFds();
  {
    SharedMemory mem(kGpa, kMemSize);
    SplitRing ring(mem, 64);
    UniqueFd logfd = MakeMemfd("vu-bad-log", kPage);
    Session s(*dev);
    Negotiate(s.f(), false, GetParam().protocol);
    ASSERT_TRUE(s.f().SetMemTable(mem));
    GetParam().send(s.f(), logfd.get(), mem, ring);
    EXPECT_FALSE(s.WaitClosed().ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(CountMappings("vu-bad-log"), 0);
  EXPECT_EQ(dev->memory().num_regions(), 0u);
}

INSTANTIATE_TEST_SUITE_P(All, DirtyLogHostile, ::testing::ValuesIn(kBadLogs),
                         [](const auto& info) { return info.param.name; });

// --- BACKEND_SEND_FD
// -----------------------------------------------------------

Message Msg(uint32_t request, const void* p = nullptr, uint32_t len = 0) {
  Message m;
  m.header = {request, kVersion, len};
  if (len > 0) {
    m.payload.assign(static_cast<const uint8_t*>(p),
                     static_cast<const uint8_t*>(p) + len);
  }
  return m;
}

TEST(BackendSendFd, FdsReachTheFrontEndOnlyWhenNegotiated) {
  auto dev = Make("rng");
  ASSERT_TRUE(dev);
  for (const bool send_fd : {false, true}) {
    SCOPED_TRACE(send_fd);
    Backend b(*dev);
    std::optional<Message> reply;
    ASSERT_TRUE(b.Handle(Msg(kGetProtocolFeatures), &reply).ok());
    ASSERT_TRUE(reply);
    EXPECT_TRUE(reply->As<uint64_t>() & Bit(kProtocolBackendSendFd));
    EXPECT_TRUE(reply->As<uint64_t>() & Bit(kProtocolLogShmfd));
    const uint64_t pf =
        Bit(kProtocolBackendReq) | (send_fd ? Bit(kProtocolBackendSendFd) : 0);
    ASSERT_TRUE(b.Handle(Msg(kSetProtocolFeatures, &pf, 8), &reply).ok());
    Message probe = Msg(kBackendVringHostNotifierMsg);
    // No channel yet.
    EXPECT_TRUE(absl::IsFailedPrecondition(b.SendBackendRequest(probe)));
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    Connection frontend{UniqueFd(sv[0])};
    Message set = Msg(kSetBackendReqFd);
    set.fds.emplace_back(sv[1]);
    ASSERT_TRUE(b.Handle(std::move(set), &reply).ok());

    UniqueFd ev(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const int one[] = {ev.get()};
    absl::Status st = b.SendBackendRequest(probe, one);
    if (!send_fd) {
      EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
      // Without fds the channel works.
      ASSERT_TRUE(b.SendBackendRequest(probe).ok());
      auto got = frontend.Receive();
      ASSERT_TRUE(got.ok());
      EXPECT_TRUE(got->fds.empty());
      continue;
    }
    ASSERT_TRUE(st.ok()) << st;
    auto got = frontend.Receive();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->request(),
              static_cast<uint32_t>(kBackendVringHostNotifierMsg));
    ASSERT_EQ(got->fds.size(), 1u);
    // The same eventfd: a signal on the received one reaches ours.
    ASSERT_TRUE(SignalFd(got->fds[0].get()));
    EXPECT_TRUE(WaitEvent(ev.get(), 1000));
    const int nine[9] = {ev.get(), ev.get(), ev.get(), ev.get(), ev.get(),
                         ev.get(), ev.get(), ev.get(), ev.get()};
    EXPECT_TRUE(absl::IsInvalidArgument(b.SendBackendRequest(probe, nine)));
  }
}

}  // namespace
}  // namespace vhost_user::testing
