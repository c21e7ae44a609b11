// Grant-based DMA, and MmioDriver-driven devices whose rings and buffers
// live in the simulated guest's memfd RAM (TestGuestMemory over caller
// memory): the device reaches them only through foreign or grant mappings.
// Step mode (the vCPU's pump runs the backend's dispatch).
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/sim_xen.h"
#include "tests/sim_bus.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/blk_device.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/test_memory.h"
#include "xen_glue/backend.h"
#include "xen_glue/device_spec.h"
#include "xen_glue/devices.h"
#include "xen_glue/foreign_memory.h"
#include "xen_glue/grant_memory.h"
#include "xen_glue/guest_type.h"
#include "xen_glue/ioreq_server.h"

namespace virtio::xg {
namespace {

using sim::Arch;
using sim::SimDeviceModel;
using sim::SimEvtchn;
using sim::SimForeignMemory;
using sim::SimGrantTable;
using sim::SimXen;

constexpr uint64_t kBase = 0x02000000;
constexpr uint64_t kRam = 0x40000000;
constexpr uint64_t kDriverArea = 1 << 20;  // what TestGuestMemory hands out

using Foreign = XenGuestMemory<SimForeignMemory>;
using Memory = XenGrantMemory<SimGrantTable, Foreign>;

// The Backend's GrantRelease, plus a check at the moment each batch of
// completions becomes visible to the driver (OnPublish runs right after
// the used index store): none of the `watch`ed grant refs may still be
// mapped then.
struct ReleaseCheck {
  ReleaseCheck(const Memory* mem, uint32_t queue_size, SimXen* x)
      : release(mem, queue_size), xen(x) {}
  void OnPop(const DescriptorChain& c, uint16_t pos, bool re) {
    release.OnPop(c, pos, re);
  }
  void OnPush(UsedToken t, uint32_t len, uint16_t pos) {
    release.OnPush(t, len, pos);
  }
  void OnPublish(const QueueState&) {
    ++publishes;
    for (uint32_t ref : watch) {
      if (xen->GrantMapCount(ref) != 0) ++still_mapped;
    }
  }
  GrantRelease<Memory> release;
  SimXen* xen;
  std::vector<uint32_t> watch;
  int publishes = 0;
  int still_mapped = 0;
};

struct Traits {
  using Memory = xg::Memory;
  using Interrupt = MmioInterrupt<XenIrqLine<SimDeviceModel>>;
  using RingObserver = ReleaseCheck;
};
using Blk = BlkDevice<Traits, RamDisk>;

// A blk device on an ioreq server whose memory is foreign-mapped memfd RAM
// (and grant-mapped when `grant`), driven by MmioDriver + SplitDriver laid
// out in that same RAM.
struct BlkRig {
  explicit BlkRig(bool grant)
      : xen(sim::SimOptions{.arch = Arch::kArm, .vcpus = 1,
                            .ram = {{kRam, 4 << 20}}}),
        dm(xen), fm(xen), ev(xen), gt(xen),
        server(dm, fm, ev, {.domid = xen.domid()}),
        guest(testing::kExternalMemory,
              std::vector<GuestRegion>{{.gpa = kRam, .size = kDriverArea,
                                        .host = xen.GuestRam(kRam, kDriverArea)}}),
        irq(XenIrqLine<SimDeviceModel>{&dm, xen.domid(), IrqKind::kArmSpi, 33}) {
    foreign = *Foreign::Create(fm, xen.domid(), {{kRam, 4 << 20}});
    memory = std::make_unique<Memory>(grant ? &gt : nullptr, xen.domid(), foreign.get());
    disk = *RamDisk::Create({.capacity = 1 << 20});
    blk = *Blk::Create(*memory, irq, *disk, {});
    if (grant) {
      check = std::make_unique<ReleaseCheck>(memory.get(),
                                             blk->queue_max_size(0), &xen);
      blk->SetQueueObserver(0, check.get());
    }
    mmio = std::make_unique<MmioTransport<Blk>>(*blk);
    io = std::make_unique<MmioTransportDevice<MmioTransport<Blk>>>(*mmio);
    IoDevice* dev = io.get();
    if (grant) {
      ap = std::make_unique<AccessPlatformMmio>(*io);
      dev = ap.get();
      // The guest grants its whole driver area up front, as consecutive
      // refs (grant-dma allocates consecutive refs for contiguous buffers).
      first_ref = xen.GrantRange(kRam >> kPageShift, kDriverArea / kPageSize, false);
    }
    EXPECT_TRUE(server.AddMmio(kBase, 0x200, dev, "blk0").ok());
    EXPECT_TRUE(server.Start().ok());
  }
  SimXen::Pump pump() {
    return [this] { server.PollOnce(0); };
  }
  // The DMA address the device sees for guest-physical `gpa`.
  uint64_t Dma(uint64_t gpa) const {
    if (!ap) return gpa;
    const uint64_t page = (gpa - kRam) >> kPageShift;
    return kGrantAddrBit | ((first_ref + page) << kPageShift) | (gpa & (kPageSize - 1));
  }
  QueueConfig Ring(const testing::SplitDriver& r) const {
    QueueConfig c = r.config();
    c.desc_addr = Dma(c.desc_addr);
    c.driver_addr = Dma(c.driver_addr);
    c.device_addr = Dma(c.device_addr);
    return c;
  }

