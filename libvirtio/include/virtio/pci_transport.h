// virtio/pci_transport.h — the virtio-pci modern transport (VIRTIO 1.2
// §4.1), without the legacy interface.
//
// PciTransport turns a DeviceCore-derived device into a PCI type-0 function
// as a guest's virtio_pci_modern driver expects it. The glue forwards the
// guest's configuration-space accesses (ConfigRead/ConfigWrite, from its PCI
// host bridge emulation or Xen's ioreq PCI config requests) and memory
// accesses that decode to the function's BAR (BarRead/BarWrite, offsets
// relative to bar_address(); decode only while memory_enabled()). The
// device's Interrupt must be a PciInterrupt, which this transport programs.
//
// What the guest sees:
//   * Header: vendor 0x1af4, device 0x1040 + virtio device ID, revision 1
//     (§4.1.2: modern-only), subsystem 0x1af4:0x1100 by default (QEMU's, so
//     guest drivers matching on it, e.g. virtio-win, bind), class code per
//     device type as QEMU assigns them (PciClassCode), header type 0,
//     interrupt pin INTA, writable interrupt line. Command register: memory
//     space, bus master and INTx disable are writable (no I/O BAR, so I/O
//     space is hardwired 0). Status: capabilities list, and Interrupt Status
//     mirroring the INTx request.
//   * BAR0/BAR1: one 64-bit memory BAR. BAR0 rather than QEMU's BAR4 keeps
//     the whole function in one BAR (QEMU puts MSI-X in BAR1): one mapping
//     for the glue to decode, and the same layout cloud-hypervisor and
//     crosvm use. Not prefetchable by default: ISR reads have side effects
//     and the PCI spec keeps MSI-X tables out of prefetchable space. Standard
//     sizing: write all-ones, read back ~(size-1) | type bits.
//   * BAR layout, one 4 KiB page (or more) per region so a glue can treat
//     pages differently (e.g. ioeventfd on the notify page only):
//       0x0000 common configuration (0x3c bytes)
//       0x1000 ISR status (1 byte)
//       0x2000 device-specific configuration (if the device has one)
//       next   notifications: queue q at q * 4 (queue_notify_off = q,
//              notify_off_multiplier = 4 — every queue its own address, so a
//              glue can register one ioeventfd per queue, and 4 leaves room
//              for a 32-bit VIRTIO_F_NOTIFICATION_DATA write)
//       next   MSI-X table (num_queues + 1 entries, at most 2048)
//       next   MSI-X PBA
//     layout() gives the offsets; NotifyAddress(q) the queue's notify offset.
//   * Capability list at 0x40: virtio COMMON, ISR, DEVICE, NOTIFY, PCI_CFG
//     (§4.1.4.9 access window into the BAR) and MSI-X.
//
// Guest mistakes — a wrong-sized or misaligned access, a write to a
// read-only register, an access outside any register — are ignored (reads
// return 0) with a rate-limited log line, and never change state. Accesses
// follow §4.1.3.1: each common configuration field with its natural width,
// 64-bit fields as two 32-bit halves or one aligned 64-bit access; device
// configuration with any naturally aligned 1/2/4/8-byte access; MSI-X table
// and PBA with aligned 4 or 8 bytes (PCI 3.0 §6.8.2); configuration space
// with naturally aligned 1/2/4 bytes. Space 0x100..0xfff reads as 0 (no
// extended capabilities).
//
// The configuration space itself — header, BAR sizing and placement,
// capability list, MSI-X capability registers — is a PciConfigSpace
// (virtio/pci_config_space.h); this file adds the virtio parts: the virtio
// capabilities, common configuration, notifications, ISR, device
// configuration and the PCI_CFG window, and routes accesses to them.
//
// Threads: register accesses must be serialised by the glue (one vCPU at a
// time per function, e.g. a per-device mutex). Queue threads may signal the
// PciInterrupt concurrently; a kick may come from BarWrite or from an
// ioeventfd registered at NotifyAddress(q) that calls device.Notify(q).
//
// Example (a glue's MMIO exit handler):
//   using Dev = virtio::RngDevice<Traits>;      // Traits::Interrupt is a
//   Dev dev(memory, irq, {});                   // PciInterrupt<Sink>
//   virtio::PciTransport<Dev> pci(dev);
//   // config-space exit:  value = pci.ConfigRead(reg, 4);
//   // MMIO exit at gpa:
//   if (pci.memory_enabled() && gpa - pci.bar_address() < pci.bar_size())
//     pci.BarWrite(gpa - pci.bar_address(), len, value);
#ifndef VIRTIO_PCI_TRANSPORT_H_
#define VIRTIO_PCI_TRANSPORT_H_

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_format.h"
#include "virtio/log.h"
#include "virtio/pci_config_space.h"
#include "virtio/pci_interrupt.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio {

