// IoreqServer against the simulated Xen, in step mode (single thread: the
// vCPU's pump runs the backend's dispatch between polls of the slot).
#include <sys/mman.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sim/sim_xen.h"
#include "tests/sim_bus.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/blk_device.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/rng_device.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/pci_driver.h"
#include "virtio/testing/test_memory.h"
#include "xen_glue/devices.h"
#include "xen_glue/foreign_memory.h"
#include "xen_glue/guest_type.h"
#include "xen_glue/ioreq_server.h"

namespace virtio::xg {
namespace {

using sim::AccessStatus;
using sim::Arch;
using sim::IrqEvent;
using sim::Request;
using sim::SimDeviceModel;
using sim::SimDomainInfo;
using sim::SimEvtchn;
using sim::SimForeignMemory;
using sim::SimXen;
using ::testing::HasSubstr;

using Server = IoreqServer<SimDeviceModel, SimForeignMemory, SimEvtchn>;

// A device that records accesses in a 0x200-byte register file.
class RegFile : public IoDevice {
 public:
  uint64_t MmioRead(uint64_t offset, uint32_t size) override {
    ++reads;
    uint64_t v = 0;
    if (offset + size <= sizeof(mem)) std::memcpy(&v, mem + offset, size);
    return v;
  }
  void MmioWrite(uint64_t offset, uint32_t size, uint64_t value) override {
    ++writes;
    if (offset + size <= sizeof(mem)) std::memcpy(mem + offset, &value, size);
  }
  uint8_t mem[0x200] = {};
  int reads = 0;
  int writes = 0;
};

struct Rig {
  explicit Rig(Arch arch = Arch::kArm, unsigned vcpus = 2,
               GuestType guest = GuestType::kHvm)
      : xen(sim::SimOptions{.arch = arch, .vcpus = vcpus, .guest = guest}),
        dm(xen),
        fm(xen),
        ev(xen),
        server(dm, fm, ev, {.domid = xen.domid()}) {}
  SimXen::Pump pump() {
    return [this] { server.PollOnce(0); };
  }
  SimXen xen;
  SimDeviceModel dm;
  SimForeignMemory fm;
  SimEvtchn ev;
  Server server;
};

constexpr uint64_t kBase = 0x02000000;

TEST(IoreqServer, LifecycleRegistersEnablesAndTearsDown) {
  Rig rig;
  RegFile dev;
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &dev, "regs").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  const IoServId id = rig.server.id();
  EXPECT_TRUE(rig.xen.server_enabled(id));
  EXPECT_EQ(rig.xen.num_ranges(id, kIoRangeMemory), 1u);
  EXPECT_FALSE(rig.server.used_legacy_page());

  auto w = rig.xen.Mmio(1, true, kBase + 8, 4, 0xdeadbeef, rig.pump());
  ASSERT_EQ(w.status, AccessStatus::kOk);
  auto r = rig.xen.Mmio(0, false, kBase + 8, 4, 0, rig.pump());
  ASSERT_EQ(r.status, AccessStatus::kOk);
  EXPECT_EQ(r.data, 0xdeadbeefu);
  r = rig.xen.Mmio(0, false, kBase + 8, 2, 0, rig.pump());
  EXPECT_EQ(r.data, 0xbeefu);

  rig.server.Stop();
  EXPECT_FALSE(rig.xen.server_exists(id));
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
  // Nobody claims it now: Arm aborts.
  EXPECT_EQ(rig.xen.Mmio(0, false, kBase, 4, 0).status, AccessStatus::kAbort);
}

// A request routed to the server while Stop() unmaps its ranges (the
// guest touched the device just then) must be answered before the server
// is destroyed: on Xen 4.17 a vCPU still waiting then is never woken
// (ioreq_server_destroy frees the event channels without waking it).
struct StopHookDm : SimDeviceModel {
  using SimDeviceModel::SimDeviceModel;
  int unmap_io_range(DomId d, IoServId id, int is_mmio, uint64_t s,
                     uint64_t e) {
    if (on_unmap) std::exchange(on_unmap, nullptr)();
    return SimDeviceModel::unmap_io_range(d, id, is_mmio, s, e);
  }
  int destroy_ioreq_server(DomId d, IoServId id) {
    if (on_destroy) std::exchange(on_destroy, nullptr)();
    return SimDeviceModel::destroy_ioreq_server(d, id);
  }
  std::function<void()> on_unmap;
  std::function<void()> on_destroy;
};

TEST(IoreqServer, StopAnswersARequestThatArrivesWhileUnmapping) {
  SimXen xen(sim::SimOptions{.arch = Arch::kArm, .vcpus = 1});
  StopHookDm dm(xen);
  SimForeignMemory fm(xen);
  SimEvtchn ev(xen);
  IoreqServer<StopHookDm, SimForeignMemory, SimEvtchn> server(
      dm, fm, ev, {.domid = xen.domid()});
  RegFile dev;
  dev.mem[8] = 0x5a;
  ASSERT_TRUE(server.AddMmio(kBase, 0x200, &dev, "regs").ok());
  ASSERT_TRUE(server.Start().ok());
  dm.on_unmap = [&] {
    // Posted, not answered yet (nobody pumps): the vCPU waits.
    const auto r =
        xen.Run(0, Request{.write = false, .addr = kBase + 8, .size = 4}, {},
                std::chrono::milliseconds(1));
    EXPECT_EQ(r.status, AccessStatus::kTimeout);
  };
  sim::AccessResult before_destroy{AccessStatus::kTimeout, 0};
  dm.on_destroy = [&] {
    before_destroy = xen.Resume(0, {}, std::chrono::milliseconds(1));
  };
  server.Stop();
  EXPECT_EQ(dm.on_unmap, nullptr) << "the unmap hook did not run";
  EXPECT_EQ(dm.on_destroy, nullptr) << "the destroy hook did not run";
  EXPECT_EQ(before_destroy.status, AccessStatus::kOk)
      << "the vCPU was still waiting when its server went away";
  EXPECT_EQ(before_destroy.data, 0x5au);
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
}

TEST(IoreqServer, AddMmioAfterStartMapsImmediately) {
  Rig rig;
  RegFile a, b;
  ASSERT_TRUE(rig.server.Start().ok());
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &a, "a").ok());
  EXPECT_THAT(rig.server.AddMmio(kBase + 0x100, 0x200, &b, "b").message(),
              HasSubstr("overlaps a"));
  EXPECT_EQ(rig.xen.num_ranges(rig.server.id(), kIoRangeMemory), 1u);
  EXPECT_EQ(rig.xen.Mmio(0, true, kBase, 4, 1, rig.pump()).status, AccessStatus::kOk);
  EXPECT_EQ(a.writes, 1);
}