  SimXen xen;
  SimDeviceModel dm;
  SimForeignMemory fm;
  SimEvtchn ev;
  SimGrantTable gt;
  IoreqServer<SimDeviceModel, SimForeignMemory, SimEvtchn> server;
  testing::TestGuestMemory guest;
  Traits::Interrupt irq;
  std::unique_ptr<Foreign> foreign;
  std::unique_ptr<Memory> memory;
  std::unique_ptr<RamDisk> disk;
  std::unique_ptr<ReleaseCheck> check;  // grant: before blk, outlives its ring
  std::unique_ptr<Blk> blk;
  std::unique_ptr<MmioTransport<Blk>> mmio;
  std::unique_ptr<MmioTransportDevice<MmioTransport<Blk>>> io;
  std::unique_ptr<AccessPlatformMmio> ap;
  uint32_t first_ref = 0;
};

// Sets the device up like Linux's virtio-mmio probe; returns the features.
uint64_t Bringup(BlkRig& rig, testing::MmioDriver<sim::SimMmioBus>& driver,
                 testing::SplitDriver& ring, uint64_t wanted) {
  EXPECT_TRUE(driver.Probe().ok());
  EXPECT_TRUE(driver.Reset().ok());
  auto f = driver.Negotiate(wanted);
  EXPECT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(driver.SetUpQueue(0, rig.Ring(ring)).ok());
  EXPECT_TRUE(driver.DriverOk().ok());
  return f.ok() ? *f : 0;
}

// One blk request: header, data, status; all addresses guest-physical
// (converted to DMA addresses by the rig), `data_dma` overrides the data's.
std::optional<testing::UsedBuffer> Request(BlkRig& rig, testing::MmioDriver<sim::SimMmioBus>& driver,
                                           testing::SplitDriver& ring, uint32_t type,
                                           uint64_t sector, uint64_t data, uint64_t data_dma,
                                           uint64_t status) {
  const uint64_t h = rig.guest.Alloc(16, 16);
  const blk::RequestHeader hdr{type, 0, sector};
  rig.guest.Write(h, &hdr, 16);
  rig.guest.Store<uint8_t>(status, 0xff);
  (void)data;
  const bool in = type == blk::kTypeIn;
  EXPECT_TRUE(ring.Add({{rig.Dma(h), 16, false}, {data_dma, 4096, in}, {rig.Dma(status), 1, true}}));
  if (ring.Kick()) driver.Kick(0);
  return ring.Reap();
}

void RoundTrip(bool grant) {
  BlkRig rig(grant);
  sim::SimMmioBus bus{&rig.xen, 0, kBase, rig.pump()};
  testing::MmioDriver<sim::SimMmioBus> driver(bus);
  testing::SplitDriver ring(rig.guest, 16);
  const uint64_t ap = spec::Bit(spec::kFeatureAccessPlatform);
  const uint64_t f = Bringup(rig, driver, ring, spec::Bit(spec::kFeatureVersion1) | ap);
  EXPECT_EQ((f & ap) != 0, grant);
  if (grant) {
    EXPECT_TRUE(rig.ap->accepted());
  }

  std::vector<uint8_t> data(4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 13 + 1);
  const uint64_t d = rig.guest.Alloc(4096, 4096), s = rig.guest.Alloc(1);
  rig.guest.Write(d, data.data(), 4096);
  auto used = Request(rig, driver, ring, blk::kTypeOut, 8, d, rig.Dma(d), s);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(rig.guest.Load<uint8_t>(s), blk::kStatusOk);
  EXPECT_EQ(0, std::memcmp(rig.disk->data().data() + 8 * 512, data.data(), 4096));

  const uint64_t rd = rig.guest.Alloc(4096, 4096), rs = rig.guest.Alloc(1);
  used = Request(rig, driver, ring, blk::kTypeIn, 8, rd, rig.Dma(rd), rs);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(rig.guest.Load<uint8_t>(rs), blk::kStatusOk);
  std::vector<uint8_t> back(4096);
  // Read back through the guest's own mapping of its RAM (the memfd).
  rig.xen.ReadGuest(rd, back.data(), 4096);
  EXPECT_EQ(back, data);
  if (grant) {
    EXPECT_GT(rig.memory->mapped_pages(), 0u);
    EXPECT_GT(rig.xen.grant_maps(), 0u);
    EXPECT_EQ(rig.foreign->map_calls(), 0u) << "grant mode must not foreign-map";
  } else {
    EXPECT_GT(rig.foreign->map_calls(), 0u);
  }
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

TEST(XenHarness, MmioDriverBlkRoundTripOverForeignMappedRam) { RoundTrip(false); }

TEST(XenGrant, MmioDriverBlkRoundTripThroughGrantMappedBuffers) { RoundTrip(true); }

// Linux's grant-dma grants each request's buffers when it maps them and
// ends foreign access when the request completes; a grant the backend
// still has mapped then is "still in use" and leaks. Each request here has
// fresh grants like that (header and written data read-only, as
// DMA_TO_DEVICE, so bounced); at the moment its completion becomes visible
// none of them is mapped any more, and the guest can end access to all of
// them. The rings stay mapped throughout. More requests than the ring has
// entries, so slots, tokens and mappings are reused.
TEST(XenGrant, RequestGrantsAreUnmappedBeforeTheCompletionIsVisible) {
  BlkRig rig(true);
  sim::SimMmioBus bus{&rig.xen, 0, kBase, rig.pump()};
  testing::MmioDriver<sim::SimMmioBus> driver(bus);
  testing::SplitDriver ring(rig.guest, 16);
  Bringup(rig, driver, ring,
          spec::Bit(spec::kFeatureVersion1) |
              spec::Bit(spec::kFeatureAccessPlatform));
  const uint64_t ring_pages = rig.memory->mapped_pages();
  ASSERT_GT(ring_pages, 0u);
  auto grant = [&](uint64_t gpa, bool readonly) {
    return rig.xen.GrantAccess(gpa >> kPageShift, readonly);
  };
  auto dma = [](uint32_t ref) {
    return kGrantAddrBit | (uint64_t{ref} << kPageShift);
  };
  constexpr int kRequests = 40;
  for (int i = 0; i < kRequests; ++i) {
    const bool write = i % 2 == 0;
    const uint64_t h = rig.guest.Alloc(16, 4096),
                   d = rig.guest.Alloc(4096, 4096),
                   st = rig.guest.Alloc(1, 4096);
    const blk::RequestHeader hdr{write ? blk::kTypeOut : blk::kTypeIn, 0,
                                 static_cast<uint64_t>(i)};
    rig.guest.Write(h, &hdr, 16);
    rig.guest.Fill(d, write ? static_cast<uint8_t>(i + 1) : 0, 4096);
    rig.guest.Store<uint8_t>(st, 0xff);
    const uint32_t hr = grant(h, true), dr = grant(d, write),
                   sr = grant(st, false);
    rig.check->watch = {hr, dr, sr};
    ASSERT_TRUE(ring.Add(
        {{dma(hr), 16, false}, {dma(dr), 4096, !write}, {dma(sr), 1, true}}));
    if (ring.Kick()) driver.Kick(0);
    auto used = ring.Reap();
    ASSERT_TRUE(used.has_value()) << i;
    ASSERT_EQ(rig.guest.Load<uint8_t>(st), blk::kStatusOk) << i;
    if (!write) {  // sector i, never written: the guest gets the disk's bytes
      EXPECT_EQ(rig.xen.GuestRam(d, 1)[0],
                rig.disk->data()[static_cast<size_t>(i) * 512]);
    } else {
      EXPECT_EQ(rig.disk->data()[static_cast<size_t>(i) * 512], i + 1);
    }
    // The driver's completion path: gnttab_end_foreign_access on each.
    EXPECT_TRUE(rig.xen.EndAccess(hr))
        << "header grant still mapped, request " << i;
    EXPECT_TRUE(rig.xen.EndAccess(dr))
        << "data grant still mapped, request " << i;
    EXPECT_TRUE(rig.xen.EndAccess(sr))
        << "status grant still mapped, request " << i;
  }
  EXPECT_GE(rig.check->publishes, kRequests);
  EXPECT_EQ(rig.check->still_mapped, 0);
  // Only the rings are mapped now, as before the first request.
  EXPECT_EQ(rig.memory->mapped_pages(), ring_pages);
  EXPECT_GE(rig.memory->unmaps(), 3u * kRequests);
  EXPECT_GE(rig.memory->bounced(), uint64_t{kRequests});
  // The ring's grants are still in use (the guest cannot revoke them).
  EXPECT_FALSE(rig.xen.EndAccess(static_cast<uint32_t>(
      (ring.config().desc_addr - kRam) / kPageSize + rig.first_ref)));
  EXPECT_EQ(rig.blk->status() & spec::kStatusDeviceNeedsReset, 0);
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

TEST(XenGrant, BadAndRevokedGrantsFailOnlyThatRequest) {
  BlkRig rig(true);
  sim::SimMmioBus bus{&rig.xen, 0, kBase, rig.pump()};
  testing::MmioDriver<sim::SimMmioBus> driver(bus);
  testing::SplitDriver ring(rig.guest, 16);
  Bringup(rig, driver, ring,
          spec::Bit(spec::kFeatureVersion1) | spec::Bit(spec::kFeatureAccessPlatform));

  // A page outside the granted area, granted and then revoked before use.
  const uint64_t revoked_gpa = kRam + kDriverArea;
  const uint32_t ref = rig.xen.GrantAccess(revoked_gpa >> kPageShift, false);
  ASSERT_TRUE(rig.xen.EndAccess(ref));
  const uint64_t s1 = rig.guest.Alloc(1);
  auto used = Request(rig, driver, ring, blk::kTypeIn, 0, 0,
                      kGrantAddrBit | (uint64_t{ref} << kPageShift), s1);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_NE(rig.guest.Load<uint8_t>(s1), blk::kStatusOk);
  EXPECT_EQ(rig.xen.last_gntst(), SimXen::kGntstGeneralError);

  // A ref past the end of the grant table: GNTST_bad_gntref.
  const uint64_t s2 = rig.guest.Alloc(1);
  used = Request(rig, driver, ring, blk::kTypeIn, 0, 0,
                 kGrantAddrBit | (uint64_t{SimXen::kGrantTableSize + 5} << kPageShift), s2);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(rig.xen.last_gntst(), SimXen::kGntstBadGntref);

  // A grant-addressed range that runs off the granted area into an
  // unmapped grant is refused as a whole.
  const uint64_t s3 = rig.guest.Alloc(1);
  used = Request(rig, driver, ring, blk::kTypeIn, 0, 0,
                 rig.Dma(kRam + kDriverArea - 2048), s3);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_GE(rig.memory->failures(), 3u);

  // The device is still live: the next request works.
  const uint64_t d = rig.guest.Alloc(4096, 4096), s4 = rig.guest.Alloc(1);
  rig.guest.Fill(d, 0x5a, 4096);
  used = Request(rig, driver, ring, blk::kTypeOut, 3, d, rig.Dma(d), s4);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(rig.guest.Load<uint8_t>(s4), blk::kStatusOk);
  EXPECT_EQ(rig.disk->data()[3 * 512 + 100], 0x5a);
  EXPECT_EQ(rig.blk->status() & spec::kStatusDeviceNeedsReset, 0);
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

TEST(XenGrant, ReadOnlyGrantIsBouncedAndMappedRefsCannotBeRevoked) {
  sim::SimXen xen(sim::SimOptions{.arch = Arch::kArm, .vcpus = 1, .ram = {{kRam, 1 << 20}}});
  SimGrantTable gt(xen);
  Memory mem(&gt, xen.domid(), nullptr);
  std::memset(xen.GuestRam(kRam, 8192), 0x11, 8192);
  const uint32_t ro = xen.GrantRange(kRam >> kPageShift, 2, /*readonly=*/true);
  // Wrong domain and no inner memory are refused.
  EXPECT_EQ(mem.TranslateContiguous(kRam, 16), nullptr);
  uint8_t* p = mem.TranslateContiguous(kGrantAddrBit | (uint64_t{ro} << kPageShift) | 4000, 200);
  ASSERT_NE(p, nullptr);  // spans both refs: one contiguous mapping
  EXPECT_EQ(p[0], 0x11);
  EXPECT_EQ(p[199], 0x11);
  EXPECT_EQ(mem.bounced(), 1u);
  p[0] = 0x22;  // the device's write to a read-only grant goes nowhere
  EXPECT_EQ(xen.GuestRam(kRam + 4000, 1)[0], 0x11);
  // Still mapped: the guest cannot end access (Linux: "still in use").
  EXPECT_FALSE(xen.EndAccess(ro));
  // Cached: a sub-range needs no new map.
  const uint64_t calls = mem.map_calls();
  EXPECT_NE(mem.TranslateContiguous(kGrantAddrBit | (uint64_t{ro + 1} << kPageShift), 8), nullptr);
  EXPECT_EQ(mem.map_calls(), calls);
  // Granted to another domain: refused.
  const uint32_t other = xen.GrantAccess((kRam >> kPageShift) + 5, false, /*to=*/3);
  EXPECT_EQ(mem.TranslateContiguous(kGrantAddrBit | (uint64_t{other} << kPageShift), 8), nullptr);
  EXPECT_EQ(xen.last_gntst(), SimXen::kGntstGeneralError);
}

// xen-virtio-backend's Backend with `--device console,backend=socket,
// grant=on`: ACCESS_PLATFORM offered, rings and buffers grant-mapped from
// the simulated guest's memfd RAM, bytes both ways through the socket.
TEST(XenBackend, ConsoleRoundTripOverGrantsThroughSocket) {
  SimXen xen(sim::SimOptions{.arch = Arch::kArm, .vcpus = 1, .ram = {{kRam, 4 << 20}}});
  const std::string sock = ::testing::TempDir() + "/xen_con_" + std::to_string(getpid());
  const std::string claims = ::testing::TempDir() + "/xen_claims_con_" + std::to_string(getpid());
  const std::string spec = "console,id=con0,backend=socket,path=" + sock + ",grant=on";
  const char* argv[] = {"b", "--domid", "7", "--arch", "arm", "--ram", "0x40000000:4M",
                        "--claims-dir", claims.c_str(), "--device", spec.c_str()};
  auto args = ParseArgs(11, argv);
  ASSERT_TRUE(args.ok()) << args.status();
  SimDeviceModel dm(xen);
  SimForeignMemory fm(xen);
  SimEvtchn ev(xen);
  SimGrantTable gt(xen);
  {  // without a grant table, grant=on is refused clearly
    Backend<SimDeviceModel, SimForeignMemory, SimEvtchn, SimGrantTable> nogt(dm, fm, ev, *args);
    EXPECT_THAT(nogt.Start().message(), ::testing::HasSubstr("libxengnttab"));
  }
  Backend<SimDeviceModel, SimForeignMemory, SimEvtchn, SimGrantTable> backend(dm, fm, ev, *args,
                                                                              &gt);
  ASSERT_TRUE(backend.Start().ok());
  const int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock.c_str());
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);

  auto pump = [&] { backend.RunOnce(0); };
  testing::TestGuestMemory guest(
      testing::kExternalMemory,
      std::vector<GuestRegion>{{.gpa = kRam, .size = kDriverArea,
                                .host = xen.GuestRam(kRam, kDriverArea)}});
  const uint32_t first_ref = xen.GrantRange(kRam >> kPageShift, kDriverArea / kPageSize, false);
  auto dma = [&](uint64_t gpa) {
    return kGrantAddrBit | ((first_ref + ((gpa - kRam) >> kPageShift)) << kPageShift) |
           (gpa & (kPageSize - 1));
  };
  auto ring_cfg = [&](const testing::SplitDriver& r) {
    QueueConfig c = r.config();
    c.desc_addr = dma(c.desc_addr);
    c.driver_addr = dma(c.driver_addr);
    c.device_addr = dma(c.device_addr);
    return c;
  };
  sim::SimMmioBus bus{&xen, 0, kVirtioMmioBase, pump};
  testing::MmioDriver<sim::SimMmioBus> driver(bus);
  ASSERT_TRUE(driver.Probe().ok());
  EXPECT_EQ(driver.device_id(), spec::kDeviceIdConsole);
  ASSERT_TRUE(driver.Reset().ok());
  const uint64_t ap = spec::Bit(spec::kFeatureAccessPlatform);
  auto f = driver.Negotiate(spec::Bit(spec::kFeatureVersion1) | ap);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(*f & ap);
  ASSERT_NE(backend.access_platform("con0"), nullptr);
  EXPECT_TRUE(backend.access_platform("con0")->accepted());
  testing::SplitDriver rx(guest, 16), tx(guest, 16);
  ASSERT_TRUE(driver.SetUpQueue(0, ring_cfg(rx)).ok());
  ASSERT_TRUE(driver.SetUpQueue(1, ring_cfg(tx)).ok());
  ASSERT_TRUE(driver.DriverOk().ok());
  for (int i = 0; i < 5; ++i) pump();  // accepts the client

  const uint64_t in = guest.Alloc(64);
  ASSERT_TRUE(rx.Add({{dma(in), 64, true}}));
  if (rx.Kick()) driver.Kick(0);
  const uint64_t out = guest.Alloc(5);
  guest.Write(out, "hello", 5);
  ASSERT_TRUE(tx.Add({{dma(out), 5, false}}));
  if (tx.Kick()) driver.Kick(1);

  std::string got;
  for (int i = 0; i < 200 && got.size() < 5; ++i) {
    pump();
    pollfd p{client, POLLIN, 0};
    if (poll(&p, 1, 10) == 1) {
      char buf[16];
      const ssize_t n = read(client, buf, sizeof buf);
      if (n > 0) got.append(buf, static_cast<size_t>(n));
    }
  }
  EXPECT_EQ(got, "hello");
  ASSERT_EQ(write(client, "world", 5), 5);
  std::optional<testing::UsedBuffer> used;
  for (int i = 0; i < 200 && !used; ++i) {
    pump();
    used = rx.Reap();
    if (!used) usleep(1000);
  }
  ASSERT_TRUE(used.has_value());
  ASSERT_EQ(used->len, 5u);
  char back[5];
  xen.ReadGuest(in, back, 5);
  EXPECT_EQ(std::string(back, 5), "world");
  EXPECT_TRUE(tx.Reap().has_value());
  EXPECT_GT(backend.grant_memory()->mapped_pages(), 0u);
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
  close(client);
  backend.Stop();
}

TEST(XenBackend, ConsoleNetAndGrantSpecs) {
  auto c = ParseDeviceSpec("console,backend=file,path=/tmp/x,grant=on");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->type, DeviceType::kConsole);
  EXPECT_TRUE(c->grant);
  auto n = ParseDeviceSpec("net,backend=loopback");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->type, DeviceType::kNet);
  EXPECT_THAT(ParseDeviceSpec("console,backend=socket").status().message(),
              ::testing::HasSubstr("backend=socket needs a path"));
  EXPECT_THAT(ParseDeviceSpec("rng,addr=00:05.0,grant=on").status().message(),
              ::testing::HasSubstr("virtio-mmio only"));
  EXPECT_THAT(ParseDeviceSpec("net,backend=vde").status().message(),
              ::testing::HasSubstr("unknown backend 'vde'"));
}

// On x86 the Backend refuses, at Start() and with the reason, every device
// that could only interrupt through a level dm_op unless it knows the guest
// is HVM: virtio-mmio (ISA line) and virtio-pci with msix=off (INTx).
TEST(XenBackend, PvhOrUnknownGuestRefusesIsaAndIntxDevicesAtStartup) {
  const std::string claims =
      ::testing::TempDir() + "/xen_claims_pvh_" + std::to_string(getpid());
  auto start = [&](GuestType sim_guest, std::optional<GuestType> told,
                   const char* device) -> absl::Status {
    SimXen xen(sim::SimOptions{.arch = Arch::kX86,
                               .vcpus = 1,
                               .ram = {{0, 4 << 20}},
                               .guest = sim_guest});
    const char* argv[] = {"b",        "--domid",      "7",
                          "--arch",   "x86",          "--ram",
                          "0:4M",     "--claims-dir", claims.c_str(),
                          "--device", device};
    auto args = ParseArgs(11, argv);
    if (!args.ok()) return args.status();
    SimDeviceModel dm(xen);
    SimForeignMemory fm(xen);
    SimEvtchn ev(xen);
    Backend<SimDeviceModel, SimForeignMemory, SimEvtchn> backend(dm, fm, ev,
                                                                 *args);
    if (told) {
      backend.set_guest_type(*told);
    } else {
      sim::SimDomainInfo di(xen);
      auto t = DetectGuestType(di, xen.domid());
      if (!t.ok()) return t.status();
      backend.set_guest_type(*t);
    }
    absl::Status s = backend.Start();
    EXPECT_FALSE(xen.hypervisor_crashed()) << xen.crash_reason();
    return s;
  };
  using ::testing::HasSubstr;
  // Detected from the (simulated) domain.
  absl::Status s = start(GuestType::kPvh, std::nullopt, "rng");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("set_isa_irq_level"));
  EXPECT_THAT(s.message(), HasSubstr("PVH"));
  s = start(GuestType::kPvh, std::nullopt, "rng,addr=00:05.0,msix=off");
  EXPECT_THAT(s.message(), HasSubstr("set_pci_intx_level"));
  EXPECT_THAT(s.message(), HasSubstr("PVH"));
  // MSI-X virtio-pci starts (its INTx fallback is never issued: see
  // PvhSinksNeverIssueIsaOrIntx).
  EXPECT_TRUE(start(GuestType::kPvh, std::nullopt, "rng,addr=00:05.0").ok());
  // A type nobody determined is treated as possibly PVH.
  s = start(GuestType::kHvm, GuestType::kUnknown, "rng");
  EXPECT_THAT(s.message(), HasSubstr("could not be determined"));
  // HVM: both start.
  EXPECT_TRUE(start(GuestType::kHvm, std::nullopt, "rng").ok());
  EXPECT_TRUE(
      start(GuestType::kHvm, std::nullopt, "rng,addr=00:05.0,msix=off").ok());
  std::filesystem::remove_all(claims);
}

