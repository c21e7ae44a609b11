// glue/xen with real threads: backends dispatching on their own threads
// while simulated vCPU threads block in their accesses, as under Xen.
// Disaggregation (several servers on one domain), a backend killed with a
// request pending and restarted, and the whole Backend (what the binary
// runs) over foreign-mapped memfd RAM with io_uring completions.
// Run under TSan too: ctest -L xen_threaded in a LIBVIRTIO_SANITIZE=thread build.
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/sim_xen.h"
#include "tests/sim_bus.h"
#include "virtio/blk_spec.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/rng_device.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/test_memory.h"
#include "xen_glue/backend.h"
#include "xen_glue/devices.h"
#include "xen_glue/ioreq_server.h"
#include "xen_glue/placement.h"

namespace virtio::xg {
namespace {

using sim::AccessStatus;
using sim::Arch;
using sim::IrqEvent;
using sim::SimDeviceModel;
using sim::SimEvtchn;
using sim::SimForeignMemory;
using sim::SimXen;
using ::testing::HasSubstr;

using Server = IoreqServer<SimDeviceModel, SimForeignMemory, SimEvtchn>;

class Counter : public IoDevice {
 public:
  uint64_t MmioRead(uint64_t, uint32_t) override { return ++reads; }
  void MmioWrite(uint64_t, uint32_t, uint64_t v) override { last = v; }
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> last{0};
};

// One backend process: its own evtchn handle and a dispatch thread.
class Process {
 public:
  Process(SimXen& xen, IoreqServerOptions o)
      : dm_(xen), fm_(xen), ev_(std::make_unique<SimEvtchn>(xen)),
        server_(std::make_unique<Server>(dm_, fm_, *ev_, o)) {}
  ~Process() { Stop(); }
  Server& server() { return *server_; }
  void Run() {
    running_ = true;
    thread_ = std::thread([this] {
      while (running_.load()) server_->PollOnce(10);
    });
  }
  void Stop() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
  }
  // A crash: the thread dies, the evtchn handle is closed, Xen is not told.
  void Kill() {
    Stop();
    server_->Abandon();
    server_.reset();
    ev_.reset();
  }

 private:
  SimDeviceModel dm_;
  SimForeignMemory fm_;
  std::unique_ptr<SimEvtchn> ev_;
  std::unique_ptr<Server> server_;
  std::atomic<bool> running_{false};
  std::thread thread_;
};

TEST(XenThreaded, VcpusHammerOneServerConcurrently) {
  SimXen xen(sim::SimOptions{.vcpus = 4});
  Process p(xen, {.domid = xen.domid()});
  Counter dev;
  ASSERT_TRUE(p.server().AddMmio(0x02000000, 0x200, &dev, "c").ok());
  ASSERT_TRUE(p.server().Start().ok());
  p.Run();
  std::vector<std::thread> vcpus;
  std::atomic<int> bad{0};
  for (unsigned v = 0; v < 4; ++v) {
    vcpus.emplace_back([&, v] {
      for (int i = 0; i < 200; ++i) {
        auto r = xen.Mmio(v, i % 2, 0x02000000 + 4 * v, 4, i);
        if (r.status != AccessStatus::kOk) ++bad;
      }
    });
  }
  for (auto& t : vcpus) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(dev.reads.load(), 400u);
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
}

TEST(XenThreaded, RngOverMmioWithBackendThread) {
  SimXen xen(sim::SimOptions{.arch = Arch::kArm});
  Process p(xen, {.domid = xen.domid()});
  struct Traits {
    using Memory = GuestMemoryMap;
    using Interrupt = MmioInterrupt<XenIrqLine<SimDeviceModel>>;
  };
  testing::TestGuestMemory mem;
  SimDeviceModel dm(xen);
  Traits::Interrupt irq(XenIrqLine<SimDeviceModel>{&dm, xen.domid(), IrqKind::kArmSpi, 40});
  RngDevice<Traits> rng(mem.map(), irq, {});
  MmioTransport<RngDevice<Traits>> mmio(rng);
  MmioTransportDevice<MmioTransport<RngDevice<Traits>>> io(mmio);
  ASSERT_TRUE(p.server().AddMmio(0x02000000, 0x200, &io, "rng").ok());
  ASSERT_TRUE(p.server().Start().ok());
  p.Run();
  sim::SimMmioBus bus{&xen, 1, 0x02000000, {}};
  testing::MmioDriver<sim::SimMmioBus> driver(bus);
  ASSERT_TRUE(driver.Probe().ok());
  ASSERT_TRUE(driver.Reset().ok());
  ASSERT_TRUE(driver.Negotiate(spec::Bit(spec::kFeatureVersion1)).ok());
  testing::SplitDriver ring(mem, 16);
  ASSERT_TRUE(driver.SetUpQueue(0, ring.config()).ok());
  ASSERT_TRUE(driver.DriverOk().ok());
  for (int i = 0; i < 8; ++i) {
    const uint64_t buf = mem.Alloc(32);
    ASSERT_TRUE(ring.Add({{buf, 32, true}}));
    if (ring.Kick()) driver.Kick(0);
    auto used = ring.Reap();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, 32u);
    driver.HandleInterrupt();
  }
  EXPECT_GE(xen.CountIrq(IrqEvent::kSpi, 40, 1), 1u);
  p.Stop();
}