TEST(IoreqServer, NoIoreqSupportIsReportedClearly) {
  Rig rig;
  rig.xen.FailNextCreate(ENOSYS);
  absl::Status s = rig.server.Start();
  EXPECT_THAT(s.message(), HasSubstr("Xen built without ioreq server support"));
}

TEST(IoreqServer, LegacyPageFallbackOnX86Only) {
  {
    Rig rig(Arch::kX86);
    RegFile dev;
    ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &dev, "regs").ok());
    rig.xen.FailNextMapResource(EOPNOTSUPP);
    ASSERT_TRUE(rig.server.Start().ok());
    EXPECT_TRUE(rig.server.used_legacy_page());
    EXPECT_EQ(rig.xen.Mmio(0, true, kBase, 4, 7, rig.pump()).status, AccessStatus::kOk);
    EXPECT_EQ(dev.writes, 1);
  }
  {
    Rig rig(Arch::kArm);
    rig.xen.FailNextMapResource(EOPNOTSUPP);
    absl::Status s = rig.server.Start();
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("legacy gfn"));
    EXPECT_FALSE(rig.xen.server_exists(0));  // cleaned up
  }
}

TEST(IoreqServer, RefusesStraddlingBadSizeAndUnclaimed) {
  Rig rig(Arch::kX86);
  RegFile dev;
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &dev, "regs").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  const IoServId id = rig.server.id();
  // Straddles the end: Xen itself would not route it; we refuse it anyway.
  IoreqSlot img{};
  img.addr = kBase + 0x1fc;
  img.size = 8;
  img.count = 1;
  img.type = kTypeCopy;
  img.flags = kFlagDirRead;
  ASSERT_TRUE(rig.xen.PostRaw(id, 0, img));
  rig.server.PollOnce(0);
  auto a = rig.xen.TakeRawAnswer(id, 0);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, ~uint64_t{0});
  EXPECT_EQ(rig.server.stats().straddles, 1u);
  // Size 3.
  img.addr = kBase;
  img.size = 3;
  ASSERT_TRUE(rig.xen.PostRaw(id, 0, img));
  rig.server.PollOnce(0);
  ASSERT_TRUE(rig.xen.TakeRawAnswer(id, 0).has_value());
  // Outside every range, and PIO.
  img.size = 4;
  img.addr = 0x1000;
  ASSERT_TRUE(rig.xen.PostRaw(id, 1, img));
  img.type = kTypePio;
  ASSERT_TRUE(rig.xen.PostRaw(id, 0, img));
  rig.server.PollOnce(0);
  EXPECT_EQ(rig.xen.TakeRawAnswer(id, 1), uint64_t{0xffffffff});
  EXPECT_EQ(rig.xen.TakeRawAnswer(id, 0), uint64_t{0xffffffff});
  EXPECT_EQ(rig.server.stats().unclaimed, 2u);
  EXPECT_EQ(dev.reads + dev.writes, 0);
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

TEST(IoreqServer, RepWithoutGuestMemoryFailsLoudlyButAnswers) {
  Rig rig(Arch::kX86);
  RegFile dev;
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &dev, "regs").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  auto r = rig.xen.Run(0, Request{.type = kTypeCopy, .write = true, .addr = kBase,
                                  .data = 0x40000000, .size = 4, .count = 4,
                                  .data_is_ptr = true}, rig.pump());
  EXPECT_EQ(r.status, AccessStatus::kOk);
  EXPECT_EQ(dev.writes, 0);
  EXPECT_EQ(rig.server.stats().invalid, 1u);
  // count > 1 without data_is_ptr ("rep stos"): executed element by element.
  r = rig.xen.Run(0, Request{.type = kTypeCopy, .write = true, .addr = kBase,
                             .data = 0xab, .size = 1, .count = 16}, rig.pump());
  EXPECT_EQ(r.status, AccessStatus::kOk);
  EXPECT_EQ(dev.writes, 16);
  EXPECT_EQ(dev.mem[15], 0xab);
}