namespace pci {

inline constexpr uint16_t kVendorId = 0x1af4;      // Red Hat, Inc. (virtio)
inline constexpr uint16_t kDeviceIdBase = 0x1040;  // + virtio device ID
inline constexpr uint8_t kRevision = 1;            // modern-only (§4.1.2.1)
inline constexpr uint16_t kSubsystemIdQemu = 0x1100;

// struct virtio_pci_cap (§4.1.4) and its cfg_type values.
enum CfgType : uint8_t {
  kCapCommonCfg = 1,
  kCapNotifyCfg = 2,
  kCapIsrCfg = 3,
  kCapDeviceCfg = 4,
  kCapPciCfg = 5,
};
// kCapVndr and kCapNext, the generic capability header, are in
// virtio/pci_config_space.h.
inline constexpr uint32_t kCapLen = 2;
inline constexpr uint32_t kCapCfgType = 3;
inline constexpr uint32_t kCapBar = 4;
inline constexpr uint32_t kCapId = 5;
inline constexpr uint32_t kCapOffset = 8;
inline constexpr uint32_t kCapLength = 12;
inline constexpr uint32_t kCapSize = 16;
// virtio_pci_notify_cap: + notify_off_multiplier; virtio_pci_cfg_cap: +
// pci_cfg_data.
inline constexpr uint32_t kCapNotifyMultiplier = 16;
inline constexpr uint32_t kCapPciCfgData = 16;
inline constexpr uint32_t kCapNotifySize = 20;
inline constexpr uint32_t kCapPciCfgSize = 20;

// Where this transport puts its capabilities in configuration space.
inline constexpr uint32_t kCapCommonAt = 0x40;
inline constexpr uint32_t kCapIsrAt = 0x50;
inline constexpr uint32_t kCapDeviceAt = 0x60;
inline constexpr uint32_t kCapNotifyAt = 0x70;
inline constexpr uint32_t kCapPciCfgAt = 0x84;
inline constexpr uint32_t kCapMsixAt = 0x98;

// struct virtio_pci_common_cfg (§4.1.4.3), including the 1.2 additions.
inline constexpr uint32_t kCommonDeviceFeatureSelect = 0x00;
inline constexpr uint32_t kCommonDeviceFeature = 0x04;
inline constexpr uint32_t kCommonDriverFeatureSelect = 0x08;
inline constexpr uint32_t kCommonDriverFeature = 0x0c;
inline constexpr uint32_t kCommonConfigMsixVector = 0x10;
inline constexpr uint32_t kCommonNumQueues = 0x12;
inline constexpr uint32_t kCommonDeviceStatus = 0x14;
inline constexpr uint32_t kCommonConfigGeneration = 0x15;
inline constexpr uint32_t kCommonQueueSelect = 0x16;
inline constexpr uint32_t kCommonQueueSize = 0x18;
inline constexpr uint32_t kCommonQueueMsixVector = 0x1a;
inline constexpr uint32_t kCommonQueueEnable = 0x1c;
inline constexpr uint32_t kCommonQueueNotifyOff = 0x1e;
inline constexpr uint32_t kCommonQueueDesc = 0x20;
inline constexpr uint32_t kCommonQueueDriver = 0x28;
inline constexpr uint32_t kCommonQueueDevice = 0x30;
inline constexpr uint32_t kCommonQueueNotifyData = 0x38;
inline constexpr uint32_t kCommonQueueReset = 0x3a;
inline constexpr uint32_t kCommonCfgSize = 0x3c;

inline constexpr uint32_t kNotifyOffMultiplier = 4;
inline constexpr uint64_t kBarPage = 4096;

// The class code QEMU gives each device type (base << 16 | sub << 8 |
// prog-if), so guests classify our devices as they do QEMU's. Types without
// a natural class get QEMU's PCI_CLASS_OTHERS (0x00ff00).
constexpr uint32_t PciClassCode(uint32_t virtio_device_id) {
  switch (virtio_device_id) {
    case spec::kDeviceIdNet:
      return 0x020000;  // network, ethernet
    case spec::kDeviceIdBlock:
    case 8:             // scsi
      return 0x010000;  // mass storage, SCSI
    case spec::kDeviceIdConsole:
    case 19:            // vsock
      return 0x078000;  // communication, other
    case 16:            // gpu
      return 0x038000;  // display, other
    case 18:            // input
      return 0x098000;  // input, other
    case 26:            // fs
      return 0x018000;  // mass storage, other
    default:
      return 0x00ff00;  // entropy, balloon, ...: QEMU's PCI_CLASS_OTHERS
  }
}

// Byte offsets of the regions in the BAR; see the header comment.
struct BarLayout {
  uint64_t common = 0;
  uint64_t isr = 0;
  uint64_t device = 0;
  uint32_t device_size = 0;  // 0: no device-specific configuration
  uint64_t notify = 0;
  uint32_t notify_size = 0;
  uint64_t msix_table = 0;
  uint32_t msix_table_size = 0;
  uint64_t msix_pba = 0;
  uint32_t msix_pba_size = 0;
  uint64_t bar_size = 0;  // a power of two
};

}  // namespace pci