TEST(XenThreaded, DisaggregatedBackendsSurviveEachOthersCrash) {
  SimXen xen(sim::SimOptions{.arch = Arch::kArm, .vcpus = 2});
  auto a = std::make_unique<Process>(xen, IoreqServerOptions{.domid = xen.domid(),
                                                             .destroy_on_stop = false});
  Process b(xen, {.domid = xen.domid()});
  Counter da, db;
  ASSERT_TRUE(a->server().AddMmio(0x02000000, 0x200, &da, "a").ok());
  ASSERT_TRUE(b.server().AddMmio(0x02000200, 0x200, &db, "b").ok());
  ASSERT_TRUE(a->server().Start().ok());
  ASSERT_TRUE(b.server().Start().ok());
  const IoServId id_a = a->server().id();
  EXPECT_NE(id_a, b.server().id());
  a->Run();
  b.Run();
  EXPECT_EQ(xen.Mmio(0, false, 0x02000000, 4, 0).data, 1u);
  EXPECT_EQ(xen.Mmio(0, false, 0x02000200, 4, 0).data, 1u);
  // Each only sees its own range.
  EXPECT_EQ(da.reads.load(), 1u);
  EXPECT_EQ(db.reads.load(), 1u);

  // A dies; a request to it is left pending (the vCPU blocks).
  a->Kill();
  a.reset();
  auto stuck = xen.Run(0, {.type = kTypeCopy, .write = false, .addr = 0x02000000, .size = 4},
                       {}, std::chrono::milliseconds(200));
  EXPECT_EQ(stuck.status, AccessStatus::kTimeout);
  EXPECT_GE(xen.lost_events(), 1u);
  // B keeps working on the other vCPU.
  EXPECT_EQ(xen.Mmio(1, false, 0x02000200, 4, 0).status, AccessStatus::kOk);
  EXPECT_EQ(db.reads.load(), 2u);

  // A restarts into its surviving server; the rescan answers the request
  // whose notification was lost.
  Process a2(xen, {.domid = xen.domid(), .reattach = id_a});
  ASSERT_TRUE(a2.server().AddMmio(0x02000000, 0x200, &da, "a").ok());
  ASSERT_TRUE(a2.server().Start().ok());
  a2.Run();
  auto resumed = xen.Resume(0);
  EXPECT_EQ(resumed.status, AccessStatus::kOk);
  EXPECT_EQ(resumed.data, 2u);
  EXPECT_EQ(xen.Mmio(0, false, 0x02000000, 4, 0).data, 3u);
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
}

