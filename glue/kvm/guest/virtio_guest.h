// glue/kvm/guest/virtio_guest.h — a small freestanding virtio driver:
// the virtio-mmio and virtio-pci (modern) transports, split and packed
// driver-side virtqueues with EVENT_IDX / event suppression, and the bring-up
// sequence of Linux's virtio_mmio.c / virtio_pci_modern.c + virtio.c.
//
// It mirrors the host-side test harness (tests/harness: MmioDriver,
// PciDriver, SplitDriver, PackedDriver) step for step, and uses the
// library's own freestanding headers for everything ring-related
// (virtio/spec.h: status/feature bits, descriptor layouts, NeedEvent).
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_GUEST_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_GUEST_H_

#include <cstdint>

#include "boot_info.h"
#include "guest/hw.h"
#include "guest/virtio_regs.h"
#include "virtio/spec.h"

namespace guest {

namespace spec = virtio::spec;

// --- DMA memory: a bump allocator above the image -----------------------------------
void* Alloc(uint32_t bytes, uint32_t align = 16);
inline uint32_t Phys(const volatile void* p) {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p));
}

// --- PCI configuration mechanism #1 -------------------------------------------------
inline void PciSelect(uint32_t bdf, uint32_t off) {
  outl(kvmglue::kPciConfigAddressPort, 0x80000000u | (bdf << 8) | (off & 0xfc));
}
inline uint32_t PciRead32(uint32_t bdf, uint32_t off) {
  PciSelect(bdf, off);
  return inl(kvmglue::kPciConfigDataPort);
}
inline uint16_t PciRead16(uint32_t bdf, uint32_t off) {
  PciSelect(bdf, off);
  return inw(static_cast<uint16_t>(kvmglue::kPciConfigDataPort + (off & 2)));
}
inline uint8_t PciRead8(uint32_t bdf, uint32_t off) {
  PciSelect(bdf, off);
  return inb(static_cast<uint16_t>(kvmglue::kPciConfigDataPort + (off & 3)));
}
inline void PciWrite32(uint32_t bdf, uint32_t off, uint32_t v) {
  PciSelect(bdf, off);
  outl(kvmglue::kPciConfigDataPort, v);
}
inline void PciWrite16(uint32_t bdf, uint32_t off, uint16_t v) {
  PciSelect(bdf, off);
  outw(static_cast<uint16_t>(kvmglue::kPciConfigDataPort + (off & 2)), v);
}

// --- A virtio device, either transport -------------------------------------------------
struct Dev {
  uint32_t transport = 0;  // kvmglue::kBootMmio / kBootPci
  uint32_t device_id = 0;
  uint32_t index = 0;  // slot number: selects the interrupt vectors
  uint32_t irq = 0;    // IOAPIC pin (mmio line / INTx)
  bool readonly = false;
  bool msix = false;
  // virtio-mmio
  uint32_t base = 0;
  // virtio-pci
  uint32_t bdf = 0;
  uint32_t bar = 0, bar_size = 0;
  uint32_t common = 0, isr = 0, devcfg = 0, notify = 0, notify_mult = 0;
  uint32_t msix_cap = 0, msix_table = 0, msix_entries = 0;
  // Interrupt counters (written by the ISR).
  volatile uint32_t queue_irqs = 0;
  volatile uint32_t config_irqs = 0;
  volatile uint32_t spurious_irqs = 0;
  uint64_t features = 0;  // negotiated

  uint8_t vector(uint32_t slot) const {
    return static_cast<uint8_t>(kVectorDeviceBase + index * kVectorsPerDevice + slot);
  }