// Identity and placement choices a VMM may override.
struct PciTransportOptions {
  uint16_t subsystem_vendor_id = pci::kVendorId;
  uint16_t subsystem_id = pci::kSubsystemIdQemu;
  // Default: pci::PciClassCode(device id).
  std::optional<uint32_t> class_code;
  bool bar_prefetchable = false;
  // Initial BAR address (0 = left for firmware to assign). Kept across
  // function resets, as a VMM that pins it expects.
  uint64_t bar_address = 0;
  uint8_t interrupt_line = 0;
};

namespace internal {
template <typename T>
struct IsPciInterrupt : std::false_type {};
template <typename S>
struct IsPciInterrupt<PciInterrupt<S>> : std::true_type {};
}  // namespace internal

// What PciTransport needs from a device: DeviceCore's public interface with
// a PciInterrupt as its Interrupt.
template <typename D>
concept PciDevice =
    internal::IsPciInterrupt<typename D::Interrupt>::value &&
    requires(D& d, const D& cd, uint16_t q, uint8_t status, uint64_t features,
             uint32_t offset, void* out, const void* in, uint32_t len) {
      { cd.device_id() } -> std::convertible_to<uint32_t>;
      { cd.name() } -> std::convertible_to<std::string_view>;
      { cd.num_queues() } -> std::same_as<uint16_t>;
      { cd.queue_max_size(q) } -> std::same_as<uint32_t>;
      { cd.device_features() } -> std::same_as<uint64_t>;
      { cd.driver_features() } -> std::same_as<uint64_t>;
      { d.SetDriverFeatures(features) } -> std::same_as<bool>;
      { cd.status() } -> std::same_as<uint8_t>;
      { d.SetStatus(status) } -> std::same_as<void>;
      { d.queue_config(q) } -> std::same_as<QueueConfig*>;
      { cd.queue_config_view(q) } -> std::same_as<const QueueConfig*>;
      { cd.queue_enabled(q) } -> std::same_as<bool>;
      { d.EnableQueue(q) } -> std::same_as<bool>;
      { d.Notify(q) } -> std::same_as<void>;
      { cd.config_size() } -> std::same_as<uint32_t>;
      { cd.config_generation() } -> std::same_as<uint32_t>;
      { d.ReadConfig(offset, out, len) } -> std::same_as<bool>;
      { d.WriteConfig(offset, in, len) } -> std::same_as<bool>;
      { d.interrupt() } -> std::same_as<typename D::Interrupt&>;
    };

template <PciDevice Device>
class PciTransport {
 public:
  using Interrupt = typename Device::Interrupt;

  // `device` (and its PciInterrupt, which must have been created for
  // device.num_queues() queues) must outlive the transport.
  explicit PciTransport(Device& device, PciTransportOptions options = {})
      : device_(device), irq_(device.interrupt()), options_(options) {
    if (irq_.num_queues() != device_.num_queues()) {
      Logf(LogLevel::kError,
           "%s: PciInterrupt made for %u queues, device has %u",
           device_.name(), irq_.num_queues(), device_.num_queues());
      std::abort();  // a VMM wiring bug; the guest would get wrong vectors
    }
    ComputeLayout();
    BuildConfigSpace();
    ResetDeviceState();
  }
  PciTransport(const PciTransport&) = delete;
  PciTransport& operator=(const PciTransport&) = delete;