TEST(XenThreaded, OverlapAcrossServersHighestIdWinsSoClaimsRefuseIt) {
  // Xen itself allows it (no cross-server check) ...
  SimXen xen;
  Process a(xen, {.domid = xen.domid()});
  Process b(xen, {.domid = xen.domid()});
  Counter da, db;
  ASSERT_TRUE(a.server().AddMmio(0x02000000, 0x200, &da, "a").ok());
  ASSERT_TRUE(b.server().AddMmio(0x02000000, 0x200, &db, "b").ok());
  ASSERT_TRUE(a.server().Start().ok());
  ASSERT_TRUE(b.server().Start().ok());
  a.Run();
  b.Run();
  auto r = xen.Mmio(0, false, 0x02000000, 4, 0);
  EXPECT_EQ(r.server, b.server().id());  // newest (highest id) wins
  EXPECT_EQ(da.reads.load(), 0u);
  // ... which is why backends claim their placement first.
  const std::string dir = ::testing::TempDir() + "/xen_claims_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  DeviceSpec d1;
  d1.id = "blk0";
  d1.mmio_base = 0x02000000;
  d1.irq = 33;
  DeviceSpec d2 = d1;
  d2.id = "rng0";
  d2.irq = 34;
  ClaimRegistry first(dir, 7), second(dir, 7);
  ASSERT_TRUE(first.Acquire(ClaimsFor(GuestArch::kArm, {d1})).ok());
  absl::Status s = second.Acquire(ClaimsFor(GuestArch::kArm, {d2}));
  EXPECT_THAT(s.message(), HasSubstr("placement conflict on domain 7"));
  EXPECT_THAT(s.message(), HasSubstr("already claimed by blk0"));
  d2.mmio_base = 0x02000200;
  EXPECT_TRUE(second.Acquire(ClaimsFor(GuestArch::kArm, {d2})).ok());
  EXPECT_EQ(first.List().size(), 4u);
  first.Release();  // (a crashed process's claims are dropped by pid)
  EXPECT_EQ(second.List().size(), 2u);
  std::filesystem::remove_all(dir);
}

// --- the Backend the binary runs, on foreign-mapped memfd RAM ------------------

// A one-chain-at-a-time split ring written straight into the guest's RAM.
struct MiniRing {
  SimXen* xen;
  uint64_t base;
  uint16_t size = 8;
  uint16_t avail_idx = 0;
  QueueConfig config() const {
    return {.size = size, .desc_addr = base, .driver_addr = base + 0x1000,
            .device_addr = base + 0x2000};
  }
  void Add(const std::vector<testing::Buffer>& bufs) {
    for (size_t i = 0; i < bufs.size(); ++i) {
      struct { uint64_t addr; uint32_t len; uint16_t flags, next; } d{
          bufs[i].gpa, bufs[i].len,
          static_cast<uint16_t>((i + 1 < bufs.size() ? 1 : 0) | (bufs[i].writable ? 2 : 0)),
          static_cast<uint16_t>(i + 1)};
      xen->WriteGuest(base + 16 * i, &d, 16);
    }
    const uint16_t head = 0;
    xen->WriteGuest(base + 0x1000 + 4 + 2 * (avail_idx % size), &head, 2);
    ++avail_idx;
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(xen->GuestRam(base + 0x1002, 2)))
        .store(avail_idx, std::memory_order_release);
  }
  uint16_t used_idx() {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(xen->GuestRam(base + 0x2002, 2)))
        .load(std::memory_order_acquire);
  }
};