  // ---- common registers ----
  uint8_t Status() const {
    return transport == kvmglue::kBootMmio
               ? static_cast<uint8_t>(mmio_read32(base + mmio::kStatus))
               : mmio_read8(common + pci::kCommonDeviceStatus);
  }
  void SetStatus(uint8_t s) const {
    if (transport == kvmglue::kBootMmio) {
      mmio_write32(base + mmio::kStatus, s);
    } else {
      mmio_write8(common + pci::kCommonDeviceStatus, s);
    }
  }
  // virtio_add_status(): read-modify-write.
  void AddStatus(uint8_t bit) const { SetStatus(static_cast<uint8_t>(Status() | bit)); }
  bool Reset() const {
    SetStatus(0);
    for (int i = 0; i < 1000; ++i) {
      if (Status() == 0) return true;
    }
    return false;
  }
  uint64_t DeviceFeatures() const {
    uint64_t f;
    if (transport == kvmglue::kBootMmio) {
      mmio_write32(base + mmio::kDeviceFeaturesSel, 1);
      f = uint64_t{mmio_read32(base + mmio::kDeviceFeatures)} << 32;
      mmio_write32(base + mmio::kDeviceFeaturesSel, 0);
      f |= mmio_read32(base + mmio::kDeviceFeatures);
    } else {
      mmio_write32(common + pci::kCommonDeviceFeatureSelect, 1);
      f = uint64_t{mmio_read32(common + pci::kCommonDeviceFeature)} << 32;
      mmio_write32(common + pci::kCommonDeviceFeatureSelect, 0);
      f |= mmio_read32(common + pci::kCommonDeviceFeature);
    }
    return f;
  }
  void WriteDriverFeatures(uint64_t f) const {
    const uint32_t sel = transport == kvmglue::kBootMmio
                             ? base + mmio::kDriverFeaturesSel
                             : common + pci::kCommonDriverFeatureSelect;
    const uint32_t val = transport == kvmglue::kBootMmio
                             ? base + mmio::kDriverFeatures
                             : common + pci::kCommonDriverFeature;
    mmio_write32(sel, 1);
    mmio_write32(val, static_cast<uint32_t>(f >> 32));
    mmio_write32(sel, 0);
    mmio_write32(val, static_cast<uint32_t>(f));
  }
  void SelectQueue(uint16_t q) const {
    if (transport == kvmglue::kBootMmio) {
      mmio_write32(base + mmio::kQueueSel, q);
    } else {
      mmio_write16(common + pci::kCommonQueueSelect, q);
    }
  }
  // After SelectQueue. 0: no such queue.
  uint32_t QueueMax() const {
    return transport == kvmglue::kBootMmio
               ? mmio_read32(base + mmio::kQueueNumMax)
               : mmio_read16(common + pci::kCommonQueueSize);
  }
  bool QueueEnabled() const {
    return transport == kvmglue::kBootMmio
               ? mmio_read32(base + mmio::kQueueReady) != 0
               : mmio_read16(common + pci::kCommonQueueEnable) != 0;
  }
  // After SelectQueue: size, vector (pci), ring addresses.
  void ProgramQueue(uint16_t q, uint32_t size, uint32_t desc, uint32_t drv,
                    uint32_t devring) const {
    if (transport == kvmglue::kBootMmio) {
      mmio_write32(base + mmio::kQueueNum, size);
      mmio_write32(base + mmio::kQueueDescLow, desc);
      mmio_write32(base + mmio::kQueueDescHigh, 0);
      mmio_write32(base + mmio::kQueueDriverLow, drv);
      mmio_write32(base + mmio::kQueueDriverHigh, 0);
      mmio_write32(base + mmio::kQueueDeviceLow, devring);
      mmio_write32(base + mmio::kQueueDeviceHigh, 0);
      return;
    }
    mmio_write16(common + pci::kCommonQueueSize, static_cast<uint16_t>(size));
    if (msix) {
      mmio_write16(common + pci::kCommonQueueMsixVector,
                   static_cast<uint16_t>(1 + q));
    }
    mmio_write32(common + pci::kCommonQueueDesc, desc);
    mmio_write32(common + pci::kCommonQueueDesc + 4, 0);
    mmio_write32(common + pci::kCommonQueueDriver, drv);
    mmio_write32(common + pci::kCommonQueueDriver + 4, 0);
    mmio_write32(common + pci::kCommonQueueDevice, devring);
    mmio_write32(common + pci::kCommonQueueDevice + 4, 0);
  }
  uint16_t QueueVector() const { return mmio_read16(common + pci::kCommonQueueMsixVector); }
  void EnableQueue() const {
    if (transport == kvmglue::kBootMmio) {
      mmio_write32(base + mmio::kQueueReady, 1);
    } else {
      mmio_write16(common + pci::kCommonQueueEnable, 1);
    }
  }
  // vm_notify() / vp_notify(): 32-bit QueueNotify write, or a 16-bit write
  // of the queue index to its notify address (what the ioeventfds match).
  void Notify(uint16_t q) const {
    if (transport == kvmglue::kBootMmio) {
      mmio_write32(base + mmio::kQueueNotify, q);
    } else {
      mmio_write16(notify + q * notify_mult, q);
    }
  }
  uint32_t ConfigGeneration() const {
    return transport == kvmglue::kBootMmio
               ? mmio_read32(base + mmio::kConfigGeneration)
               : mmio_read8(common + pci::kCommonConfigGeneration);
  }
  uint32_t ConfigAddr(uint32_t off) const {
    return (transport == kvmglue::kBootMmio ? base + mmio::kConfig : devcfg) + off;
  }
  uint32_t Config32(uint32_t off) const { return mmio_read32(ConfigAddr(off)); }
  uint8_t Config8(uint32_t off) const { return mmio_read8(ConfigAddr(off)); }
  uint16_t Config16(uint32_t off) const { return mmio_read16(ConfigAddr(off)); }
  // A 64-bit field as two 32-bit reads inside the generation loop.
  uint64_t Config64(uint32_t off) const {
    for (;;) {
      const uint32_t g = ConfigGeneration();
      const uint64_t v = Config32(off) | (uint64_t{Config32(off + 4)} << 32);
      if (ConfigGeneration() == g) return v;
    }
  }