  // --- Configuration space -------------------------------------------------
  // `size` is 1, 2 or 4 and `offset` aligned to it, below 4096.
  uint32_t ConfigRead(uint32_t offset, uint32_t size) {
    if (!PciConfigSpace::AccessOk(offset, size)) {
      GuestError("config read of %u bytes at 0x%x: bad size or alignment",
                 size, offset);
      return 0;
    }
    if (offset >= pci::kConfigSpaceSize) return 0;  // no extended caps
    if (Overlaps(offset, size, pci::kCapPciCfgAt + pci::kCapPciCfgData, 4)) {
      WindowRead();
    }
    return config_.Read(offset, size, irq_.intx_pending());
  }

  void ConfigWrite(uint32_t offset, uint32_t size, uint32_t value) {
    if (!PciConfigSpace::AccessOk(offset, size)) {
      GuestError("config write of %u bytes at 0x%x: bad size or alignment",
                 size, offset);
      return;
    }
    if (offset >= pci::kConfigSpaceSize) {
      GuestError("config write at 0x%x: no extended configuration space",
                 offset);
      return;
    }
    // Firmware sizes every BAR and writes status to clear error bits; only
    // other read-only registers are worth a log line.
    if (!config_.Write(offset, size, value)) {
      GuestError("config write to read-only register at 0x%x", offset);
    }
    if (Overlaps(offset, size, pci::kCfgCommand, 2)) {
      irq_.SetIntxDisabled(config_.intx_disabled());
      irq_.SetBusMaster(config_.bus_master_enabled());
    }
    if (Overlaps(offset, size, pci::kCapMsixAt + pci::kMsixControl, 2)) {
      irq_.SetMsixControl(config_.msix_enabled(),
                          config_.msix_function_masked());
    }
    if (Overlaps(offset, size, pci::kCapPciCfgAt + pci::kCapPciCfgData, 4)) {
      WindowWrite();
    }
  }

  // --- BAR0 ---------------------------------------------------------------------
  // `offset` is relative to the BAR; `size` 1, 2, 4 or 8 and aligned to it.
  uint64_t BarRead(uint64_t offset, uint32_t size) {
    if (!BarAccessOk(offset, size)) {
      GuestError("BAR read of %u bytes at 0x%x: bad size, alignment or range",
                 size, offset);
      return 0;
    }
    const uint32_t off32 = static_cast<uint32_t>(offset);  // BAR < 4 GiB
    if (In(offset, size, layout_.common, pci::kCommonCfgSize)) {
      return CommonRead(off32 - static_cast<uint32_t>(layout_.common), size);
    }
    if (In(offset, size, layout_.isr, 1)) return irq_.ReadIsr();
    if (In(offset, size, layout_.device, layout_.device_size)) {
      uint64_t v = 0;
      device_.ReadConfig(off32 - static_cast<uint32_t>(layout_.device), &v, size);
      return v;
    }
    if (In(offset, size, layout_.msix_table, layout_.msix_table_size)) {
      if (size < 4) return BadMsixAccess("read", offset, size);
      return irq_.TableRead(off32 - static_cast<uint32_t>(layout_.msix_table), size);
    }
    if (In(offset, size, layout_.msix_pba, layout_.msix_pba_size)) {
      if (size < 4) return BadMsixAccess("read", offset, size);
      return irq_.PbaRead(off32 - static_cast<uint32_t>(layout_.msix_pba), size);
    }
    if (In(offset, size, layout_.notify, layout_.notify_size)) {
      return 0;  // notify registers are write-only; reads are harmless
    }
    GuestError("BAR read of %u bytes at 0x%x: no register there", size, offset);
    return 0;
  }

  void BarWrite(uint64_t offset, uint32_t size, uint64_t value) {
    if (!BarAccessOk(offset, size)) {
      GuestError("BAR write of %u bytes at 0x%x: bad size, alignment or range",
                 size, offset);
      return;
    }
    if (size < 8) value &= (uint64_t{1} << (8 * size)) - 1;
    const uint32_t off32 = static_cast<uint32_t>(offset);
    if (In(offset, size, layout_.common, pci::kCommonCfgSize)) {
      CommonWrite(off32 - static_cast<uint32_t>(layout_.common), size, value);
    } else if (In(offset, size, layout_.notify, layout_.notify_size)) {
      NotifyWrite(off32 - static_cast<uint32_t>(layout_.notify), size);
    } else if (In(offset, size, layout_.device, layout_.device_size)) {
      device_.WriteConfig(off32 - static_cast<uint32_t>(layout_.device), &value,
                          size);
    } else if (In(offset, size, layout_.msix_table, layout_.msix_table_size)) {
      if (size < 4) {
        BadMsixAccess("write", offset, size);
        return;
      }
      irq_.TableWrite(off32 - static_cast<uint32_t>(layout_.msix_table), size,
                      value);
    } else if (In(offset, size, layout_.isr, 1) ||
               In(offset, size, layout_.msix_pba, layout_.msix_pba_size)) {
      GuestError("BAR write at 0x%x: read-only register", offset);
    } else {
      GuestError("BAR write of %u bytes at 0x%x: no register there", size,
                 offset);
    }
  }