TEST(IoreqServer, RepDataIsPtrThroughForeignMappingBothDirections) {
  Rig rig(Arch::kX86);
  RegFile dev;
  auto mem = XenGuestMemory<SimForeignMemory>::Create(
      rig.fm, rig.xen.domid(), {{0x40000000, 16 << 20}});
  ASSERT_TRUE(mem.ok());
  rig.server.set_guest_copier(mem->get());
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &dev, "regs").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  const uint32_t src[4] = {1, 2, 3, 4};
  rig.xen.WriteGuest(0x40001000, src, sizeof src);
  // rep movsd into the device, forwards.
  auto r = rig.xen.Run(0, Request{.type = kTypeCopy, .write = true, .addr = kBase + 0x10,
                                  .data = 0x40001000, .size = 4, .count = 4,
                                  .data_is_ptr = true}, rig.pump());
  ASSERT_EQ(r.status, AccessStatus::kOk);
  uint32_t got[4];
  std::memcpy(got, dev.mem + 0x10, sizeof got);
  EXPECT_EQ(std::vector<uint32_t>(got, got + 4), std::vector<uint32_t>(src, src + 4));
  // rep movsd out of the device, backwards (df): last element first.
  r = rig.xen.Run(0, Request{.type = kTypeCopy, .write = false, .addr = kBase + 0x1c,
                             .data = 0x4000200c, .size = 4, .count = 4,
                             .data_is_ptr = true, .df = true}, rig.pump());
  ASSERT_EQ(r.status, AccessStatus::kOk);
  uint32_t back[4];
  rig.xen.ReadGuest(0x40002000, back, sizeof back);
  EXPECT_EQ(std::vector<uint32_t>(back, back + 4), std::vector<uint32_t>(src, src + 4));
  // A buffer outside guest RAM fails the request, not the process.
  r = rig.xen.Run(0, Request{.type = kTypeCopy, .write = true, .addr = kBase,
                             .data = 0x1000, .size = 4, .count = 2,
                             .data_is_ptr = true}, rig.pump());
  EXPECT_EQ(r.status, AccessStatus::kOk);
  EXPECT_GE(rig.server.stats().invalid, 1u);
}

TEST(IoreqServer, InvalidateIsAnsweredAndDropsTheMappingCache) {
  Rig rig;
  RegFile dev;
  auto mem = XenGuestMemory<SimForeignMemory>::Create(
      rig.fm, rig.xen.domid(), {{0x40000000, 16 << 20}});
  ASSERT_TRUE(mem.ok());
  XenGuestMemory<SimForeignMemory>* m = mem->get();
  rig.server.set_invalidate_hook([m] { m->Invalidate(); });
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &dev, "regs").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  ASSERT_NE(m->TranslateContiguous(0x40000000, 64), nullptr);
  EXPECT_EQ(rig.xen.mapped_pages(), 512u);
  auto r = rig.xen.Invalidate(1, rig.pump());
  EXPECT_EQ(r.status, AccessStatus::kOk);
  EXPECT_EQ(rig.server.stats().invalidates, 1u);
  EXPECT_EQ(m->invalidations(), 1u);
  EXPECT_EQ(m->map_calls(), 2u);  // the bucket was re-mapped in place
  // A page the guest gave away meanwhile: translations refuse it, and a
  // pointer cached before the invalidation hits scratch, not guest memory.
  uint8_t* cached = m->TranslateContiguous(0x40001000, 8);
  ASSERT_NE(cached, nullptr);
  rig.xen.FailPfn(0x40001, true);
  EXPECT_EQ(rig.xen.Invalidate(0, rig.pump()).status, AccessStatus::kOk);
  EXPECT_EQ(m->TranslateContiguous(0x40001000, 8), nullptr);
  std::memcpy(cached, "stale", 6);
  char guest[6] = {};
  rig.xen.ReadGuest(0x40001000, guest, 6);
  EXPECT_STRNE(guest, "stale");
  // Other pages still alias the guest's.
  rig.xen.WriteGuest(0x40000010, "xen", 4);
  uint8_t* p = m->TranslateContiguous(0x40000010, 4);
  ASSERT_NE(p, nullptr);
  EXPECT_STREQ(reinterpret_cast<char*>(p), "xen");
}

TEST(IoreqServer, SpuriousAndLatchedEventsAndPendingErrors) {
  Rig rig;
  RegFile dev;
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &dev, "regs").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  const IoServId id = rig.server.id();
  rig.xen.SpuriousEvent(id, 0);
  rig.xen.SpuriousEvent(id, 0);  // latched while masked: one more delivery
  rig.server.PollOnce(0);
  rig.server.PollOnce(0);
  EXPECT_EQ(rig.server.stats().spurious, 2u);
  rig.xen.FailNextPending(EINTR);
  EXPECT_EQ(rig.xen.Mmio(0, true, kBase, 4, 5, rig.pump()).status, AccessStatus::kOk);
  EXPECT_EQ(dev.writes, 1);
  EXPECT_EQ(rig.server.stats().pending_errors, 1u);
  EXPECT_FALSE(rig.xen.crashed());
}

TEST(IoreqServer, EnableBeforeMapLeavesNoPortsAndBindFailsClearly) {
  // The order rule: if the page were mapped after enabling, vp_eport would
  // be 0. Exercise the sim's rule directly.
  SimXen xen;
  SimDeviceModel dm(xen);
  SimForeignMemory fm(xen);
  SimEvtchn ev(xen);
  IoServId id = 0;
  ASSERT_EQ(dm.create_ioreq_server(xen.domid(), 0, &id), 0);
  ASSERT_EQ(dm.set_ioreq_server_state(xen.domid(), id, 1), 0);
  void* addr = nullptr;
  void* tok = fm.map_resource(xen.domid(), 0, id, 1, 1, &addr, PROT_READ | PROT_WRITE, 0);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(static_cast<IoreqSlot*>(addr)[0].vp_eport, 0u);
  EXPECT_LT(ev.bind_interdomain(xen.domid(), 0), 0);
  fm.unmap_resource(tok);
}

