// glue/kvm/guest/virtio_guest.cc — the test guest's virtio driver
// (virtio_guest.h): PCI probe, interrupts, the split and packed
// virtqueues, and Linux's bring-up sequence.
#include "guest/virtio_guest.h"

#include <cstdint>

#include "boot_info.h"
#include "guest/hw.h"
#include "virtio/spec.h"

namespace guest {

using kvmglue::BootDevice;

// --- PCI probe ---------------------------------------------------------------
bool Dev::PciProbe(const BootDevice& boot, bool want_msix) {
  bdf = boot.pci_bdf;
  if (PciRead16(bdf, pci::kCfgVendorId) != pci::kVendorId) return false;
  // BAR0/1: one 64-bit memory BAR. Size it as Linux does (decode off,
  // all ones, read back, restore), then turn decoding on.
  const uint16_t cmd = PciRead16(bdf, pci::kCfgCommand);
  PciWrite16(bdf, pci::kCfgCommand, cmd & ~pci::kCommandMemorySpace);
  const uint32_t lo = PciRead32(bdf, pci::kCfgBar0);
  const uint32_t hi = PciRead32(bdf, pci::kCfgBar1);
  PciWrite32(bdf, pci::kCfgBar0, 0xffffffff);
  PciWrite32(bdf, pci::kCfgBar1, 0xffffffff);
  const uint32_t mask = PciRead32(bdf, pci::kCfgBar0) & ~0xfu;
  PciWrite32(bdf, pci::kCfgBar0, lo);
  PciWrite32(bdf, pci::kCfgBar1, hi);
  bar_size = ~mask + 1;
  bar = lo & ~0xfu;
  if (hi != 0 || bar == 0 || bar != boot.addr) return false;
  PciWrite16(bdf, pci::kCfgCommand,
             cmd | pci::kCommandMemorySpace | pci::kCommandBusMaster);
  irq = PciRead8(bdf, pci::kCfgInterruptLine);
  // Capabilities.
  if (!(PciRead16(bdf, pci::kCfgStatus) & pci::kStatusCapabilityList))
    return false;
  for (uint32_t at = PciRead8(bdf, pci::kCfgCapabilityPointer) & 0xfc, n = 0;
       at != 0 && n < 48; at = PciRead8(bdf, at + pci::kCapNext) & 0xfc, ++n) {
    const uint8_t id = PciRead8(bdf, at);
    if (id == pci::kCapIdMsix) {
      msix_cap = at;
      msix_entries = (PciRead16(bdf, at + pci::kMsixControl) &
                      pci::kMsixControlTableSizeMask) +
                     1;
      msix_table = bar + (PciRead32(bdf, at + pci::kMsixTable) & ~7u);
      continue;
    }
    if (id != pci::kCapIdVendor) continue;
    const uint8_t type = PciRead8(bdf, at + pci::kCapCfgType);
    if (PciRead8(bdf, at + pci::kCapBar) != 0) continue;
    const uint32_t where = bar + PciRead32(bdf, at + pci::kCapOffset);
    switch (type) {
      case pci::kCapCommonCfg:
        if (!common) common = where;
        break;
      case pci::kCapNotifyCfg:
        if (!notify) {
          notify = where;
          notify_mult = PciRead32(bdf, at + pci::kCapNotifyMultiplier);
        }
        break;
      case pci::kCapIsrCfg:
        if (!isr) isr = where;
        break;
      case pci::kCapDeviceCfg:
        if (!devcfg) devcfg = where;
        break;
      default:
        break;
    }
  }
  msix = want_msix && msix_cap != 0 && msix_entries >= 2;
  return common && notify && isr;
}

void Dev::SetUpInterrupts(bool want_msix) {
  if (transport == kvmglue::kBootPci && want_msix && msix) {
    // Enable with the function masked, program entry v -> vector(v) on
    // LAPIC 0, unmask entries, then the function (as Linux does).
    const uint32_t ctl = msix_cap + pci::kMsixControl;
    PciWrite16(bdf, ctl,
               pci::kMsixControlEnable | pci::kMsixControlFunctionMask);
    const uint32_t n =
        msix_entries < kVectorsPerDevice ? msix_entries : kVectorsPerDevice;
    for (uint32_t v = 0; v < n; ++v) {
      const uint32_t e = msix_table + v * pci::kMsixEntrySize;
      mmio_write32(e + 0, kvmglue::kLapicBase);
      mmio_write32(e + 4, 0);
      mmio_write32(e + 8, vector(v));
      mmio_write32(e + 12, 0);  // unmask
    }
    PciWrite16(bdf, ctl, pci::kMsixControlEnable);
    return;
  }
  msix = false;
  if (transport == kvmglue::kBootPci) {
    const uint16_t cmd = PciRead16(bdf, pci::kCfgCommand);
    PciWrite16(bdf, pci::kCfgCommand, cmd & ~pci::kCommandIntxDisable);
  }
  ioapic_route_level(irq, vector(0));
}

// --- Queue -------------------------------------------------------------------
bool Queue::Init(Dev* dev, uint16_t index, uint16_t qsize, bool packed,
                 bool event_idx) {
  if (qsize == 0 || qsize > kMaxSize || (qsize & (qsize - 1))) return false;
  dev_ = dev;
  index_ = index;
  size = qsize;
  packed_ = packed;
  event_idx_ = event_idx;
  num_free_ = qsize;
  added_ = 0;
  last_used_ = 0;
  kicks = 0;
  bad_used = false;
  cb_enabled_ = false;
  if (!packed) {
    desc_ = static_cast<spec::SplitDesc*>(
        Alloc(spec::SplitDescTableSize(qsize), 16));
    avail_ = static_cast<volatile uint16_t*>(
        Alloc(spec::SplitAvailRingSize(qsize), 2));
    used_ = static_cast<volatile uint8_t*>(
        Alloc(spec::SplitUsedRingSize(qsize), 4));
    for (uint16_t i = 0; i < qsize; ++i)
      desc_[i].next = static_cast<uint16_t>(i + 1);
    free_head_ = 0;
    avail_idx_ = 0;
    desc_addr = Phys(desc_);
    driver_addr = Phys(avail_);
    device_addr = Phys(used_);
    // Interrupts off until asked for.
    avail_[0] = spec::kAvailFlagNoInterrupt;
    return true;
  }
  pdesc_ = static_cast<spec::PackedDesc*>(
      Alloc(spec::PackedDescRingSize(qsize), 16));
  driver_evt_ = static_cast<spec::PackedEventSuppress*>(Alloc(4, 4));
  device_evt_ = static_cast<spec::PackedEventSuppress*>(Alloc(4, 4));
  next_avail_ = 0;
  avail_wrap_ = true;
  used_wrap_ = true;
  num_free_ids_ = 0;
  for (uint16_t i = qsize; i > 0; --i) {
    free_ids_[num_free_ids_++] = static_cast<uint16_t>(i - 1);
    chain_len_[i - 1] = 0;
  }
  desc_addr = Phys(pdesc_);
  driver_addr = Phys(driver_evt_);
  device_addr = Phys(device_evt_);
  driver_evt_->flags = spec::kRingEventFlagsDisable;
  return true;
}

void Queue::PublishSplitHead(uint16_t head) {
  avail_[2 + avail_idx_ % size] = head;
  barrier();  // ring entry before idx (x86: stores are ordered)
  ++avail_idx_;
  avail_[1] = avail_idx_;
  ++added_;
}

int Queue::Add(const Buf* bufs, int n) {
  if (n <= 0 || num_free_ < n) return -1;
  if (!packed_) {
    const uint16_t head = free_head_;
    uint16_t i = head, last = head;
    for (int k = 0; k < n; ++k) {
      spec::SplitDesc& d = desc_[i];
      d.addr = bufs[k].addr;
      d.len = bufs[k].len;
      d.flags = static_cast<uint16_t>(
          (bufs[k].write ? spec::kDescFlagWrite : 0) |
          (bufs[k].indirect ? spec::kDescFlagIndirect : 0) |
          (k + 1 < n ? spec::kDescFlagNext : 0));
      last = i;
      i = d.next;
    }
    free_head_ = desc_[last].next;
    num_free_ = static_cast<uint16_t>(num_free_ - n);
    PublishSplitHead(head);
    return head;
  }
  if (num_free_ids_ == 0) return -1;
  const uint16_t id = free_ids_[--num_free_ids_];
  const uint16_t head = next_avail_;
  uint16_t head_flags = 0;
  for (int k = 0; k < n; ++k) {
    const uint16_t flags = static_cast<uint16_t>(
        (bufs[k].write ? spec::kDescFlagWrite : 0) |
        (bufs[k].indirect ? spec::kDescFlagIndirect : 0) |
        (k + 1 < n ? spec::kDescFlagNext : 0) |
        (avail_wrap_ ? spec::kDescFlagAvail : spec::kDescFlagUsed));
    volatile spec::PackedDesc& d = pdesc_[next_avail_];
    d.addr = bufs[k].addr;
    d.len = bufs[k].len;
    d.id = id;
    if (k == 0) {
      head_flags = flags;
    } else {
      d.flags = flags;
    }
    if (++next_avail_ == size) {
      next_avail_ = 0;
      avail_wrap_ = !avail_wrap_;
    }
  }
  chain_len_[id] = static_cast<uint16_t>(n);
  num_free_ = static_cast<uint16_t>(num_free_ - n);
  added_ = static_cast<uint16_t>(added_ + n);
  barrier();  // the rest of the chain before the head's flags
  pdesc_[head].flags = head_flags;
  return id;
}

int Queue::AddIndirect(const Buf* bufs, int n) {
  // Tables are never reused (the bump allocator never frees): fine for the
  // handful of requests the checks make.
  if (!packed_) {
    auto* t = static_cast<spec::SplitDesc*>(Alloc(16 * n, 16));
    for (int k = 0; k < n; ++k) {
      t[k].addr = bufs[k].addr;
      t[k].len = bufs[k].len;
      t[k].flags =
          static_cast<uint16_t>((bufs[k].write ? spec::kDescFlagWrite : 0) |
                                (k + 1 < n ? spec::kDescFlagNext : 0));
      t[k].next = static_cast<uint16_t>(k + 1 < n ? k + 1 : 0);
    }
    const Buf head{Phys(t), static_cast<uint32_t>(16 * n), false, true};
    return Add(&head, 1);
  }
  auto* t = static_cast<spec::PackedDesc*>(Alloc(16 * n, 16));
  for (int k = 0; k < n; ++k) {
    t[k].addr = bufs[k].addr;
    t[k].len = bufs[k].len;
    t[k].id = 0;
    t[k].flags = bufs[k].write ? spec::kDescFlagWrite : 0;
  }
  const Buf head{Phys(t), static_cast<uint32_t>(16 * n), false, true};
  return Add(&head, 1);
}

bool Queue::KickPrepare() {
  mb();  // publish before reading the device's suppression state
  bool need;
  if (!packed_) {
    const uint16_t new_idx = avail_idx_;
    const uint16_t old_idx = static_cast<uint16_t>(avail_idx_ - added_);
    if (event_idx_) {
      const uint16_t avail_event = *reinterpret_cast<volatile const uint16_t*>(
          used_ + spec::SplitAvailEventOffset(size));
      need = spec::NeedEvent(avail_event, new_idx, old_idx);
    } else {
      need = !(*reinterpret_cast<volatile const uint16_t*>(used_) &
               spec::kUsedFlagNoNotify);
    }
  } else {
    const uint16_t new_idx = next_avail_;
    const uint16_t old_idx = static_cast<uint16_t>(next_avail_ - added_);
    const uint16_t off_wrap = device_evt_->off_wrap;
    const uint16_t flags = device_evt_->flags & spec::kRingEventFlagsMask;
    if (flags != spec::kRingEventFlagsDesc) {
      need = flags != spec::kRingEventFlagsDisable;
    } else {
      uint16_t event = off_wrap & static_cast<uint16_t>(~spec::kEventWrapBit);
      const bool wrap = off_wrap & spec::kEventWrapBit;
      if (wrap != avail_wrap_) event = static_cast<uint16_t>(event - size);
      need = spec::NeedEvent(event, new_idx, old_idx);
    }
  }
  added_ = 0;
  return need;
}

bool Queue::HasUsed() const {
  if (!packed_) {
    return *reinterpret_cast<volatile const uint16_t*>(used_ + 2) != last_used_;
  }
  const uint16_t flags = pdesc_[last_used_].flags;
  const bool avail = flags & spec::kDescFlagAvail;
  const bool used = flags & spec::kDescFlagUsed;
  return avail == used && used == used_wrap_;
}

bool Queue::GetUsed(uint16_t* id, uint32_t* len) {
  if (!HasUsed()) return false;
  barrier();  // read the element after seeing it published
  if (!packed_) {
    const volatile uint8_t* elem = used_ + 4 + 8 * (last_used_ % size);
    const uint32_t head = *reinterpret_cast<volatile const uint32_t*>(elem);
    *len = *reinterpret_cast<volatile const uint32_t*>(elem + 4);
    ++last_used_;
    if (head >= size) {
      bad_used = true;
      return false;
    }
    *id = static_cast<uint16_t>(head);
    uint16_t i = *id, n = 1;
    while ((desc_[i].flags & spec::kDescFlagNext) && n < size) {
      i = desc_[i].next;
      ++n;
    }
    desc_[i].next = free_head_;
    free_head_ = *id;
    num_free_ = static_cast<uint16_t>(num_free_ + n);
    if (event_idx_ && cb_enabled_) {
      avail_[2 + size] = last_used_;  // used_event: interrupt for the next one
      mb();
    }
    return true;
  }
  volatile spec::PackedDesc& d = pdesc_[last_used_];
  const uint16_t bid = d.id;
  *len = d.len;
  if (bid >= size || chain_len_[bid] == 0) {
    bad_used = true;
    return false;
  }
  *id = bid;
  const uint16_t n = chain_len_[bid];
  chain_len_[bid] = 0;
  free_ids_[num_free_ids_++] = bid;
  num_free_ = static_cast<uint16_t>(num_free_ + n);
  last_used_ = static_cast<uint16_t>(last_used_ + n);
  if (last_used_ >= size) {
    last_used_ = static_cast<uint16_t>(last_used_ - size);
    used_wrap_ = !used_wrap_;
  }
  if (event_idx_ && cb_enabled_) {
    driver_evt_->off_wrap = static_cast<uint16_t>(
        last_used_ | (used_wrap_ ? spec::kEventWrapBit : 0));
    mb();
  }
  return true;
}

void Queue::EnableCb() {
  cb_enabled_ = true;
  if (!packed_) {
    if (event_idx_) {
      avail_[2 + size] = last_used_;
      avail_[0] = 0;
    } else {
      avail_[0] = 0;
    }
  } else if (event_idx_) {
    driver_evt_->off_wrap = static_cast<uint16_t>(
        last_used_ | (used_wrap_ ? spec::kEventWrapBit : 0));
    barrier();
    driver_evt_->flags = spec::kRingEventFlagsDesc;
  } else {
    driver_evt_->flags = spec::kRingEventFlagsEnable;
  }
  mb();
}

void Queue::DisableCb() {
  cb_enabled_ = false;
  if (!packed_) {
    avail_[0] = spec::kAvailFlagNoInterrupt;
    if (event_idx_) avail_[2 + size] = static_cast<uint16_t>(last_used_ - 1);
  } else {
    driver_evt_->flags = spec::kRingEventFlagsDisable;
  }
}

void Queue::PublishSplitLoop(uint32_t buf) {
  // 0 -> 1 -> 0 -> ...: a chain that never ends.
  desc_[0] = {buf, 16, spec::kDescFlagWrite | spec::kDescFlagNext, 1};
  desc_[1] = {buf, 16, spec::kDescFlagWrite | spec::kDescFlagNext, 0};
  PublishSplitHead(0);
}

void Queue::PublishPackedEndless(uint32_t buf) {
  // Every descriptor says "more follows": a chain longer than the ring.
  const uint16_t f = static_cast<uint16_t>(
      spec::kDescFlagWrite | spec::kDescFlagNext |
      (avail_wrap_ ? spec::kDescFlagAvail : spec::kDescFlagUsed));
  for (uint16_t i = 0; i < size; ++i) {
    pdesc_[i].addr = buf;
    pdesc_[i].len = 16;
    pdesc_[i].id = 0;
    if (i) pdesc_[i].flags = f;
  }
  barrier();
  pdesc_[0].flags = f;
  added_ = size;
}

// --- Bring-up ----------------------------------------------------------------
bool Negotiate(Dev& dev, uint64_t wanted) {
  if (!dev.Reset()) return false;
  dev.AddStatus(spec::kStatusAcknowledge);
  dev.AddStatus(spec::kStatusDriver);
  const uint64_t offered = dev.DeviceFeatures();
  if (!(offered & spec::Bit(spec::kFeatureVersion1))) {
    dev.AddStatus(spec::kStatusFailed);
    return false;
  }
  dev.features = wanted & offered;
  dev.WriteDriverFeatures(dev.features);
  dev.AddStatus(spec::kStatusFeaturesOk);
  if (!(dev.Status() & spec::kStatusFeaturesOk)) {
    dev.AddStatus(spec::kStatusFailed);
    return false;
  }
  if (dev.transport == kvmglue::kBootPci && dev.msix) {
    // vp_modern_config_vector(): vector 0 for configuration changes.
    mmio_write16(dev.common + pci::kCommonConfigMsixVector, 0);
    if (mmio_read16(dev.common + pci::kCommonConfigMsixVector) != 0)
      return false;
  }
  return true;
}

bool SetUpQueue(Dev& dev, uint16_t q, Queue& ring) {
  dev.SelectQueue(q);
  if (dev.QueueEnabled()) return false;
  const uint32_t max = dev.QueueMax();
  if (max == 0 || ring.size > max) return false;
  dev.ProgramQueue(q, ring.size, ring.desc_addr, ring.driver_addr,
                   ring.device_addr);
  if (dev.transport == kvmglue::kBootPci && dev.msix &&
      dev.QueueVector() != 1 + q) {
    return false;
  }
  dev.EnableQueue();
  return dev.QueueEnabled();
}

bool DriverOk(Dev& dev) {
  dev.AddStatus(spec::kStatusDriverOk);
  const uint8_t s = dev.Status();
  return (s & spec::kStatusDriverOk) && !(s & spec::kStatusDeviceNeedsReset);
}

}  // namespace guest