  // --- Placement --------------------------------------------------------------
  uint64_t bar_size() const { return layout_.bar_size; }
  // As the guest or firmware programmed BAR0/BAR1 (or SetBarAddress). Only
  // meaningful while memory_enabled(): during sizing it holds the mask.
  uint64_t bar_address() const { return config_.bar_address(); }
  // For a VMM that places the BAR itself (no firmware). Rounded down to the
  // BAR's natural alignment, as the hardware would.
  void SetBarAddress(uint64_t address) { config_.SetBarAddress(address); }
  bool memory_enabled() const { return config_.memory_enabled(); }
  bool bus_master_enabled() const { return config_.bus_master_enabled(); }
  // Offset in the BAR of queue `queue`'s notification register (for an
  // ioeventfd at bar_address() + NotifyAddress(q), 2 or 4 bytes, any value).
  uint64_t NotifyAddress(uint16_t queue) const {
    return layout_.notify + uint64_t{queue} * pci::kNotifyOffMultiplier;
  }
  const pci::BarLayout& layout() const { return layout_; }

  // Function-level reset (system reset, FLR): the device is reset and the
  // configuration space returns to its power-on contents (BAR address back
  // to PciTransportOptions::bar_address or the last SetBarAddress).
  void Reset() {
    config_.Reset();
    irq_.ResetFunction();
    ResetDeviceState();
  }

  // Guest mistakes seen by the transport (logged or suppressed).
  uint64_t guest_errors() const { return guest_errors_.count(); }
  Device& device() { return device_; }

 private:
  template <typename... Args>
  void GuestError(const absl::FormatSpec<Args...>& format, const Args&... args) {
    if (guest_errors_.Allow()) {
      Logf(LogLevel::kWarning, "%s: pci: guest error: %s", device_.name(),
           absl::StrFormat(format, args...));
    }
  }

  uint64_t BadMsixAccess(const char* what, uint64_t offset, uint32_t size) {
    GuestError("MSI-X %s of %u bytes at 0x%x: only DWORD/QWORD allowed", what,
               size, offset);
    return 0;
  }

  // ---- layout and initial contents ----
  static uint64_t PageAlign(uint64_t v) {
    return (v + pci::kBarPage - 1) & ~(pci::kBarPage - 1);
  }

  void ComputeLayout() {
    pci::BarLayout& l = layout_;
    uint64_t at = 0;
    l.common = at;
    at += PageAlign(pci::kCommonCfgSize);
    l.isr = at;
    at += pci::kBarPage;
    l.device_size = device_.config_size();
    if (l.device_size != 0) {
      l.device = at;
      at += PageAlign(l.device_size);
    }
    l.notify = at;
    l.notify_size = std::max<uint32_t>(device_.num_queues(), 1) *
                    pci::kNotifyOffMultiplier;
    at += PageAlign(l.notify_size);
    l.msix_table = at;
    l.msix_table_size = irq_.table_bytes();
    at += PageAlign(l.msix_table_size);
    l.msix_pba = at;
    l.msix_pba_size = irq_.pba_bytes();
    at += PageAlign(l.msix_pba_size);
    l.bar_size = std::bit_ceil(at);
  }