TEST(SimXen, DmOpErrorCodes) {
  SimXen xen(sim::SimOptions{.arch = Arch::kArm});
  SimDeviceModel dm(xen);
  SimDeviceModel other(xen, /*caller=*/3);
  IoServId id = 0;
  EXPECT_EQ(dm.create_ioreq_server(xen.domid(), kBufioreqAtomic, &id), -1);
  EXPECT_EQ(errno, EINVAL);  // bufioreq on Arm
  EXPECT_EQ(dm.create_ioreq_server(99, 0, &id), -1);
  EXPECT_EQ(errno, ESRCH);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(dm.create_ioreq_server(xen.domid(), 0, &id), 0);
  EXPECT_EQ(dm.create_ioreq_server(xen.domid(), 0, &id), -1);
  EXPECT_EQ(errno, ENOSPC);
  EXPECT_EQ(other.map_io_range(xen.domid(), 0, 1, 0, 0xfff), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(dm.map_io_range(xen.domid(), 0, 1, 0x2000, 0x1000), -1);
  EXPECT_EQ(errno, EINVAL);
  ASSERT_EQ(dm.map_io_range(xen.domid(), 0, 1, 0x1000, 0x1fff), 0);
  EXPECT_EQ(dm.map_io_range(xen.domid(), 0, 1, 0x1800, 0x27ff), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(dm.map_io_range(xen.domid(), 1, 1, 0x1800, 0x27ff), 0);  // other server: allowed
  EXPECT_EQ(dm.unmap_io_range(xen.domid(), 0, 1, 0x1000, 0x17ff), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(dm.set_irq_level(xen.domid(), 31, 1), -1);
  EXPECT_EQ(errno, EINVAL);  // not an SPI
  EXPECT_EQ(dm.set_irq_level(xen.domid(), 40, 2), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(dm.inject_msi(xen.domid(), 0xfee00000, 1), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_EQ(dm.map_pcidev(xen.domid(), 0, 0, 0, 0x20, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(dm.destroy_ioreq_server(xen.domid(), 9), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST(SimXen, EventChannelMaskLatchSemantics) {
  SimXen xen;
  SimDeviceModel dm(xen);
  SimForeignMemory fm(xen);
  SimEvtchn ev(xen);
  IoServId id = 0;
  ASSERT_EQ(dm.create_ioreq_server(xen.domid(), 0, &id), 0);
  void* addr = nullptr;
  void* tok = fm.map_resource(xen.domid(), 0, id, 1, 1, &addr, PROT_READ | PROT_WRITE, 0);
  ASSERT_NE(tok, nullptr);
  ASSERT_EQ(dm.set_ioreq_server_state(xen.domid(), id, 1), 0);
  const uint32_t remote = static_cast<IoreqSlot*>(addr)[0].vp_eport;
  const int local = ev.bind_interdomain(xen.domid(), remote);
  ASSERT_GT(local, 0);
  EXPECT_LT(ev.bind_interdomain(xen.domid(), remote), 0);  // already bound
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(ev.pending(), -1);
  EXPECT_EQ(errno, EAGAIN);
  xen.SpuriousEvent(id, 0);
  xen.SpuriousEvent(id, 0);
  xen.SpuriousEvent(id, 0);
  EXPECT_EQ(ev.pending(), local);  // delivered, now masked
  EXPECT_EQ(ev.pending(), -1);     // the others latched into one bit
  EXPECT_EQ(ev.unmask(static_cast<EvtchnPort>(local)), 0);
  EXPECT_EQ(ev.pending(), local);  // redelivered once
  EXPECT_EQ(ev.unmask(static_cast<EvtchnPort>(local)), 0);
  EXPECT_EQ(ev.pending(), -1);
  fm.unmap_resource(tok);
}

TEST(XenGuestMemory, ForeignMappingsAliasGuestRamAndRespectHoles) {
  SimXen xen(sim::SimOptions{.ram = {{0x40000000, 4 << 20}, {0x80000000, 1 << 20}}});
  SimForeignMemory fm(xen);
  xen.FailPfn((0x40000000 >> 12) + 700, true);  // a ballooned-out page
  auto mem = XenGuestMemory<SimForeignMemory>::Create(
      fm, xen.domid(), {{0x40000000, 4 << 20}, {0x80000000, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  auto& m = **mem;
  // Guest-contiguous across a bucket boundary is host-contiguous.
  uint8_t* p = m.TranslateContiguous(0x40200000 - 8, 16);
  ASSERT_NE(p, nullptr);
  std::memcpy(p, "0123456789abcdef", 16);
  char back[17] = {};
  xen.ReadGuest(0x40200000 - 8, back, 16);
  EXPECT_STREQ(back, "0123456789abcdef");
  // The failed page, the end of a bank, and a gap between banks.
  EXPECT_EQ(m.TranslateContiguous(0x40000000 + 700 * 4096 + 8, 4), nullptr);
  EXPECT_NE(m.TranslateContiguous(0x40000000 + 699 * 4096, 4096), nullptr);
  EXPECT_EQ(m.TranslateContiguous(0x40000000 + (4 << 20) - 4, 8), nullptr);
  EXPECT_EQ(m.TranslateContiguous(0x60000000, 1), nullptr);
  iovec iov[4];
  auto r = m.TranslateScatter(0x80000000, 4096, iov, 4);
  EXPECT_EQ(r.status, TranslateStatus::kOk);
  EXPECT_EQ(r.segments, 1u);
  r = m.TranslateScatter(0x40000000 + 699 * 4096, 2 * 4096, iov, 4);
  EXPECT_EQ(r.status, TranslateStatus::kOutOfRange);
}

// --- the driver-side harness over the simulated Xen ---------------------------

struct MmioTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = MmioInterrupt<XenIrqLine<SimDeviceModel>>;
};
struct PciTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = PciInterrupt<XenPciSink<SimDeviceModel>>;
};

TEST(IoreqServerHarness, RngOverVirtioMmioLikeLinux) {
  Rig rig(Arch::kArm);
  testing::TestGuestMemory mem;
  MmioTraits::Interrupt irq(XenIrqLine<SimDeviceModel>{&rig.dm, rig.xen.domid(),
                                                       IrqKind::kArmSpi, 33});
  RngDevice<MmioTraits> rng(mem.map(), irq, {});
  MmioTransport<RngDevice<MmioTraits>> mmio(rng);
  MmioTransportDevice<MmioTransport<RngDevice<MmioTraits>>> io(mmio);
  ASSERT_TRUE(rig.server.AddMmio(kBase, 0x200, &io, "rng0").ok());
  ASSERT_TRUE(rig.server.Start().ok());

  sim::SimMmioBus bus{&rig.xen, 1, kBase, rig.pump()};
  testing::MmioDriver<sim::SimMmioBus> driver(bus);
  ASSERT_TRUE(driver.Probe().ok());
  EXPECT_EQ(driver.device_id(), spec::kDeviceIdEntropy);
  ASSERT_TRUE(driver.Reset().ok());
  ASSERT_TRUE(driver.Negotiate(spec::Bit(spec::kFeatureVersion1)).ok());
  testing::SplitDriver ring(mem, 16);
  ASSERT_TRUE(driver.SetUpQueue(0, ring.config()).ok());
  ASSERT_TRUE(driver.DriverOk().ok());
  const uint64_t buf = mem.Alloc(64);
  ASSERT_TRUE(ring.Add({{buf, 64, true}}));
  if (ring.Kick()) driver.Kick(0);
  auto used = ring.Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 64u);
  EXPECT_EQ(rig.xen.CountIrq(IrqEvent::kSpi, 33, 1), 1u);
  EXPECT_EQ(driver.HandleInterrupt(), kMmioInterruptUsedBuffer);
  EXPECT_EQ(rig.xen.CountIrq(IrqEvent::kSpi, 33, 0), 1u);
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

TEST(IoreqServerHarness, BlkOverVirtioPciLikeLinuxWithBarTracking) {
  Rig rig(Arch::kX86);
  testing::TestGuestMemory mem;
  auto disk = RamDisk::Create({.capacity = 1 << 20});
  ASSERT_TRUE(disk.ok());
  XenPciSink<SimDeviceModel> sink{&rig.dm, rig.xen.domid(), 0, 0,
                                  5,       GuestType::kHvm};
  PciTraits::Interrupt irq(sink, 1);
  auto blk = BlkDevice<PciTraits, RamDisk>::Create(mem.map(), irq, **disk, {});
  ASSERT_TRUE(blk.ok());
  PciTransport<BlkDevice<PciTraits, RamDisk>> pci(**blk);
  PciTransportDevice<PciTransport<BlkDevice<PciTraits, RamDisk>>> io(pci);
  ASSERT_TRUE(rig.server.AddPci(0, 0, 5, 0, &io, "blk0").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  EXPECT_EQ(rig.xen.num_ranges(rig.server.id(), kIoRangePci), 1u);
  EXPECT_EQ(rig.xen.num_ranges(rig.server.id(), kIoRangeMemory), 0u);

  sim::SimPciBus bus{&rig.xen, 0, PciSbdf(0, 0, 5, 0), rig.pump()};
  testing::PciDriver<sim::SimPciBus> driver(bus);
  testing::SplitDriver ring(mem, 16);
  ASSERT_TRUE(driver.Probe()) << driver.error();
  // The guest enabled memory decoding: the BAR is now ours in Xen.
  EXPECT_EQ(rig.xen.num_ranges(rig.server.id(), kIoRangeMemory), 1u);
  ASSERT_TRUE(driver.Negotiate(spec::Bit(spec::kFeatureVersion1)) &&
              driver.SetUpQueue(0, ring.config()) && driver.EnableQueue(0) &&
              driver.DriverOk()) << driver.error();

  std::vector<uint8_t> data(4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  const uint64_t h = mem.Alloc(16, 16), d = mem.Alloc(4096, 512), s = mem.Alloc(1);
  const blk::RequestHeader w{blk::kTypeOut, 0, 8};
  mem.Write(h, &w, 16);
  mem.Write(d, data.data(), 4096);
  ASSERT_TRUE(ring.Add({{h, 16, false}, {d, 4096, false}, {s, 1, true}}));
  if (ring.Kick()) driver.Kick(0);
  auto used = ring.Reap();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(mem.Load<uint8_t>(s), blk::kStatusOk);
  EXPECT_EQ(0, std::memcmp((*disk)->data().data() + 8 * 512, data.data(), 4096));
  EXPECT_EQ(rig.xen.CountMsi(testing::MsiAddress(1), testing::MsiData(1)), 1u);

  const uint64_t rh = mem.Alloc(16, 16), rd = mem.Alloc(4096, 512), rs = mem.Alloc(1);
  const blk::RequestHeader r{blk::kTypeIn, 0, 8};
  mem.Write(rh, &r, 16);
  ASSERT_TRUE(ring.Add({{rh, 16, false}, {rd, 4096, true}, {rs, 1, true}}));
  if (ring.Kick()) driver.Kick(0);
  ASSERT_TRUE(ring.Reap().has_value());
  std::vector<uint8_t> back(4096);
  mem.Read(rd, back.data(), 4096);
  EXPECT_EQ(back, data);

  // Memory decoding off: the BAR window is released.
  bus.ConfigWrite(pci::kCfgCommand, 2, 0);
  EXPECT_EQ(rig.xen.num_ranges(rig.server.id(), kIoRangeMemory), 0u);
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

// msix=off: the function's capability list ends at PCI_CFG, so a guest
// driver (Linux, the harness) falls back to INTx.
TEST(IoreqServerHarness, PciWithoutMsixIsIntxOnly) {
  Rig rig(Arch::kX86);
  testing::TestGuestMemory mem;
  auto disk = RamDisk::Create({.capacity = 1 << 20});
  ASSERT_TRUE(disk.ok());
  XenPciSink<SimDeviceModel> sink{&rig.dm, rig.xen.domid(), 0, 0,
                                  5,       GuestType::kHvm};
  PciTraits::Interrupt irq(sink, 1);
  auto blk = BlkDevice<PciTraits, RamDisk>::Create(mem.map(), irq, **disk, {});
  ASSERT_TRUE(blk.ok());
  PciTransport<BlkDevice<PciTraits, RamDisk>> pci(**blk);
  PciTransportDevice<PciTransport<BlkDevice<PciTraits, RamDisk>>> io(
      pci, /*msix=*/false);
  ASSERT_TRUE(rig.server.AddPci(0, 0, 5, 0, &io, "blk0").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  sim::SimPciBus bus{&rig.xen, 0, PciSbdf(0, 0, 5, 0), rig.pump()};
  EXPECT_EQ(bus.ConfigRead(pci::kCapPciCfgAt + 1, 1), 0u);
  EXPECT_EQ(bus.ConfigRead(pci::kCapPciCfgAt, 2), uint32_t{pci::kCapIdVendor});
  testing::PciDriver<sim::SimPciBus> driver(bus, {.msix = false});
  ASSERT_TRUE(driver.Probe()) << driver.error();
  EXPECT_EQ(driver.msix_cap_at(), 0u);
}

// Real Xen 4.17, HVM guest, Linux 6.1: the guest remaps MSI-X to PIRQs. It
// writes each entry with data 0 (vector 0) and the PIRQ in the address's
// destination bits, and never clears the entry's mask bit (it masks the
// event channel instead). The sink must send such messages anyway, or the
// guest waits forever for its first interrupt; ordinary messages still
// obey the mask.
TEST(IoreqServerHarness, XenPirqMsixMessageIgnoresTheTableMask) {
  Rig rig(Arch::kX86);
  testing::TestGuestMemory mem;
  auto disk = RamDisk::Create({.capacity = 1 << 20});
  ASSERT_TRUE(disk.ok());
  XenPciSink<SimDeviceModel> sink{&rig.dm, rig.xen.domid(), 0, 0,
                                  5,       GuestType::kHvm};
  PciTraits::Interrupt irq(sink, 1);
  auto blk = BlkDevice<PciTraits, RamDisk>::Create(mem.map(), irq, **disk, {});
  ASSERT_TRUE(blk.ok());
  PciTransport<BlkDevice<PciTraits, RamDisk>> pci(**blk);
  PciTransportDevice<PciTransport<BlkDevice<PciTraits, RamDisk>>> io(pci);
  ASSERT_TRUE(rig.server.AddPci(0, 0, 5, 0, &io, "blk0").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  sim::SimPciBus bus{&rig.xen, 0, PciSbdf(0, 0, 5, 0), rig.pump()};
  testing::PciDriver<sim::SimPciBus> driver(bus);
  testing::SplitDriver ring(mem, 16);
  ASSERT_TRUE(driver.Probe()) << driver.error();
  ASSERT_TRUE(driver.Negotiate(spec::Bit(spec::kFeatureVersion1)) &&
              driver.SetUpQueue(0, ring.config()) && driver.EnableQueue(0) &&
              driver.DriverOk())
      << driver.error();
  // Queue 0 uses vector 1: reprogram it the way Linux on Xen HVM does.
  const uint64_t pirq_addr = 0xfee00000u | (uint64_t{0x37} << 12);
  driver.MaskVector(1, true);
  bus.BarWrite(driver.MsixTableOffset(1) + pci::kMsixEntryAddrLo, 4, pirq_addr);
  bus.BarWrite(driver.MsixTableOffset(1) + pci::kMsixEntryAddrHi, 4, 0);
  bus.BarWrite(driver.MsixTableOffset(1) + pci::kMsixEntryData, 4, 0);

  auto read_sector = [&] {
    const uint64_t h = mem.Alloc(16, 16), d = mem.Alloc(512, 512),
                   s = mem.Alloc(1);
    const blk::RequestHeader r{blk::kTypeIn, 0, 0};
    mem.Write(h, &r, 16);
    ASSERT_TRUE(ring.Add({{h, 16, false}, {d, 512, true}, {s, 1, true}}));
    if (ring.Kick()) driver.Kick(0);
    ASSERT_TRUE(ring.Reap().has_value());
  };
  read_sector();
  EXPECT_EQ(rig.xen.CountMsi(pirq_addr, 0), 1u);
  EXPECT_EQ(rig.xen.CountPirq(0x37), 1u);  // what Xen raised for it
  EXPECT_FALSE(driver.PbaBit(1));

  // An ordinary (vector != 0) message in a masked entry stays pending.
  bus.BarWrite(driver.MsixTableOffset(1) + pci::kMsixEntryAddrLo, 4,
               testing::MsiAddress(1));
  bus.BarWrite(driver.MsixTableOffset(1) + pci::kMsixEntryData, 4,
               testing::MsiData(1));
  read_sector();
  EXPECT_EQ(rig.xen.CountMsi(testing::MsiAddress(1), testing::MsiData(1)), 0u);
  EXPECT_TRUE(driver.PbaBit(1));
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

// What the real Xen 4.17 did, as the simulator must (each found or checked
// on the nested Xen, nested-hypervisors.md B and the glue README):
//   * an unclaimed MMIO read returns all ones (no server: 0xFFFFFFFF);
//   * vp_eport reads 0 until the server is enabled, and binding port 0
//     fails (EnableBeforeMapLeavesNoPortsAndBindFailsClearly covers the
//     enable-before-map order);
//   * an MSI with vector 0 raises the PIRQ its address names (Linux in an
//     HVM guest programs MSI-X that way and leaves the table entry masked:
//     IoreqServerHarness.XenPirqMsixMessageIgnoresTheTableMask);
//   * set_irq_level is EOPNOTSUPP on x86 and ISA/INTx on PVH is fatal
//     (SimXen.X86InterruptDmOpsByGuestTypeAsOnXen417).
TEST(SimXen, BehavesAsXen417DidOnX86) {
  SimXen xen(sim::SimOptions{.arch = Arch::kX86, .vcpus = 1});
  SimDeviceModel dm(xen);
  SimForeignMemory fm(xen);
  SimEvtchn ev(xen);
  const sim::AccessResult r = xen.Mmio(0, false, 0xfe000000, 4, 0);
  EXPECT_EQ(r.status, AccessStatus::kUnclaimed);
  EXPECT_EQ(r.data, 0xffffffffu);

  IoServId id = 0;
  ASSERT_EQ(dm.create_ioreq_server(xen.domid(), kBufioreqOff, &id), 0);
  void* addr = nullptr;
  void* tok = fm.map_resource(xen.domid(), kResourceIoreqServer, id,
                              ResourceFrameIoreq(0), 1, &addr,
                              PROT_READ | PROT_WRITE, 0);
  ASSERT_NE(tok, nullptr);
  auto* page = static_cast<IoreqSlot*>(addr);
  EXPECT_EQ(page[0].vp_eport, 0u);  // not enabled yet
  EXPECT_LT(ev.bind_interdomain(xen.domid(), page[0].vp_eport), 0);
  ASSERT_EQ(dm.set_ioreq_server_state(xen.domid(), id, 1), 0);
  EXPECT_NE(page[0].vp_eport, 0u);
  EXPECT_GE(ev.bind_interdomain(xen.domid(), page[0].vp_eport), 0);
  fm.unmap_resource(tok);

  // PIRQ 0x137: destination ID 0x37, upper bits 0x100.
  const uint64_t pirq_addr =
      (uint64_t{0x100} << 32) | 0xfee00000u | (0x37u << 12);
  ASSERT_EQ(dm.inject_msi(xen.domid(), pirq_addr, 0), 0);
  ASSERT_EQ(dm.inject_msi(xen.domid(), 0xfee00000u, 0x4031), 0);  // vector 0x31
  EXPECT_EQ(xen.CountPirq(0x137), 1u);
  EXPECT_EQ(xen.irq_log().back().pirq, -1);
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
}

// --- guest types (x86 HVM vs PVH) ------------------------------------------

// getdomaininfo's HVM flag and emulation_flags tell the types apart the way
// libxl creates them: HVM gets every XEN_X86_EMU_*, PVH only the LAPIC.
TEST(GuestType, DetectedFromGetdomaininfo) {
  SimXen hvm(sim::SimOptions{.arch = Arch::kX86, .guest = GuestType::kHvm});
  SimXen pvh(sim::SimOptions{.arch = Arch::kX86, .guest = GuestType::kPvh});
  SimXen arm(sim::SimOptions{.arch = Arch::kArm});
  SimDomainInfo hdi(hvm), pdi(pvh), adi(arm);
  EXPECT_EQ(*DetectGuestType(hdi, hvm.domid()), GuestType::kHvm);
  EXPECT_EQ(*DetectGuestType(pdi, pvh.domid()), GuestType::kPvh);
  EXPECT_EQ(*DetectGuestType(adi, arm.domid()), GuestType::kArm);
  EXPECT_THAT(DetectGuestType(hdi, 99).status().message(),
              HasSubstr("domain 99"));
  hvm.FailDomainInfo(EPERM);
  EXPECT_FALSE(DetectGuestType(hdi, hvm.domid()).ok());
  EXPECT_EQ(ClassifyGuest({.hvm = false, .x86 = true}), GuestType::kPv);
  // Only a known HVM guest gets level dm_ops.
  EXPECT_TRUE(LevelIrqDmOpsSafe(GuestType::kHvm));
  EXPECT_FALSE(LevelIrqDmOpsSafe(GuestType::kPvh));
  EXPECT_FALSE(LevelIrqDmOpsSafe(GuestType::kUnknown));
}

// What Xen 4.17 did with each x86 interrupt dm_op (nested-hypervisors.md
// B): on HVM, ISA, INTx and MSI succeed and set_irq_level is EOPNOTSUPP
// (Arm only); on PVH, set_isa_irq_level panicked the hypervisor.
TEST(SimXen, X86InterruptDmOpsByGuestTypeAsOnXen417) {
  SimXen hvm(sim::SimOptions{.arch = Arch::kX86, .guest = GuestType::kHvm});
  SimDeviceModel hdm(hvm);
  EXPECT_EQ(hdm.set_isa_irq_level(hvm.domid(), 5, 1), 0);
  EXPECT_EQ(hdm.set_pci_intx_level(hvm.domid(), 0, 0, 5, 0, 1), 0);
  EXPECT_EQ(hdm.inject_msi(hvm.domid(), 0xfee00000, 0x31), 0);
  EXPECT_EQ(hdm.set_irq_level(hvm.domid(), 40, 1), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_FALSE(hvm.crashed());

  SimXen pvh(sim::SimOptions{.arch = Arch::kX86, .guest = GuestType::kPvh});
  SimDeviceModel pdm(pvh);
  EXPECT_EQ(pdm.inject_msi(pvh.domid(), 0xfee00000, 0x31), 0);
  EXPECT_FALSE(pvh.hypervisor_crashed());
  pdm.set_isa_irq_level(pvh.domid(), 5, 0);
  EXPECT_TRUE(pvh.hypervisor_crashed());
  EXPECT_TRUE(pvh.crashed());
  EXPECT_THAT(pvh.crash_reason(), HasSubstr("set_isa_irq_level"));
  // Everything is dead afterwards, as after a real panic.
  EXPECT_EQ(pvh.Mmio(0, false, kBase, 4, 0).status, AccessStatus::kCrashed);

  // INTx returned 0 on a real PVH guest but has no IO-APIC behind it; the
  // simulator makes it fatal so no path may rely on it.
  SimXen pvh2(sim::SimOptions{.arch = Arch::kX86, .guest = GuestType::kPvh});
  SimDeviceModel p2dm(pvh2);
  p2dm.set_pci_intx_level(pvh2.domid(), 0, 0, 5, 0, 1);
  EXPECT_TRUE(pvh2.hypervisor_crashed());
}

// The sinks never issue a level dm_op unless the guest is known to be HVM.
// On the PVH simulator an issued one crashes "Xen", so this fails if the
// guard goes. The device still completes requests (the guest would poll).
TEST(IoreqServerHarness, PvhSinksNeverIssueIsaOrIntx) {
  Rig rig(Arch::kX86, 2, GuestType::kPvh);
  XenIrqLine<SimDeviceModel> line{&rig.dm, rig.xen.domid(), IrqKind::kX86Isa, 5,
                                  GuestType::kPvh};
  line.Set(true);
  line.Set(false);
  EXPECT_EQ(line.refused, 2u);
  XenIrqLine<SimDeviceModel> unknown{&rig.dm, rig.xen.domid(), IrqKind::kX86Isa,
                                     5};
  unknown.Set(true);  // type never determined: refused as well
  EXPECT_EQ(unknown.refused, 1u);
  EXPECT_FALSE(rig.xen.hypervisor_crashed()) << rig.xen.crash_reason();

  // A virtio-pci function the driver runs without MSI-X: every used-buffer
  // notification would be INTx.
  testing::TestGuestMemory mem;
  auto disk = RamDisk::Create({.capacity = 1 << 20});
  ASSERT_TRUE(disk.ok());
  XenPciSink<SimDeviceModel> sink{&rig.dm, rig.xen.domid(), 0, 0,
                                  5,       GuestType::kPvh};
  PciTraits::Interrupt irq(sink, 1);
  auto blk = BlkDevice<PciTraits, RamDisk>::Create(mem.map(), irq, **disk, {});
  ASSERT_TRUE(blk.ok());
  PciTransport<BlkDevice<PciTraits, RamDisk>> pci(**blk);
  PciTransportDevice<PciTransport<BlkDevice<PciTraits, RamDisk>>> io(
      pci, /*msix=*/false);
  ASSERT_TRUE(rig.server.AddPci(0, 0, 5, 0, &io, "blk0").ok());
  ASSERT_TRUE(rig.server.Start().ok());
  sim::SimPciBus bus{&rig.xen, 0, PciSbdf(0, 0, 5, 0), rig.pump()};
  testing::PciDriver<sim::SimPciBus> driver(bus, {.msix = false});
  testing::SplitDriver ring(mem, 16);
  ASSERT_TRUE(driver.Probe()) << driver.error();
  ASSERT_TRUE(driver.Negotiate(spec::Bit(spec::kFeatureVersion1)) &&
              driver.SetUpQueue(0, ring.config()) && driver.EnableQueue(0) &&
              driver.DriverOk())
      << driver.error();
  const uint64_t h = mem.Alloc(16, 16), d = mem.Alloc(512, 512),
                 s = mem.Alloc(1);
  const blk::RequestHeader r{blk::kTypeIn, 0, 0};
  mem.Write(h, &r, 16);
  ASSERT_TRUE(ring.Add({{h, 16, false}, {d, 512, true}, {s, 1, true}}));
  if (ring.Kick()) driver.Kick(0);
  ASSERT_TRUE(ring.Reap().has_value());
  EXPECT_EQ(mem.Load<uint8_t>(s), blk::kStatusOk);
  EXPECT_GE(sink.refused, 1u);
  for (const IrqEvent& e : rig.xen.irq_log()) {
    EXPECT_NE(e.kind, IrqEvent::kIntx);
    EXPECT_NE(e.kind, IrqEvent::kIsa);
  }
  EXPECT_FALSE(rig.xen.hypervisor_crashed()) << rig.xen.crash_reason();
  EXPECT_FALSE(rig.xen.crashed()) << rig.xen.crash_reason();
}

}  // namespace
}  // namespace virtio::xg
