// glue/kvm/guest/guest.cc — the virtio-kvm test guest.
//
// A freestanding 32-bit program (flat protected mode, no paging) that finds
// the devices the VMM lists in BootInfo (virtio-mmio: magic/version/ID at
// the given base; virtio-pci: a scan of bus 0 for vendor 0x1af4), brings
// each up as Linux does and exercises it, printing one line per check on
// the UART and reporting the number of failures on the exit port.
//
// Adding a device type: write a Test<Name>(Dev&) next to TestRng/TestBlk and
// add it to the switch in RunDevice().
//
// Runs at ~1.5M instructions/s under the nested KVM here, so it is small:
// rings of 16 entries, a handful of requests per check.
#include <cstdint>

#include "boot_info.h"
#include "guest/hw.h"
#include "guest/virtio_guest.h"
#include "virtio/blk_spec.h"
#include "virtio/console_spec.h"
#include "virtio/net_spec.h"
#include "virtio/spec.h"

// Byte loops through volatile pointers, so the compiler cannot turn them
// back into calls to themselves.
extern "C" {
void* memcpy(void* d, const void* s, size_t n) {
  volatile uint8_t* dp = static_cast<uint8_t*>(d);
  const volatile uint8_t* sp = static_cast<const uint8_t*>(s);
  while (n--) *dp++ = *sp++;
  return d;
}
void* memset(void* d, int c, size_t n) {
  volatile uint8_t* dp = static_cast<uint8_t*>(d);
  while (n--) *dp++ = static_cast<uint8_t>(c);
  return d;
}
int memcmp(const void* a, const void* b, size_t n) {
  const volatile uint8_t* x = static_cast<const uint8_t*>(a);
  const volatile uint8_t* y = static_cast<const uint8_t*>(b);
  for (; n; --n, ++x, ++y) {
    if (*x != *y) return *x < *y ? -1 : 1;
  }
  return 0;
}
extern char _end[];
void guest_main();
void isr_dispatch(uint32_t vector, uint32_t word1, uint32_t word2);
}

// --- Entry, stack and interrupt stubs ---------------------------------------------
asm(R"(
  .section .text.start, "ax"
  .globl _start
_start:
  cli
  movl $guest_stack_top, %esp
  call guest_main
1: cli
  hlt
  jmp 1b

  .text
  .align 16
  .globl isr_stubs
isr_stubs:
  .set vec, 0
  .rept 256
  .align 16
  pushl $vec
  jmp isr_common
  .set vec, vec + 1
  .endr

isr_common:
  pushal
  cld
  pushl 40(%esp)          /* the word above: eip, or an error code */
  pushl 40(%esp)          /* again: after the vector */
  pushl 40(%esp)          /* the vector */
  call isr_dispatch
  addl $12, %esp
  popal
  addl $4, %esp           /* the vector; now eip, cs, eflags */
  iret

  .bss
  .align 16
  .space 16384
guest_stack_top:
  .text
)");

namespace guest {

volatile uint32_t g_ticks = 0;

namespace {

using kvmglue::BootDevice;
using kvmglue::BootInfo;

// --- Allocation ---------------------------------------------------------------------
uint32_t g_heap = 0;
uint32_t g_heap_end = 0;

// --- Checks ------------------------------------------------------------------------------
uint32_t g_checks = 0;
uint32_t g_failures = 0;
const char* g_dev_name = "guest";
uint32_t g_flags = 0;

bool Check(bool ok, const char* what) {
  ++g_checks;
  if (!ok) ++g_failures;
  puts(ok ? "PASS " : "FAIL ");
  puts(g_dev_name);
  puts(": ");
  puts(what);
  putc('\n');
  return ok;
}
void Note(const char* what, uint32_t v) {
  puts("     ");
  puts(g_dev_name);
  puts(": ");
  puts(what);
  putc(' ');
  putdec(v);
  putc('\n');
}

bool Poll() { return g_flags & kvmglue::kFlagPoll; }

// --- IDT ----------------------------------------------------------------------------------
struct IdtGate {
  uint16_t offset_lo;
  uint16_t selector;
  uint8_t zero;
  uint8_t type;
  uint16_t offset_hi;
} __attribute__((packed));
IdtGate g_idt[256];

struct __attribute__((packed)) IdtPointer {
  uint16_t limit;
  uint32_t base;
};

extern "C" char isr_stubs[];

Dev g_devs[kvmglue::kMaxBootDevices];
uint32_t g_num_devs = 0;

constexpr uint32_t kTickCount = 10000000;

void SetUpIdt() {
  for (uint32_t v = 0; v < 256; ++v) {
    const uint32_t at = Phys(isr_stubs) + 16 * v;
    g_idt[v] = {static_cast<uint16_t>(at), kvmglue::kCodeSelector, 0, 0x8e,
                static_cast<uint16_t>(at >> 16)};
  }
  const IdtPointer p = {sizeof g_idt - 1, Phys(g_idt)};
  asm volatile("lidt %0" ::"m"(p));
  // The 8259s are not used: mask them (the LAPIC/IOAPIC deliver everything).
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  // LAPIC on (spurious vector 0xff), a tick for timeouts: the KVM
  // LAPIC timer counts at 1 GHz, so 10,000,000 at divide-by-1 is 10 ms.
  lapic_write(kLapicSvr, 0x100 | kVectorSpurious);
  lapic_write(kLapicTimerDiv, 0xb);
  lapic_write(kLapicLvtTimer, kLapicTimerPeriodic | kVectorTimer);
  lapic_write(kLapicTimerInit, kTickCount);
}

const char* const kExceptionNames[] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
    "#DF", "?",   "#TS", "#NP", "#SS", "#GP", "#PF", "?"};

}  // namespace