  void BuildConfigSpace() {
    config_.Clear();
    const uint32_t id = device_.device_id();
    config_.InitType0({
        .vendor_id = pci::kVendorId,
        .device_id = static_cast<uint16_t>(pci::kDeviceIdBase + id),
        .revision = pci::kRevision,
        .class_code = options_.class_code.value_or(pci::PciClassCode(id)),
        .subsystem_vendor_id = options_.subsystem_vendor_id,
        .subsystem_id = options_.subsystem_id,
        .interrupt_line = options_.interrupt_line,
        .interrupt_pin = 1,  // INTA#
    });
    config_.InitBar64(layout_.bar_size, options_.bar_prefetchable);
    config_.SetBarAddress(options_.bar_address);

    // Capabilities, linked in this order.
    const pci::BarLayout& l = layout_;
    AddVirtioCap(pci::kCapCommonAt, pci::kCapSize, pci::kCapCommonCfg, l.common,
                 pci::kCommonCfgSize);
    AddVirtioCap(pci::kCapIsrAt, pci::kCapSize, pci::kCapIsrCfg, l.isr, 1);
    if (l.device_size != 0) {
      AddVirtioCap(pci::kCapDeviceAt, pci::kCapSize, pci::kCapDeviceCfg,
                   l.device, l.device_size);
    }
    AddVirtioCap(pci::kCapNotifyAt, pci::kCapNotifySize, pci::kCapNotifyCfg,
                 l.notify, l.notify_size);
    config_.Set32(pci::kCapNotifyAt + pci::kCapNotifyMultiplier,
                  pci::kNotifyOffMultiplier);
    // The access window's bar/offset/length/data start at 0 and are all RW
    // for the driver (§4.1.4.9).
    AddVirtioCap(pci::kCapPciCfgAt, pci::kCapPciCfgSize, pci::kCapPciCfg, 0, 0);
    config_.SetWriteMask8(pci::kCapPciCfgAt + pci::kCapBar, 0xff);
    config_.SetWriteMask32(pci::kCapPciCfgAt + pci::kCapOffset, 0xffffffff);
    config_.SetWriteMask32(pci::kCapPciCfgAt + pci::kCapLength, 0xffffffff);
    config_.SetWriteMask32(pci::kCapPciCfgAt + pci::kCapPciCfgData, 0xffffffff);
    config_.AddMsixCapability(pci::kCapMsixAt, irq_.table_size(),
                              static_cast<uint32_t>(l.msix_table),
                              static_cast<uint32_t>(l.msix_pba));

    config_.SavePowerOn();
  }

  // A struct virtio_pci_cap (§4.1.4) at `at`, for BAR0.
  void AddVirtioCap(uint32_t at, uint8_t len, uint8_t type, uint64_t offset,
                    uint32_t length) {
    config_.AddCapability(at, pci::kCapIdVendor);
    config_.Set8(at + pci::kCapLen, len);
    config_.Set8(at + pci::kCapCfgType, type);
    config_.Set8(at + pci::kCapBar, 0);
    config_.Set8(at + pci::kCapId, 0);
    config_.Set32(at + pci::kCapOffset, static_cast<uint32_t>(offset));
    config_.Set32(at + pci::kCapLength, length);
  }

  // What a virtio reset (device_status = 0) clears besides DeviceCore.
  void ResetDeviceState() {
    device_.SetStatus(0);
    irq_.ResetDevice();
    device_feature_select_ = 0;
    driver_feature_select_ = 0;
    queue_select_ = 0;
    // §4.1.4.3: queue_size reads the maximum until the driver lowers it.
    for (uint16_t q = 0; q < device_.num_queues(); ++q) {
      if (QueueConfig* c = device_.queue_config(q)) {
        c->size = device_.queue_max_size(q);
      }
    }
  }

  // ---- access helpers ----
  static bool Overlaps(uint64_t off, uint64_t size, uint64_t start, uint64_t len) {
    return PciConfigSpace::Overlaps(off, size, start, len);
  }
  // [off, off+size) lies inside [start, start+len).
  static bool In(uint64_t off, uint64_t size, uint64_t start, uint64_t len) {
    return off >= start && off - start < len && size <= len - (off - start);
  }
  bool BarAccessOk(uint64_t offset, uint32_t size) const {
    return (size == 1 || size == 2 || size == 4 || size == 8) &&
           offset % size == 0 && offset < layout_.bar_size &&
           size <= layout_.bar_size - offset;
  }

