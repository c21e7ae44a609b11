// glue/kvm/guest/check_hostile.cc — the hostile-driver check
// (device_checks.h).
#include <cstdint>

#include "boot_info.h"
#include "guest/blk_request.h"
#include "guest/check.h"
#include "guest/check_helpers.h"
#include "guest/device_checks.h"
#include "guest/hw.h"
#include "guest/virtio_guest.h"
#include "virtio/blk_spec.h"
#include "virtio/spec.h"

namespace guest {
namespace {

// --- Hostile mode ------------------------------------------------------------
// One request the device can serve: entropy for rng, a 1-sector read for blk.
bool GoodRequest(Dev& dev, Queue& q, uint32_t addr) {
  uint16_t id;
  uint32_t len;
  if (dev.device_id == spec::kDeviceIdBlock) {
    BlkReq* r = NewReqs(1);
    SetReq(*r, virtio::blk::kTypeIn, 0);
    const Buf d{addr, 512, true};
    return BlkRun(q, r, &d, 1) && r->status == virtio::blk::kStatusOk;
  }
  const Buf b{addr, 16, true};
  if (q.Add(&b, 1) < 0) return false;
  q.Kick();
  return WaitUsed(q, &id, &len) && len == 16;
}

uint64_t HostileWanted(const Dev& dev) {
  return dev.device_id == spec::kDeviceIdBlock ? BlkWanted() : RingFeatures();
}

}  // namespace

void TestHostile(Dev& dev) {
  const bool mmio = dev.transport == kvmglue::kBootMmio;
  uint8_t* scratch = static_cast<uint8_t*>(Alloc(512));

  // 1. Wrong-sized register accesses are ignored.
  dev.Reset();
  if (mmio) {
    (void)mmio_read8(dev.base + mmio::kStatus);
    mmio_write16(dev.base + mmio::kStatus, spec::kStatusAcknowledge);
    mmio_write8(dev.base + mmio::kQueueSel, 3);
  } else {
    (void)mmio_read32(dev.common + pci::kCommonDeviceStatus);
    mmio_write32(dev.common + pci::kCommonDeviceStatus,
                 spec::kStatusAcknowledge);
    mmio_write8(dev.common + pci::kCommonQueueSelect, 3);
    (void)PciRead16(dev.bdf, 1);  // misaligned config read
  }
  Check(dev.Status() == 0, "hostile: wrong-sized register accesses ignored");

  // 2. Writes to read-only registers change nothing.
  if (mmio) {
    mmio_write32(dev.base + mmio::kMagicValue, 0);
    mmio_write32(dev.base + mmio::kDeviceId, 99);
    Check(mmio_read32(dev.base + mmio::kMagicValue) == mmio::kMagic &&
              mmio_read32(dev.base + mmio::kDeviceId) == dev.device_id,
          "hostile: writes to read-only registers ignored");
  } else {
    const uint16_t nq = mmio_read16(dev.common + pci::kCommonNumQueues);
    mmio_write16(dev.common + pci::kCommonNumQueues, 77);
    PciWrite16(dev.bdf, pci::kCfgVendorId, 0x1234);
    Check(mmio_read16(dev.common + pci::kCommonNumQueues) == nq &&
              PciRead16(dev.bdf, pci::kCfgVendorId) == pci::kVendorId,
          "hostile: writes to read-only registers ignored");
  }

  // 3. A queue enabled before FEATURES_OK: NEEDS_RESET.
  {
    Queue q;
    dev.Reset();
    dev.AddStatus(spec::kStatusAcknowledge);
    dev.AddStatus(spec::kStatusDriver);
    q.Init(&dev, 0, 16, false, false);
    dev.SelectQueue(0);
    dev.ProgramQueue(0, 16, q.desc_addr, q.driver_addr, q.device_addr);
    dev.EnableQueue();
    Check(dev.Status() & spec::kStatusDeviceNeedsReset,
          "hostile: queue enable before FEATURES_OK -> NEEDS_RESET");
  }

  // 4. Features the device never offered: FEATURES_OK refused.
  dev.Reset();
  dev.AddStatus(spec::kStatusAcknowledge);
  dev.AddStatus(spec::kStatusDriver);
  dev.WriteDriverFeatures(spec::Bit(spec::kFeatureVersion1) | spec::Bit(63));
  dev.AddStatus(spec::kStatusFeaturesOk);
  Check(!(dev.Status() & spec::kStatusFeaturesOk),
        "hostile: unoffered feature bit -> FEATURES_OK refused");

  // 5. A ring outside guest memory: NEEDS_RESET at enable.
  {
    Queue q;
    Negotiate(dev, HostileWanted(dev));
    q.Init(&dev, 0, 16, Packed(dev), false);
    dev.SelectQueue(0);
    dev.ProgramQueue(0, 16, 0xf0000000u, q.driver_addr, q.device_addr);
    dev.EnableQueue();
    Check(dev.Status() & spec::kStatusDeviceNeedsReset,
          "hostile: ring address outside RAM -> NEEDS_RESET");
  }

  // 6. A descriptor loop (split) / a chain longer than the ring (packed):
  //    NEEDS_RESET with a configuration interrupt.
  {
    Queue q;
    Check(BringUp(dev, q, HostileWanted(dev)),
          "hostile: bring-up for ring attack");
    const uint32_t cfg_irqs = dev.config_irqs;
    if (Packed(dev)) {
      q.PublishPackedEndless(Phys(scratch));
    } else {
      q.PublishSplitLoop(Phys(scratch));
    }
    dev.Notify(0);
    Check(WaitStatus(dev, spec::kStatusDeviceNeedsReset),
          Packed(dev) ? "hostile: endless packed chain -> NEEDS_RESET"
                      : "hostile: descriptor loop -> NEEDS_RESET");
    if (!Poll()) {
      const uint32_t start = g_ticks;
      while (dev.config_irqs == cfg_irqs && g_ticks - start < 100) sti_hlt();
      Check(dev.config_irqs != cfg_irqs,
            "hostile: configuration-change interrupt for NEEDS_RESET");
    }
  }

  // 7. A buffer outside guest memory: that request fails alone.
  {
    Queue q;
    BringUp(dev, q, HostileWanted(dev));
    bool failed_alone = false;
    if (dev.device_id == spec::kDeviceIdBlock) {
      BlkReq* r = NewReqs(1);
      SetReq(*r, virtio::blk::kTypeIn, 0);
      const Buf d{0xf0000000u, 512, true};
      // IOERR, or (when the status byte lies past the unreachable buffer)
      // the chain comes back untouched with length 0: never OK.
      failed_alone = BlkRun(q, r, &d, 1) && r->status != virtio::blk::kStatusOk;
    } else {
      const Buf b{0xf0000000u, 64, true};
      uint16_t id;
      uint32_t len = 99;
      q.Add(&b, 1);
      q.Kick();
      failed_alone = WaitUsed(q, &id, &len) && len == 0;
    }
    const bool live = !(dev.Status() & spec::kStatusDeviceNeedsReset);
    Check(
        failed_alone && live,
        "hostile: buffer outside RAM -> that request fails, device stays live");
    Check(live && GoodRequest(dev, q, Phys(scratch)),
          "hostile: device serves the next good request");
  }

  // 8. Recovery: a reset brings the device back.
  {
    Queue q;
    Check(BringUp(dev, q, HostileWanted(dev)) &&
              GoodRequest(dev, q, Phys(scratch)),
          "hostile: reset + bring-up recovers the device");
  }
  dev.Reset();
}

}  // namespace guest