// --- DMA allocation ------------------------------------------------------------------------
void* Alloc(uint32_t bytes, uint32_t align) {
  g_heap = (g_heap + align - 1) & ~(align - 1);
  const uint32_t at = g_heap;
  g_heap += bytes;
  if (g_heap > g_heap_end) {
    puts("FATAL out of guest memory\n");
    exit_vm(0xdead);
  }
  // Never reused, and the VMM's memfd RAM starts zeroed: no memset needed.
  return reinterpret_cast<void*>(at);
}

// --- PCI probe -------------------------------------------------------------------------------
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
  if (!(PciRead16(bdf, pci::kCfgStatus) & pci::kStatusCapabilityList)) return false;
  for (uint32_t at = PciRead8(bdf, pci::kCfgCapabilityPointer) & 0xfc, n = 0;
       at != 0 && n < 48; at = PciRead8(bdf, at + pci::kCapNext) & 0xfc, ++n) {
    const uint8_t id = PciRead8(bdf, at);
    if (id == pci::kCapIdMsix) {
      msix_cap = at;
      msix_entries = (PciRead16(bdf, at + pci::kMsixControl) &
                      pci::kMsixControlTableSizeMask) + 1;
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
    PciWrite16(bdf, ctl, pci::kMsixControlEnable | pci::kMsixControlFunctionMask);
    const uint32_t n = msix_entries < kVectorsPerDevice ? msix_entries : kVectorsPerDevice;
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

// --- Queue ------------------------------------------------------------------------------------
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
    desc_ = static_cast<spec::SplitDesc*>(Alloc(spec::SplitDescTableSize(qsize), 16));
    avail_ = static_cast<volatile uint16_t*>(Alloc(spec::SplitAvailRingSize(qsize), 2));
    used_ = static_cast<volatile uint8_t*>(Alloc(spec::SplitUsedRingSize(qsize), 4));
    for (uint16_t i = 0; i < qsize; ++i) desc_[i].next = static_cast<uint16_t>(i + 1);
    free_head_ = 0;
    avail_idx_ = 0;
    desc_addr = Phys(desc_);
    driver_addr = Phys(avail_);
    device_addr = Phys(used_);
    // Interrupts off until asked for.
    avail_[0] = spec::kAvailFlagNoInterrupt;
    return true;
  }
  pdesc_ = static_cast<spec::PackedDesc*>(Alloc(spec::PackedDescRingSize(qsize), 16));
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
      d.flags = static_cast<uint16_t>((bufs[k].write ? spec::kDescFlagWrite : 0) |
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
      t[k].flags = static_cast<uint16_t>((bufs[k].write ? spec::kDescFlagWrite : 0) |
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
    driver_evt_->off_wrap =
        static_cast<uint16_t>(last_used_ | (used_wrap_ ? spec::kEventWrapBit : 0));
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
    driver_evt_->off_wrap =
        static_cast<uint16_t>(last_used_ | (used_wrap_ ? spec::kEventWrapBit : 0));
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

// --- Bring-up -------------------------------------------------------------------------------------
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
    if (mmio_read16(dev.common + pci::kCommonConfigMsixVector) != 0) return false;
  }
  return true;
}

bool SetUpQueue(Dev& dev, uint16_t q, Queue& ring) {
  dev.SelectQueue(q);
  if (dev.QueueEnabled()) return false;
  const uint32_t max = dev.QueueMax();
  if (max == 0 || ring.size > max) return false;
  dev.ProgramQueue(q, ring.size, ring.desc_addr, ring.driver_addr, ring.device_addr);
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

namespace {

// --- Helpers for the checks -----------------------------------------------------------------------
uint64_t RingFeatures() {
  uint64_t f = spec::Bit(spec::kFeatureVersion1);
  if (g_flags & kvmglue::kFlagPacked) f |= spec::Bit(spec::kFeatureRingPacked);
  if (!(g_flags & kvmglue::kFlagNoEventIdx)) f |= spec::Bit(spec::kFeatureEventIdx);
  return f;
}

bool Packed(const Dev& d) { return d.features & spec::Bit(spec::kFeatureRingPacked); }
bool EventIdx(const Dev& d) { return d.features & spec::Bit(spec::kFeatureEventIdx); }

// Bring-up with one queue of `size` entries.
bool BringUp(Dev& dev, Queue& q, uint64_t wanted, uint16_t size = 16) {
  if (!Negotiate(dev, wanted)) return false;
  if (!q.Init(&dev, 0, size, Packed(dev), EventIdx(dev))) return false;
  if (!SetUpQueue(dev, 0, q)) return false;
  if (!Poll()) q.EnableCb();
  return DriverOk(dev);
}

// Bring-up with queues 0..n-1 of `size` entries each (all enabled before
// DRIVER_OK, as Linux does).
bool BringUpQueues(Dev& dev, Queue* qs, int n, uint64_t wanted, uint16_t size = 16) {
  if (!Negotiate(dev, wanted)) return false;
  for (int i = 0; i < n; ++i) {
    if (!qs[i].Init(&dev, static_cast<uint16_t>(i), size, Packed(dev), EventIdx(dev)) ||
        !SetUpQueue(dev, static_cast<uint16_t>(i), qs[i])) {
      return false;
    }
    if (!Poll()) qs[i].EnableCb();
  }
  return DriverOk(dev);
}

// Waits for a used buffer: sleeps in hlt until an interrupt (or the 10 ms
// tick) arrives. False after `ms` milliseconds.
bool WaitUsed(Queue& q, uint16_t* id, uint32_t* len, uint32_t ms = 3000) {
  const uint32_t start = g_ticks;
  for (;;) {
    if (q.GetUsed(id, len)) return true;
    if (q.bad_used) return false;
    cli();
    if (q.HasUsed()) {
      sti();
      continue;
    }
    if (g_ticks - start > ms / 10) {
      sti();
      return false;
    }
    sti_hlt();
  }
}

bool WaitStatus(Dev& d, uint8_t bits, uint32_t ms = 2000) {
  const uint32_t start = g_ticks;
  while (!(d.Status() & bits)) {
    if (g_ticks - start > ms / 10) return false;
    sti_hlt();
  }
  return true;
}

bool AllZero(const uint8_t* p, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    if (p[i]) return false;
  }
  return true;
}

// --- virtio-rng ---------------------------------------------------------------------------------------
void TestRng(Dev& dev) {
  Queue q;
  if (!Check(BringUp(dev, q, RingFeatures()), "bring-up (reset, ACK, DRIVER, features, FEATURES_OK, queue, DRIVER_OK)")) {
    return;
  }
  Check(((g_flags & kvmglue::kFlagPacked) != 0) == Packed(dev),
        Packed(dev) ? "negotiated RING_PACKED" : "negotiated split ring");
  Check(((g_flags & kvmglue::kFlagNoEventIdx) == 0) == EventIdx(dev),
        EventIdx(dev) ? "negotiated EVENT_IDX" : "EVENT_IDX not negotiated");
  const uint32_t irqs_before = dev.queue_irqs;
  constexpr int kBufs = 3;
  constexpr uint32_t kLen = 64;
  uint8_t* bufs = static_cast<uint8_t*>(Alloc(kBufs * kLen));
  bool ok = true;
  uint32_t total = 0;
  for (int round = 0; round < 2 && ok; ++round) {
    for (int i = 0; i < kBufs; ++i) {
      const Buf b{Phys(bufs + i * kLen), kLen, true};
      ok &= q.Add(&b, 1) >= 0;
    }
    q.Kick();
    for (int i = 0; i < kBufs && ok; ++i) {
      uint16_t id;
      uint32_t len;
      ok &= WaitUsed(q, &id, &len);
      ok &= len == kLen;
      total += len;
    }
  }
  Check(ok && total == 2 * kBufs * kLen, "entropy requests completed (6 x 64 bytes)");
  bool distinct = true;
  for (int i = 0; i < kBufs; ++i) {
    distinct &= !AllZero(bufs + i * kLen, kLen);
    if (i) distinct &= memcmp(bufs, bufs + i * kLen, kLen) != 0;
  }
  Check(distinct, "entropy bytes are non-zero and differ between buffers");
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

// --- virtio-blk ---------------------------------------------------------------------------------------
struct BlkReq {
  virtio::blk::RequestHeader hdr;
  uint8_t status;
};

// Submits `n` requests at once (one kick), waits for all. Returns false if
// any did not complete.
bool BlkRun(Queue& q, BlkReq* reqs, const Buf* data, int n) {
  int ids[8];
  for (int i = 0; i < n; ++i) {
    Buf chain[3];
    int k = 0;
    chain[k++] = {Phys(&reqs[i].hdr), sizeof reqs[i].hdr, false};
    if (data[i].len) chain[k++] = data[i];
    reqs[i].status = 0xff;
    chain[k++] = {Phys(&reqs[i].status), 1, true};
    ids[i] = q.Add(chain, k);
    if (ids[i] < 0) return false;
  }
  q.Kick();
  for (int i = 0; i < n; ++i) {
    uint16_t id;
    uint32_t len;
    if (!WaitUsed(q, &id, &len)) return false;
  }
  return true;
}

BlkReq* NewReqs(int n) { return static_cast<BlkReq*>(Alloc(sizeof(BlkReq) * n, 16)); }

void SetReq(BlkReq& r, uint32_t type, uint64_t sector) {
  r.hdr.type = type;
  r.hdr.reserved = 0;
  r.hdr.sector = sector;
}

uint64_t BlkWanted() {
  using namespace virtio::blk;
  return RingFeatures() | spec::Bit(kFeatureFlush) | spec::Bit(kFeatureBlkSize) |
         spec::Bit(kFeatureSegMax) | spec::Bit(kFeatureSizeMax) |
         spec::Bit(kFeatureDiscard) | spec::Bit(kFeatureWriteZeroes) |
         spec::Bit(kFeatureRo) | spec::Bit(kFeatureMq) |
         spec::Bit(spec::kFeatureIndirectDesc);
}

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
             "bring-up (reset, ACK, DRIVER, features, FEATURES_OK, queues, DRIVER_OK)")) {
    return;
  }
  Check(((g_flags & kvmglue::kFlagPacked) != 0) == Packed(dev),
        Packed(dev) ? "negotiated RING_PACKED" : "negotiated split ring");
  const uint32_t irqs_before = dev.queue_irqs;
  const uint64_t capacity = dev.Config64(0);
  Note("capacity (sectors)", static_cast<uint32_t>(capacity));
  Check(capacity >= kvmglue::kBlkMinSectors, "capacity read from config space");
  const bool ro = dev.features & spec::Bit(kFeatureRo);
  Check(ro == dev.readonly, ro ? "device is read-only (RO offered)" : "device is writable");

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
      Check(BlkRun(q, reqs, &none, 1) && reqs[0].status == kStatusOk, "FLUSH OK");
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
    Check(dev.features & spec::Bit(kFeatureWriteZeroes), "WRITE_ZEROES offered");
    if (dev.features & spec::Bit(kFeatureWriteZeroes)) {
      DiscardWriteZeroes* seg =
          static_cast<DiscardWriteZeroes*>(Alloc(sizeof(DiscardWriteZeroes)));
      seg->sector = kvmglue::kBlkWriteZeroesSector;
      seg->num_sectors = kvmglue::kBlkWriteZeroesSectors;
      seg->flags = 0;
      SetReq(reqs[0], kTypeWriteZeroes, 0);
      const Buf d{Phys(seg), sizeof *seg, false};
      Check(BlkRun(q, reqs, &d, 1) && reqs[0].status == kStatusOk, "WRITE_ZEROES OK");
      SetReq(reqs[0], kTypeIn, kvmglue::kBlkWriteZeroesSector);
      memset(rbuf, 0xee, kSectorSize);
      const Buf r{Phys(rbuf), kSectorSize, true};
      Check(BlkRun(q, reqs, &r, 1) && reqs[0].status == kStatusOk &&
                AllZero(rbuf, kSectorSize),
            "written-zeroes sectors read back as zeros");
    }
    // An indirect descriptor table: [header][4 sectors][4 sectors][status].
    Check(dev.features & spec::Bit(spec::kFeatureIndirectDesc), "INDIRECT_DESC negotiated");
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
      const bool done = q.AddIndirect(t, 4) >= 0 && (q.Kick(), WaitUsed(q, &id, &len));
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

// --- virtio-net -----------------------------------------------------------------------------------------
// Frames looped through the VMM's loopback backend: what the guest sends on
// transmitq0 comes back on receiveq0, header and all.
constexpr uint32_t kNetHdr = sizeof(virtio::net::Header);
constexpr uint32_t kMrgBuf = 256;    // MRG_RXBUF: small buffers, merged
constexpr uint32_t kMaxFrame = 1514;

uint8_t NetByte(uint32_t frame, uint32_t i) {
  return static_cast<uint8_t>(frame * 53u + i * 13u + (i >> 7) + 1);
}

// One round: bring-up (with or without MRG_RXBUF), post receive buffers,
// transmit frames of four sizes in four descriptor layouts, receive them
// back and compare.
void NetRound(Dev& dev, bool mrg) {
  using namespace virtio::net;
  const uint64_t wanted = RingFeatures() | spec::Bit(kFeatureMac) |
                          spec::Bit(kFeatureStatus) |
                          (mrg ? spec::Bit(kFeatureMrgRxbuf) : 0);
  Queue qs[2];
  Queue& rx = qs[0];
  Queue& tx = qs[1];
  const char* up = mrg ? "bring-up with MRG_RXBUF (rx + tx queues)"
                       : "bring-up without MRG_RXBUF (rx + tx queues)";
  if (!Check(BringUpQueues(dev, qs, 2, wanted), up)) return;
  if (mrg && !(dev.features & spec::Bit(kFeatureMrgRxbuf))) {
    Check(false, "MRG_RXBUF offered");
    return;
  }
  const uint32_t irqs_before = dev.queue_irqs;
  uint8_t mac[6];
  for (uint32_t i = 0; i < 6; ++i) mac[i] = dev.Config8(i);
  Check(mac[0] == 0x52 && mac[1] == 0x54 && mac[5] == 0x56, "MAC read from config space");
  Check(dev.Config16(offsetof(Config, status)) & kStatusLinkUp, "link is up");

  // Receive buffers: MRG_RXBUF: 12 single buffers of 256 bytes (a frame
  // spans several); else 4 chains [header 12][frame 1514], Linux's "big
  // packets" layout.
  const int nrx = mrg ? 12 : 4;
  uint32_t rx_addr[16] = {};
  for (int i = 0; i < nrx; ++i) {
    int id;
    if (mrg) {
      const Buf b{Phys(Alloc(kMrgBuf)), kMrgBuf, true};
      id = rx.Add(&b, 1);
      rx_addr[id & 15] = b.addr;
    } else {
      uint8_t* p = static_cast<uint8_t*>(Alloc(kNetHdr + kMaxFrame));
      const Buf b[2] = {{Phys(p), kNetHdr, true}, {Phys(p + kNetHdr), kMaxFrame, true}};
      id = rx.Add(b, 2);
      rx_addr[id & 15] = Phys(p);
    }
    if (id < 0) {
      Check(false, "posting receive buffers");
      return;
    }
  }
  rx.Kick();

  // Transmit: [hdr+frame] in one descriptor; [hdr][frame];
  // [hdr][frame in 2]; [hdr][frame in 3].
  constexpr int kFrames = 4;
  const uint32_t sizes[kFrames] = {60, 200, 700, kMaxFrame};
  uint8_t* frames[kFrames];
  bool ok = true;
  for (int f = 0; f < kFrames; ++f) {
    const uint32_t n = sizes[f];
    uint8_t* p = static_cast<uint8_t*>(Alloc(kNetHdr + n));
    memset(p, 0, kNetHdr);  // no offloads, gso none
    uint8_t* fr = p + kNetHdr;
    for (uint32_t i = 0; i < 6; ++i) {
      fr[i] = 0xff;        // broadcast
      fr[6 + i] = mac[i];  // from us
    }
    fr[12] = 0x88;  // local experimental ethertype
    fr[13] = 0xb5;
    for (uint32_t i = 14; i < n; ++i) fr[i] = NetByte(f, i);
    frames[f] = fr;
    Buf b[4];
    int k = 0;
    if (f == 0) {
      b[k++] = {Phys(p), kNetHdr + n, false};
    } else {
      b[k++] = {Phys(p), kNetHdr, false};
      const uint32_t parts = static_cast<uint32_t>(f);
      uint32_t at = 0;
      for (uint32_t i = 0; i < parts; ++i) {
        const uint32_t len = i + 1 < parts ? n / parts : n - at;
        b[k++] = {Phys(fr + at), len, false};
        at += len;
      }
    }
    ok &= tx.Add(b, k) >= 0;
  }
  tx.Kick();
  for (int f = 0; f < kFrames && ok; ++f) {
    uint16_t id;
    uint32_t len;
    ok &= WaitUsed(tx, &id, &len);
  }
  Check(ok, "4 frames transmitted (60..1514 bytes, 1-4 descriptors each)");

  // Receive them back, in order.
  uint8_t* got = static_cast<uint8_t*>(Alloc(kMaxFrame + kNetHdr));
  bool same = ok, counts = true;
  for (int f = 0; f < kFrames && same; ++f) {
    uint16_t id;
    uint32_t len;
    if (!WaitUsed(rx, &id, &len)) {
      same = false;
      break;
    }
    const auto* hdr = reinterpret_cast<const Header*>(rx_addr[id & 15]);
    if (!mrg) {
      same &= len == kNetHdr + sizes[f] && hdr->gso_type == kGsoNone &&
              memcmp(reinterpret_cast<const uint8_t*>(hdr) + kNetHdr, frames[f],
                     sizes[f]) == 0;
      continue;
    }
    // MRG_RXBUF: num_buffers in the first header, the frame spread over them.
    const uint32_t nb = hdr->num_buffers;
    const uint32_t want_nb = (kNetHdr + sizes[f] + kMrgBuf - 1) / kMrgBuf;
    counts &= nb == want_nb;
    uint32_t have = 0;
    for (uint32_t b = 0; b < nb && same; ++b) {
      if (b > 0 && !WaitUsed(rx, &id, &len)) {
        same = false;
        break;
      }
      if (have + len > kNetHdr + kMaxFrame) {
        same = false;
        break;
      }
      memcpy(got + have, reinterpret_cast<const void*>(rx_addr[id & 15]), len);
      have += len;
    }
    same &= have == kNetHdr + sizes[f] &&
            memcmp(got + kNetHdr, frames[f], sizes[f]) == 0;
  }
  Check(same, mrg ? "4 frames received back byte for byte (merged buffers)"
                  : "4 frames received back byte for byte");
  if (mrg) Check(counts, "num_buffers matches the buffers each frame spans");
  if (!Poll()) {
    const uint32_t start = g_ticks;
    while (dev.queue_irqs == irqs_before && g_ticks - start < 100) sti_hlt();
    Check(dev.queue_irqs > irqs_before, "used-buffer interrupts delivered");
  }
  Check(!(dev.Status() & spec::kStatusDeviceNeedsReset), "device healthy");
  dev.Reset();
}

void TestNet(Dev& dev) {
  NetRound(dev, true);
  NetRound(dev, false);
}

// --- virtio-console -----------------------------------------------------------------------------------
// Output on transmitq0 (appears on the VMM's stdout with the stdio
// backend), input on receiveq0 (the test feeds stdin) echoed back.
uint32_t StrLen(const char* s) {
  uint32_t n = 0;
  while (s[n]) ++n;
  return n;
}

bool ConsoleSend(Queue& tx, const char* a, const char* b = nullptr) {
  Buf d[2];
  int k = 0;
  d[k++] = {Phys(a), StrLen(a), false};
  if (b) d[k++] = {Phys(b), StrLen(b), false};
  if (tx.Add(d, k) < 0) return false;
  tx.Kick();
  uint16_t id;
  uint32_t len;
  return WaitUsed(tx, &id, &len);
}

void TestConsole(Dev& dev) {
  using namespace virtio::console;
  const uint64_t wanted = RingFeatures() | spec::Bit(kFeatureSize) |
                          spec::Bit(kFeatureEmergWrite);
  Queue qs[2];
  Queue& rx = qs[0];
  Queue& tx = qs[1];
  if (!Check(BringUpQueues(dev, qs, 2, wanted),
             "bring-up (single port: receiveq0 + transmitq0)")) {
    return;
  }
  // Input buffer posted first: the device reads host input only into it.
  char* in = static_cast<char*>(Alloc(64));
  const Buf ib{Phys(in), 63, true};
  rx.Add(&ib, 1);
  rx.Kick();

  Check(ConsoleSend(tx, "console: hello from the virtio-console guest\n"),
        "output line transmitted");
  Check(ConsoleSend(tx, "console: multi-", "descriptor line\n"),
        "output line in a 2-descriptor chain transmitted");
  if (dev.features & spec::Bit(kFeatureEmergWrite)) {
    const char* e = "console: emergency write\n";
    for (const char* c = e; *c; ++c) {
      mmio_write32(dev.ConfigAddr(offsetof(Config, emerg_wr)), static_cast<uint8_t>(*c));
    }
    Check(true, "emergency write (emerg_wr) issued");
  }

  // Echo one line of input (up to 5 s for it to arrive).
  char* line = static_cast<char*>(Alloc(64));
  uint32_t have = 0;
  bool eol = false;
  const uint32_t start = g_ticks;
  while (!eol && have < 48 && g_ticks - start < 500) {
    uint16_t id;
    uint32_t len;
    if (!WaitUsed(rx, &id, &len, 500)) continue;
    for (uint32_t i = 0; i < len && have < 48; ++i) {
      line[have++] = in[i];
      if (in[i] == '\n') eol = true;
    }
    rx.Add(&ib, 1);
    rx.Kick();
  }
  line[have] = 0;
  Note("input bytes", have);
  if (Check(eol, "a line of input received")) {
    Check(ConsoleSend(tx, "console echo: ", line), "input echoed back");
  }
  Check(!(dev.Status() & spec::kStatusDeviceNeedsReset), "device healthy");
  dev.Reset();
}

// --- Hostile mode -------------------------------------------------------------------------------------
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
    mmio_write32(dev.common + pci::kCommonDeviceStatus, spec::kStatusAcknowledge);
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
    Check(BringUp(dev, q, HostileWanted(dev)), "hostile: bring-up for ring attack");
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
      Check(dev.config_irqs != cfg_irqs, "hostile: configuration-change interrupt for NEEDS_RESET");
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
    Check(failed_alone && live,
          "hostile: buffer outside RAM -> that request fails, device stays live");
    Check(live && GoodRequest(dev, q, Phys(scratch)),
          "hostile: device serves the next good request");
  }

  // 8. Recovery: a reset brings the device back.
  {
    Queue q;
    Check(BringUp(dev, q, HostileWanted(dev)) && GoodRequest(dev, q, Phys(scratch)),
          "hostile: reset + bring-up recovers the device");
  }
  dev.Reset();
}