  // ---- VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9) ----
  // The window lets firmware reach the BAR without mapping it; it names a
  // BAR, an offset and a 1/2/4-byte length, and pci_cfg_data carries the
  // data. Anything else is ignored so a bad window can never reach outside
  // the BAR.
  bool WindowTarget(uint64_t* offset, uint32_t* len) {
    const uint32_t at = pci::kCapPciCfgAt;
    const uint8_t bar = config_.Get8(at + pci::kCapBar);
    *offset = config_.Get32(at + pci::kCapOffset);
    *len = config_.Get32(at + pci::kCapLength);
    if (bar != 0 || !(*len == 1 || *len == 2 || *len == 4) ||
        *offset % *len != 0) {
      GuestError("PCI_CFG window bar=%u offset=0x%x length=%u is invalid", bar,
                 *offset, *len);
      return false;
    }
    return true;
  }
  void WindowRead() {
    uint64_t offset;
    uint32_t len;
    if (!WindowTarget(&offset, &len)) return;
    const uint64_t v = BarRead(offset, len);
    for (uint32_t i = 0; i < len; ++i) {
      config_.Set8(pci::kCapPciCfgAt + pci::kCapPciCfgData + i,
                   static_cast<uint8_t>(v >> (8 * i)));
    }
  }
  void WindowWrite() {
    uint64_t offset;
    uint32_t len;
    if (!WindowTarget(&offset, &len)) return;
    const uint64_t v = config_.Get32(pci::kCapPciCfgAt + pci::kCapPciCfgData);
    BarWrite(offset, len, v);
  }

  // ---- common configuration (§4.1.4.3) ----
  static bool CommonAccessOk(uint32_t off, uint32_t size) {
    switch (off) {
      case pci::kCommonDeviceFeatureSelect:
      case pci::kCommonDeviceFeature:
      case pci::kCommonDriverFeatureSelect:
      case pci::kCommonDriverFeature:
      case pci::kCommonQueueDesc + 4:
      case pci::kCommonQueueDriver + 4:
      case pci::kCommonQueueDevice + 4:
        return size == 4;
      case pci::kCommonQueueDesc:
      case pci::kCommonQueueDriver:
      case pci::kCommonQueueDevice:
        return size == 4 || size == 8;
      case pci::kCommonDeviceStatus:
      case pci::kCommonConfigGeneration:
        return size == 1;
      case pci::kCommonConfigMsixVector:
      case pci::kCommonNumQueues:
      case pci::kCommonQueueSelect:
      case pci::kCommonQueueSize:
      case pci::kCommonQueueMsixVector:
      case pci::kCommonQueueEnable:
      case pci::kCommonQueueNotifyOff:
      case pci::kCommonQueueNotifyData:
      case pci::kCommonQueueReset:
        return size == 2;
      default:
        return false;
    }
  }

  // The 64-bit queue address field that `off` falls in, or nullptr.
  static uint64_t QueueConfig::*QueueAddressField(uint32_t off) {
    switch (off & ~7u) {
      case pci::kCommonQueueDesc:
        return &QueueConfig::desc_addr;
      case pci::kCommonQueueDriver:
        return &QueueConfig::driver_addr;
      case pci::kCommonQueueDevice:
        return &QueueConfig::device_addr;
      default:
        return nullptr;
    }
  }

  uint64_t CommonRead(uint32_t off, uint32_t size) {
    if (!CommonAccessOk(off, size)) {
      GuestError("common config read of %u bytes at 0x%x: wrong width", size,
                 off);
      return 0;
    }
    const uint16_t q = queue_select_;
    const bool q_ok = q < device_.num_queues();
    switch (off) {
      case pci::kCommonDeviceFeatureSelect:
        return device_feature_select_;
      case pci::kCommonDeviceFeature:
        return FeatureWord(device_.device_features(), device_feature_select_);
      case pci::kCommonDriverFeatureSelect:
        return driver_feature_select_;
      case pci::kCommonDriverFeature:
        return FeatureWord(device_.driver_features(), driver_feature_select_);
      case pci::kCommonConfigMsixVector:
        return irq_.config_vector();
      case pci::kCommonNumQueues:
        return device_.num_queues();
      case pci::kCommonDeviceStatus:
        return device_.status();
      case pci::kCommonConfigGeneration:
        return device_.config_generation() & 0xff;
      case pci::kCommonQueueSelect:
        return q;
      case pci::kCommonQueueSize:
        // 0 tells the driver the queue does not exist.
        return q_ok ? device_.queue_config_view(q)->size : 0;
      case pci::kCommonQueueMsixVector:
        return irq_.queue_vector(q);
      case pci::kCommonQueueEnable:
        return device_.queue_enabled(q) ? 1 : 0;
      case pci::kCommonQueueNotifyOff:
        return q_ok ? q : 0;
      case pci::kCommonQueueNotifyData:
      case pci::kCommonQueueReset:
        return 0;  // NOTIF_CONFIG_DATA and RING_RESET are not offered
      default: {
        if (!q_ok) return 0;
        const uint64_t v = device_.queue_config_view(q)->*QueueAddressField(off);
        if (off % 8 != 0) return v >> 32;
        return size == 8 ? v : (v & 0xffffffff);
      }
    }
  }