// A TAP that stays readable while the guest has no receive buffers (its
// driver not loaded yet) made the backend's level-triggered poll() return
// at once, forever: on real Xen it took a quarter of dom0's only vCPU. The
// backend stops polling a pair for input once its service left packets
// behind, until the guest next reaches it through an ioreq.
TEST(XenBackend, StarvedTapIsNotPolledUntilTheGuestReturns) {
  std::string skip;
  // A private network namespace (on its own thread) for the TAP.
  std::thread t([&] {
    if (access("/dev/net/tun", R_OK | W_OK) != 0 ||
        unshare(CLONE_NEWNET) != 0) {
      skip = std::string("no /dev/net/tun or no CAP_SYS_ADMIN: ") +
             std::strerror(errno);
      return;
    }
    SimXen xen(sim::SimOptions{
        .arch = Arch::kArm, .vcpus = 1, .ram = {{kRam, 4 << 20}}});
    const std::string claims =
        ::testing::TempDir() + "/xen_claims_tap_" + std::to_string(getpid());
    const char* argv[] = {"b",
                          "--domid",
                          "7",
                          "--arch",
                          "arm",
                          "--ram",
                          "0x40000000:4M",
                          "--claims-dir",
                          claims.c_str(),
                          "--device",
                          "net,backend=tap,ifname=xvbspin0"};
    auto args = ParseArgs(11, argv);
    ASSERT_TRUE(args.ok()) << args.status();
    SimDeviceModel dm(xen);
    SimForeignMemory fm(xen);
    SimEvtchn ev(xen);
    Backend<SimDeviceModel, SimForeignMemory, SimEvtchn> backend(dm, fm, ev,
                                                                 *args);
    if (absl::Status st = backend.Start(); !st.ok()) {
      skip =
          "cannot create a TAP (CAP_NET_ADMIN): " + std::string(st.message());
      return;
    }
    // Interface up, and one frame sent out of it: the backend's TAP fd is
    // readable, and the guest has no receive queue at all.
    const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "xvbspin0", IFNAMSIZ - 1);
    ASSERT_EQ(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
    ifr.ifr_flags |= IFF_UP;
    ASSERT_EQ(ioctl(s, SIOCSIFFLAGS, &ifr), 0) << std::strerror(errno);
    close(s);
    const int pkt =
        socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    ASSERT_GE(pkt, 0) << std::strerror(errno);
    sockaddr_ll ll{};
    ll.sll_family = AF_PACKET;
    ll.sll_protocol = htons(ETH_P_ALL);
    ll.sll_ifindex = static_cast<int>(if_nametoindex("xvbspin0"));
    ASSERT_EQ(bind(pkt, reinterpret_cast<sockaddr*>(&ll), sizeof ll), 0);
    uint8_t frame[60] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2,
                         0,    0,    0,    0,    1,    0x88, 0xb5};
    ASSERT_EQ(send(pkt, frame, sizeof frame, 0),
              static_cast<ssize_t>(sizeof frame));
    close(pkt);

    ASSERT_TRUE(backend.RunOnce(2000));  // the TAP became readable: served once
    ASSERT_EQ(backend.busy_rounds(), 1u);
    uint64_t before = backend.busy_rounds();
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(backend.RunOnce(5));
    EXPECT_EQ(backend.busy_rounds() - before, 0u)
        << "the backend spins on a starved TAP";

    // The guest touches the device (one ioreq): the TAP is looked at once
    // more, still nowhere to put the frame, and left alone again.
    auto r =
        xen.Mmio(0, false, kVirtioMmioBase, 4, 0, [&] { backend.RunOnce(0); });
    EXPECT_EQ(r.status, sim::AccessStatus::kOk);
    before = backend.busy_rounds();
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(backend.RunOnce(5));
    EXPECT_EQ(backend.busy_rounds() - before, 1u);
    backend.Stop();
    std::filesystem::remove_all(claims);
  });
  t.join();
  if (!skip.empty()) GTEST_SKIP() << skip;
}

}  // namespace
}  // namespace virtio::xg