// --- Discovery ---------------------------------------------------------------------------------------------
const char* DeviceName(uint32_t id) {
  switch (id) {
    case spec::kDeviceIdEntropy:
      return "rng";
    case spec::kDeviceIdBlock:
      return "blk";
    case spec::kDeviceIdNet:
      return "net";
    case spec::kDeviceIdConsole:
      return "console";
    default:
      return "unknown";
  }
}

bool ProbeMmio(Dev& d, const BootDevice& b) {
  d.base = b.addr;
  if (mmio_read32(d.base + mmio::kMagicValue) != mmio::kMagic) return false;
  if (mmio_read32(d.base + mmio::kVersion) != mmio::kVersion2) return false;
  d.device_id = mmio_read32(d.base + mmio::kDeviceId);
  return d.device_id != 0;
}

// Scans bus 0 for virtio functions, as a PCI core would, and checks the
// VMM's list against what is found.
uint32_t ScanPci() {
  uint32_t found = 0;
  for (uint32_t slot = 0; slot < 32; ++slot) {
    const uint32_t id = PciRead32(slot << 3, 0);
    if ((id & 0xffff) == pci::kVendorId && (id >> 16) >= pci::kDeviceIdBase) {
      ++found;
    }
  }
  return found;
}

void RunDevice(Dev& d) {
  switch (d.device_id) {
    case spec::kDeviceIdEntropy:
      TestRng(d);
      break;
    case spec::kDeviceIdBlock:
      TestBlk(d);
      break;
    case spec::kDeviceIdNet:
      TestNet(d);
      return;  // no hostile variant for net / console yet
    case spec::kDeviceIdConsole:
      TestConsole(d);
      return;
    default:
      puts("SKIP ");
      puts(g_dev_name);
      puts(": no guest test for this device type yet\n");
      return;
  }
  if (g_flags & kvmglue::kFlagHostile) TestHostile(d);
}

}  // namespace
}  // namespace guest