  static uint32_t FeatureWord(uint64_t features, uint32_t select) {
    return select < 2 ? static_cast<uint32_t>(features >> (32 * select)) : 0;
  }

  void CommonWrite(uint32_t off, uint32_t size, uint64_t value) {
    if (!CommonAccessOk(off, size)) {
      GuestError("common config write of %u bytes at 0x%x: wrong width", size,
                 off);
      return;
    }
    const uint16_t q = queue_select_;
    const bool q_ok = q < device_.num_queues();
    const uint16_t v16 = static_cast<uint16_t>(value);
    switch (off) {
      case pci::kCommonDeviceFeatureSelect:
        device_feature_select_ = static_cast<uint32_t>(value);
        return;
      case pci::kCommonDriverFeatureSelect:
        driver_feature_select_ = static_cast<uint32_t>(value);
        return;
      case pci::kCommonDriverFeature: {
        if (driver_feature_select_ >= 2) {
          if (value != 0) {
            GuestError("driver features word %u = 0x%x: no such features",
                       driver_feature_select_, value);
          }
          return;
        }
        const unsigned shift = 32 * driver_feature_select_;
        const uint64_t f = (device_.driver_features() &
                            ~(uint64_t{0xffffffff} << shift)) |
                           (value << shift);
        device_.SetDriverFeatures(f);
        return;
      }
      case pci::kCommonConfigMsixVector:
        irq_.SetConfigVector(v16);
        return;
      case pci::kCommonDeviceStatus:
        if (value == 0) {
          ResetDeviceState();
        } else {
          device_.SetStatus(static_cast<uint8_t>(value));
        }
        return;
      case pci::kCommonQueueSelect:
        queue_select_ = v16;
        return;
      case pci::kCommonQueueMsixVector:
        if (!q_ok) break;
        irq_.SetQueueVector(q, v16);
        return;
      case pci::kCommonQueueEnable:
        if (!q_ok) break;
        if (v16 != 1) {
          GuestError("queue %u: queue_enable written with %u (only 1 allowed)",
                     q, v16);
          return;
        }
        device_.EnableQueue(q);
        return;
      case pci::kCommonQueueSize:
      case pci::kCommonQueueDesc:
      case pci::kCommonQueueDesc + 4:
      case pci::kCommonQueueDriver:
      case pci::kCommonQueueDriver + 4:
      case pci::kCommonQueueDevice:
      case pci::kCommonQueueDevice + 4: {
        if (!q_ok) break;
        QueueConfig* c = device_.queue_config(q);
        if (c == nullptr) {
          GuestError("queue %u: configuration written while enabled; ignored",
                     q);
          return;
        }
        if (off == pci::kCommonQueueSize) {
          c->size = v16;
          return;
        }
        uint64_t& field = c->*QueueAddressField(off);
        if (size == 8) {
          field = value;
        } else if (off % 8 == 0) {
          field = (field & ~uint64_t{0xffffffff}) | value;
        } else {
          field = (field & 0xffffffff) | (value << 32);
        }
        return;
      }
      default:
        // device_feature, num_queues, config_generation, queue_notify_off,
        // queue_notify_data; queue_reset without RING_RESET.
        GuestError("common config write at 0x%x: read-only field", off);
        return;
    }
    GuestError("common config write at 0x%x for nonexistent queue %u", off, q);
  }

  void NotifyWrite(uint32_t off, uint32_t size) {
    // The queue is the address, not the value (QEMU does the same): with a
    // multiplier of 4 each queue has its own register.
    if (off % pci::kNotifyOffMultiplier != 0 || (size != 2 && size != 4)) {
      GuestError("notify write of %u bytes at notify+0x%x: not a queue's "
                 "register", size, off);
      return;
    }
    const uint32_t q = off / pci::kNotifyOffMultiplier;
    if (q >= device_.num_queues()) {
      GuestError("notify for nonexistent queue %u", q);
      return;
    }
    device_.Notify(static_cast<uint16_t>(q));
  }

  Device& device_;
  Interrupt& irq_;
  const PciTransportOptions options_;
  pci::BarLayout layout_;
  PciConfigSpace config_;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint16_t queue_select_ = 0;
  GuestErrorLimiter guest_errors_;
};

}  // namespace virtio

#endif  // VIRTIO_PCI_TRANSPORT_H_
