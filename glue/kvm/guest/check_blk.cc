// glue/kvm/guest/check_blk.cc — the virtio-blk check (device_checks.h).
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
void TestBlk(Dev& dev) {
  using namespace virtio::blk;
  using kvmglue::BlkPattern;
  // With MQ offered, find out how many queues there are first (config
  // space is readable once features are negotiated), then bring up two.
  uint16_t nq = 1;
  if (Negotiate(dev, BlkWanted()) && (dev.features & spec::Bit(kFeatureMq))) {
    nq = dev.Config16(offsetof(Config, num_queues));
    Note("request queues", nq);
    if (nq > 2) nq = 2;
  }
  Queue qs[2];
  Queue& q = qs[0];
  if (!Check(nq >= 1 && BringUpQueues(dev, qs, nq, BlkWanted()),
             "bring-up (reset, ACK, DRIVER, features, FEATURES_OK, queues, "
             "DRIVER_OK)")) {
    return;
  }
  Check(((g_flags & kvmglue::kFlagPacked) != 0) == Packed(dev),
        Packed(dev) ? "negotiated RING_PACKED" : "negotiated split ring");
  const uint32_t irqs_before = dev.queue_irqs;
  const uint64_t capacity = dev.Config64(0);
  Note("capacity (sectors)", static_cast<uint32_t>(capacity));
  Check(capacity >= kvmglue::kBlkMinSectors, "capacity read from config space");
  const bool ro = dev.features & spec::Bit(kFeatureRo);
  Check(ro == dev.readonly,
        ro ? "device is read-only (RO offered)" : "device is writable");

  BlkReq* reqs = NewReqs(8);
  constexpr uint32_t kSectors = kvmglue::kBlkWriteSectors;
  uint8_t* wbuf = static_cast<uint8_t*>(Alloc(kSectors * kSectorSize));
  uint8_t* rbuf = static_cast<uint8_t*>(Alloc(kSectors * kSectorSize));
  for (uint32_t s = 0; s < kSectors; ++s) {
    for (uint32_t b = 0; b < kSectorSize; ++b) {
      wbuf[s * kSectorSize + b] = BlkPattern(kvmglue::kBlkWriteSector + s, b);
    }
  }

  // GET_ID
  {
    char* id = static_cast<char*>(Alloc(kIdBytes));
    SetReq(reqs[0], kTypeGetId, 0);
    const Buf d{Phys(id), kIdBytes, true};
    Check(BlkRun(q, reqs, &d, 1) && reqs[0].status == kStatusOk && id[0] != 0,
          "GET_ID returns the serial");
  }

  if (ro) {
    SetReq(reqs[0], kTypeOut, kvmglue::kBlkWriteSector);
    const Buf d{Phys(wbuf), kSectorSize, false};
    Check(BlkRun(q, reqs, &d, 1) && reqs[0].status == kStatusIoErr,
          "write to a read-only disk fails with IOERR");
  } else {
    // Four writes of two sectors each, in flight together, one kick.
    Buf d[4];
    for (int i = 0; i < 4; ++i) {
      SetReq(reqs[i], kTypeOut, kvmglue::kBlkWriteSector + 2 * i);
      d[i] = {Phys(wbuf + 2 * i * kSectorSize), 2 * kSectorSize, false};
    }
    const uint32_t kicks = q.kicks;
    bool ok = BlkRun(q, reqs, d, 4);
    for (int i = 0; i < 4; ++i) ok &= reqs[i].status == kStatusOk;
    Check(ok, "4 concurrent writes (2 sectors each) complete OK");
    Check(q.kicks - kicks == 1, "one kick for the batch");
    if (dev.features & spec::Bit(kFeatureFlush)) {
      SetReq(reqs[0], kTypeFlush, 0);
      const Buf none{0, 0, false};
      Check(BlkRun(q, reqs, &none, 1) && reqs[0].status == kStatusOk,
            "FLUSH OK");
    }
  }
  // Read back what is on disk at the write area.
  {
    SetReq(reqs[0], kTypeIn, kvmglue::kBlkWriteSector);
    memset(rbuf, 0, kSectors * kSectorSize);
    const Buf d{Phys(rbuf), kSectors * kSectorSize, true};
    const bool done = BlkRun(q, reqs, &d, 1) && reqs[0].status == kStatusOk;
    if (ro) {
      Check(done, "read of 8 sectors OK");
    } else {
      Check(done && memcmp(rbuf, wbuf, kSectors * kSectorSize) == 0,
            "read-back of 8 sectors matches what was written");
    }
  }
  if (!ro && (dev.features & spec::Bit(kFeatureDiscard))) {
    DiscardWriteZeroes* seg =
        static_cast<DiscardWriteZeroes*>(Alloc(sizeof(DiscardWriteZeroes)));
    seg->sector = kvmglue::kBlkDiscardSector;
    seg->num_sectors = kvmglue::kBlkDiscardSectors;
    seg->flags = 0;
    SetReq(reqs[0], kTypeDiscard, 0);
    const Buf d{Phys(seg), sizeof *seg, false};
    Check(BlkRun(q, reqs, &d, 1) && reqs[0].status == kStatusOk, "DISCARD OK");
    SetReq(reqs[0], kTypeIn, kvmglue::kBlkDiscardSector);
    memset(rbuf, 0xee, kSectorSize);
    const Buf r{Phys(rbuf), kSectorSize, true};
    Check(BlkRun(q, reqs, &r, 1) && reqs[0].status == kStatusOk &&
              AllZero(rbuf, kSectorSize),
          "discarded sectors read back as zeros");
  }
  if (!ro) {
    // WRITE_ZEROES (unmap off) over sectors that hold 0xaa on the host.
    Check(dev.features & spec::Bit(kFeatureWriteZeroes),
          "WRITE_ZEROES offered");
    if (dev.features & spec::Bit(kFeatureWriteZeroes)) {
      DiscardWriteZeroes* seg =
          static_cast<DiscardWriteZeroes*>(Alloc(sizeof(DiscardWriteZeroes)));
      seg->sector = kvmglue::kBlkWriteZeroesSector;
      seg->num_sectors = kvmglue::kBlkWriteZeroesSectors;
      seg->flags = 0;
      SetReq(reqs[0], kTypeWriteZeroes, 0);
      const Buf d{Phys(seg), sizeof *seg, false};
      Check(BlkRun(q, reqs, &d, 1) && reqs[0].status == kStatusOk,
            "WRITE_ZEROES OK");
      SetReq(reqs[0], kTypeIn, kvmglue::kBlkWriteZeroesSector);
      memset(rbuf, 0xee, kSectorSize);
      const Buf r{Phys(rbuf), kSectorSize, true};
      Check(BlkRun(q, reqs, &r, 1) && reqs[0].status == kStatusOk &&
                AllZero(rbuf, kSectorSize),
            "written-zeroes sectors read back as zeros");
    }
    // An indirect descriptor table: [header][4 sectors][4 sectors][status].
    Check(dev.features & spec::Bit(spec::kFeatureIndirectDesc),
          "INDIRECT_DESC negotiated");
    if (dev.features & spec::Bit(spec::kFeatureIndirectDesc)) {
      SetReq(reqs[0], kTypeIn, kvmglue::kBlkWriteSector);
      reqs[0].status = 0xff;
      memset(rbuf, 0, kSectors * kSectorSize);
      const Buf t[4] = {{Phys(&reqs[0].hdr), sizeof reqs[0].hdr, false},
                        {Phys(rbuf), 4 * kSectorSize, true},
                        {Phys(rbuf + 4 * kSectorSize), 4 * kSectorSize, true},
                        {Phys(&reqs[0].status), 1, true}};
      uint16_t id;
      uint32_t len;
      const bool done =
          q.AddIndirect(t, 4) >= 0 && (q.Kick(), WaitUsed(q, &id, &len));
      Check(done && reqs[0].status == kStatusOk &&
                memcmp(rbuf, wbuf, kSectors * kSectorSize) == 0,
            "read through an indirect table (4 entries) matches");
    }
  }
  if (nq > 1) {
    // The second request queue: a read-back through queue 1.
    SetReq(reqs[0], kTypeIn, kvmglue::kBlkWriteSector);
    memset(rbuf, 0, kSectors * kSectorSize);
    const Buf d{Phys(rbuf), kSectors * kSectorSize, true};
    const uint32_t kicks = qs[1].kicks;
    Check(BlkRun(qs[1], reqs, &d, 1) && reqs[0].status == kStatusOk &&
              (ro || memcmp(rbuf, wbuf, kSectors * kSectorSize) == 0) &&
              qs[1].kicks == kicks + 1,
          "multiqueue: a read on request queue 1 completes there");
  }
  // A read past the end fails alone.
  {
    SetReq(reqs[0], kTypeIn, capacity);
    const Buf d{Phys(rbuf), kSectorSize, true};
    Check(BlkRun(q, reqs, &d, 1) && reqs[0].status == kStatusIoErr,
          "read beyond capacity fails with IOERR");
  }
  Note("kicks", q.kicks);
  if (!Poll()) {
    // The used buffers may have been found by polling before the interrupt
    // (irqfd injection is asynchronous): give it up to a second to arrive.
    const uint32_t start = g_ticks;
    while (dev.queue_irqs == irqs_before && g_ticks - start < 100) sti_hlt();
    Note("used-buffer interrupts", dev.queue_irqs - irqs_before);
    Check(dev.queue_irqs > irqs_before, "used-buffer interrupts delivered");
  }
  Check(!(dev.Status() & spec::kStatusDeviceNeedsReset), "device healthy");
  dev.Reset();
}

}  // namespace guest