extern "C" void isr_dispatch(uint32_t vector, uint32_t word1, uint32_t word2) {
  using namespace guest;
  if (vector < 32) {
    puts("FATAL exception ");
    puts(vector < 16 ? kExceptionNames[vector] : "?");
    puts(" vector ");
    puthex(vector);
    puts(" error/eip ");
    puthex(word1);
    puts(" ");
    puthex(word2);
    putc('\n');
    exit_vm(0xdead0000u | vector);
  }
  if (vector == kVectorTimer) {
    g_ticks = g_ticks + 1;
    lapic_eoi();
    return;
  }
  if (vector == kVectorSpurious) return;  // no EOI for spurious
  const uint32_t rel = vector - kVectorDeviceBase;
  if (vector >= kVectorDeviceBase && rel / kVectorsPerDevice < g_num_devs) {
    g_devs[rel / kVectorsPerDevice].HandleInterrupt(rel % kVectorsPerDevice);
  }
  lapic_eoi();
}

extern "C" void guest_main() {
  using namespace guest;
  puts("guest: libvirtio virtio-kvm test guest\n");
  const auto* info = reinterpret_cast<const kvmglue::BootInfo*>(kvmglue::kBootInfoAddr);
  if (info->magic != kvmglue::kBootInfoMagic || info->version != kvmglue::kBootInfoVersion ||
      info->num_devices > kvmglue::kMaxBootDevices) {
    puts("FAIL guest: no valid BootInfo\n");
    exit_vm(1);
  }
  g_flags = info->flags;
  g_heap = Phys(_end);
  g_heap_end = info->ram_size;
  SetUpIdt();
  sti();

  uint32_t pci_listed = 0;
  for (uint32_t i = 0; i < info->num_devices; ++i) {
    const kvmglue::BootDevice& b = info->devices[i];
    Dev& d = g_devs[g_num_devs];
    d.index = g_num_devs;
    d.transport = b.transport;
    d.irq = b.irq;
    d.readonly = b.flags & kvmglue::kDeviceReadOnly;
    g_dev_name = "guest";
    bool ok;
    if (b.transport == kvmglue::kBootMmio) {
      ok = ProbeMmio(d, b);
    } else {
      ++pci_listed;
      ok = d.PciProbe(b, !(g_flags & kvmglue::kFlagIntx));
      if (ok) d.device_id = PciRead16(d.bdf, pci::kCfgDeviceId) - pci::kDeviceIdBase;
    }
    Check(ok, b.transport == kvmglue::kBootMmio ? "probe virtio-mmio device"
                                                : "probe virtio-pci function");
    if (!ok) continue;
    if (!Poll()) d.SetUpInterrupts(!(g_flags & kvmglue::kFlagIntx));
    ++g_num_devs;
  }
  if (pci_listed) {
    g_dev_name = "guest";
    Check(ScanPci() == pci_listed, "PCI bus scan finds every listed function");
  }
  for (uint32_t i = 0; i < g_num_devs; ++i) {
    Dev& d = g_devs[i];
    g_dev_name = DeviceName(d.device_id);
    puts("---- ");
    puts(g_dev_name);
    puts(d.transport == kvmglue::kBootMmio ? " (virtio-mmio @" : " (virtio-pci BAR0 @");
    puthex(d.transport == kvmglue::kBootMmio ? d.base : d.bar);
    puts(d.transport == kvmglue::kBootPci && d.msix ? ", MSI-X" : "");
    if (!Poll() && !(d.transport == kvmglue::kBootPci && d.msix)) {
      puts(", irq ");
      putdec(d.irq);
    }
    puts(Poll() ? ", polling)\n" : ")\n");
    RunDevice(d);
  }
  g_dev_name = "guest";
  puts("guest: ");
  putdec(g_checks);
  puts(" checks, ");
  putdec(g_failures);
  puts(" failed (");
  putdec(g_ticks);
  puts(" timer ticks)\n");
  exit_vm(g_failures);
}