TEST(XenThreaded, BackendServesBlkAndRngOverForeignMappedRam) {
  SimXen xen(sim::SimOptions{.arch = Arch::kArm, .vcpus = 2,
                             .ram = {{0x40000000, 8 << 20}}});
  const std::string img = ::testing::TempDir() + "/xen_blk_" + std::to_string(getpid()) + ".img";
  {
    std::ofstream f(img, std::ios::binary);
    std::vector<char> zero(1 << 20, 0);
    f.write(zero.data(), static_cast<std::streamsize>(zero.size()));
  }
  const std::string claims = ::testing::TempDir() + "/xen_claims_b_" + std::to_string(getpid());
  const char* argv[] = {"xen-virtio-backend", "--domid", "7", "--arch", "arm",
                        "--ram", "0x40000000:8M", "--claims-dir", claims.c_str(),
                        "--device", nullptr, "--device", "rng,id=rng0"};
  const std::string blk_spec = "blk,id=disk0,path=" + img;
  argv[10] = blk_spec.c_str();
  auto args = ParseArgs(13, argv);
  ASSERT_TRUE(args.ok()) << args.status();
  SimDeviceModel dm(xen);
  SimForeignMemory fm(xen);
  SimEvtchn ev(xen);
  Backend<SimDeviceModel, SimForeignMemory, SimEvtchn> backend(dm, fm, ev, *args);
  ASSERT_TRUE(backend.Start().ok());
  EXPECT_EQ(backend.Placement(),
            "disk0 virtio-mmio addr=0x2000000 irq=33\nrng0 virtio-mmio addr=0x2000200 irq=34\n");
  // A second backend for the same placement is refused.
  {
    SimEvtchn ev2(xen);
    Backend<SimDeviceModel, SimForeignMemory, SimEvtchn> other(dm, fm, ev2, *args);
    EXPECT_THAT(other.Start().message(), HasSubstr("placement conflict"));
  }
  const int stop = eventfd(0, EFD_CLOEXEC);
  std::thread loop([&] { backend.Run(stop); });

  // blk0: write a sector through the device, read it back.
  sim::SimMmioBus bus{&xen, 0, 0x02000000, {}};
  testing::MmioDriver<sim::SimMmioBus> driver(bus);
  ASSERT_TRUE(driver.Probe().ok());
  EXPECT_EQ(driver.device_id(), spec::kDeviceIdBlock);
  ASSERT_TRUE(driver.Reset().ok());
  ASSERT_TRUE(driver.Negotiate(spec::Bit(spec::kFeatureVersion1)).ok());
  MiniRing ring{&xen, 0x40100000};
  ASSERT_TRUE(driver.SetUpQueue(0, ring.config()).ok());
  ASSERT_TRUE(driver.DriverOk().ok());
  const blk::RequestHeader w{blk::kTypeOut, 0, 3};
  xen.WriteGuest(0x40200000, &w, 16);
  std::vector<uint8_t> data(512);
  for (size_t i = 0; i < 512; ++i) data[i] = static_cast<uint8_t>(i ^ 0x5a);
  xen.WriteGuest(0x40201000, data.data(), 512);
  ring.Add({{0x40200000, 16, false}, {0x40201000, 512, false}, {0x40202000, 1, true}});
  driver.Kick(0);
  ASSERT_TRUE(xen.WaitForIrqs([](const auto& log) {
    for (const auto& e : log) if (e.irq == 33 && e.level == 1) return true;
    return false;
  }));
  EXPECT_EQ(ring.used_idx(), 1u);
  uint8_t status = 0xff;
  xen.ReadGuest(0x40202000, &status, 1);
  EXPECT_EQ(status, blk::kStatusOk);
  driver.HandleInterrupt();
  const blk::RequestHeader r{blk::kTypeIn, 0, 3};
  xen.WriteGuest(0x40200000, &r, 16);
  ring.Add({{0x40200000, 16, false}, {0x40203000, 512, true}, {0x40202000, 1, true}});
  driver.Kick(0);
  for (int i = 0; i < 500 && ring.used_idx() != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(ring.used_idx(), 2u);
  std::vector<uint8_t> back(512);
  xen.ReadGuest(0x40203000, back.data(), 512);
  EXPECT_EQ(back, data);
  {
    std::ifstream f(img, std::ios::binary);
    std::vector<uint8_t> disk(4 * 512);
    f.read(reinterpret_cast<char*>(disk.data()), 4 * 512);
    EXPECT_EQ(0, std::memcmp(disk.data() + 3 * 512, data.data(), 512));
  }

  // A mapcache invalidation with live queues: answered, mappings renewed in
  // place; the rings keep working (next request, completions).
  EXPECT_EQ(xen.Invalidate(1).status, AccessStatus::kOk);
  EXPECT_EQ(backend.server()->stats().invalidates, 1u);

  // rng0 on vCPU 1 through the same server.
  sim::SimMmioBus bus2{&xen, 1, 0x02000200, {}};
  testing::MmioDriver<sim::SimMmioBus> rdrv(bus2);
  ASSERT_TRUE(rdrv.Probe().ok());
  ASSERT_TRUE(rdrv.Reset().ok());
  ASSERT_TRUE(rdrv.Negotiate(spec::Bit(spec::kFeatureVersion1)).ok());
  MiniRing rring{&xen, 0x40400000};
  ASSERT_TRUE(rdrv.SetUpQueue(0, rring.config()).ok());
  ASSERT_TRUE(rdrv.DriverOk().ok());
  rring.Add({{0x40500000, 64, true}});
  rdrv.Kick(0);
  EXPECT_EQ(rring.used_idx(), 1u);  // rng answers synchronously
  EXPECT_GE(xen.CountIrq(IrqEvent::kSpi, 34, 1), 1u);

  // SIGTERM equivalent: the loop stops, teardown in reverse.
  const uint64_t one = 1;
  ASSERT_EQ(write(stop, &one, sizeof one), 8);
  loop.join();
  const IoServId id = backend.server()->id();
  backend.Stop();
  EXPECT_FALSE(xen.server_exists(id));
  EXPECT_EQ(xen.mapped_pages(), 0u);
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
  close(stop);
  std::remove(img.c_str());
  std::filesystem::remove_all(claims);
}

}  // namespace
}  // namespace virtio::xg