  // Called from the ISR for vector(slot): acknowledge and count.
  void HandleInterrupt(uint32_t slot) {
    uint32_t causes;
    if (transport == kvmglue::kBootMmio) {
      causes = mmio_read32(base + mmio::kInterruptStatus);
      if (causes) mmio_write32(base + mmio::kInterruptAck, causes);
    } else if (!msix) {
      causes = mmio_read8(isr);  // reading clears it and drops INTx
    } else {
      causes = slot == 0 ? 2u : 1u;
    }
    if (causes & 1) queue_irqs = queue_irqs + 1;
    if (causes & 2) config_irqs = config_irqs + 1;
    if (!causes) spurious_irqs = spurious_irqs + 1;
  }

  // Linux-style probe of a virtio-pci function: capabilities, BAR sizing,
  // memory + bus master, MSI-X (or INTx). False if it is not usable.
  bool PciProbe(const kvmglue::BootDevice& boot, bool want_msix);
  // Interrupt routing for this device (IOAPIC line or MSI-X entries).
  void SetUpInterrupts(bool want_msix);
};

// --- Driver-side virtqueue (split or packed) -------------------------------------------
struct Buf {
  uint32_t addr;
  uint32_t len;
  bool write;  // device-writable
  bool indirect = false;  // addr/len is an indirect descriptor table
};

class Queue {
 public:
  static constexpr uint16_t kMaxSize = 64;

  bool Init(Dev* dev, uint16_t index, uint16_t size, bool packed, bool event_idx);

  // Adds one chain; returns its id, or -1 if the ring is full.
  int Add(const Buf* bufs, int n);
  // Adds the chain as one INDIRECT descriptor pointing at a table of `n`
  // (VIRTIO_F_INDIRECT_DESC must be negotiated).
  int AddIndirect(const Buf* bufs, int n);
  // After Add()s: notify the device if it asked (EVENT_IDX / flags).
  void Kick() {
    if (KickPrepare()) {
      dev_->Notify(index_);
      ++kicks;
    }
  }
  bool KickPrepare();
  bool GetUsed(uint16_t* id, uint32_t* len);
  bool HasUsed() const;
  // Ask for used-buffer interrupts (EVENT_IDX: for the next one).
  void EnableCb();
  void DisableCb();

  // Hostile mode: publish malformed chains.
  void PublishSplitLoop(uint32_t buf);
  void PublishPackedEndless(uint32_t buf);

  uint32_t desc_addr = 0, driver_addr = 0, device_addr = 0;
  uint16_t size = 0;
  uint32_t kicks = 0;
  bool bad_used = false;  // the device returned an id we never gave it

 private:
  void PublishSplitHead(uint16_t head);

  Dev* dev_ = nullptr;
  uint16_t index_ = 0;
  bool packed_ = false;
  bool event_idx_ = false;
  bool cb_enabled_ = false;
  uint16_t num_free_ = 0;
  uint16_t added_ = 0;
  uint16_t last_used_ = 0;
  // split
  spec::SplitDesc* desc_ = nullptr;
  volatile uint16_t* avail_ = nullptr;  // flags, idx, ring[size], used_event
  volatile uint8_t* used_ = nullptr;    // flags, idx, ring[size], avail_event
  uint16_t free_head_ = 0;
  uint16_t avail_idx_ = 0;
  // packed
  volatile spec::PackedDesc* pdesc_ = nullptr;
  volatile spec::PackedEventSuppress* driver_evt_ = nullptr;
  volatile spec::PackedEventSuppress* device_evt_ = nullptr;
  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  bool used_wrap_ = true;
  uint16_t chain_len_[kMaxSize] = {};
  uint16_t free_ids_[kMaxSize] = {};
  uint16_t num_free_ids_ = 0;
};

// Linux's bring-up up to FEATURES_OK: reset, ACKNOWLEDGE, DRIVER, features
// (wanted & offered), FEATURES_OK and re-check. Returns false (and sets
// FAILED) if the device refuses.
bool Negotiate(Dev& dev, uint64_t wanted);
// Sets up queue `q` on `ring` (already Init()ed) and enables it.
bool SetUpQueue(Dev& dev, uint16_t q, Queue& ring);
// DRIVER_OK, and check the device is live.
bool DriverOk(Dev& dev);

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_GUEST_H_
