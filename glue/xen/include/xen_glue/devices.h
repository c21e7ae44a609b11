// xen_glue/devices.h — libvirtio transports and interrupt sinks on Xen.
//
//   MmioTransportDevice / PciTransportDevice: IoDevice adapters that hand
//     ioreq accesses to MmioTransport (Read/Write) and PciTransport
//     (ConfigRead/ConfigWrite/BarRead/BarWrite, BAR window tracking).
//   XenIrqLine<DM>: the virtio-mmio line. Arm: set_irq_level on an SPI
//     (libxl describes virtio-mmio SPIs as edge-rising; we pass the level
//     through, which is what QEMU's xenpvh does and is harmless for edge).
//     x86: set_isa_irq_level (level-triggered ISA line), HVM guests only.
//   XenPciSink<DM>: virtio-pci MSI-X messages via inject_msi, INTA# via
//     set_pci_intx_level (x86, HVM guests only). PIRQ messages (vector 0)
//     are sent whatever the MSI-X masks say (BypassesMsixMask).
//
// Both carry the guest's type (guest_type.h) and never issue an ISA or
// INTx level dm_op unless it is kHvm: on a PVH guest set_isa_irq_level
// crashed Xen 4.17. A refused assertion is counted and logged once; the
// Backend refuses at startup the configurations that would need one.
#ifndef XEN_GLUE_DEVICES_H_
#define XEN_GLUE_DEVICES_H_

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "virtio/log.h"
#include "virtio/pci_transport.h"
#include "xen_glue/guest_type.h"
#include "xen_glue/ioreq_server.h"
#include "xen_glue/ports.h"

namespace virtio::xg {

template <typename Transport>
class MmioTransportDevice final : public IoDevice {
 public:
  explicit MmioTransportDevice(Transport& t) : t_(t) {}
  uint64_t MmioRead(uint64_t offset, uint32_t size) override {
    return t_.Read(offset, size);
  }
  void MmioWrite(uint64_t offset, uint32_t size, uint64_t value) override {
    t_.Write(offset, size, static_cast<uint32_t>(value));
  }

 private:
  Transport& t_;
};

template <typename Transport>
class PciTransportDevice final : public IoDevice {
 public:
  // `msix` false: the MSI-X capability is unlinked from the capability
  // list (the guest sees an INTx-only function), so one guest can drive
  // devices on both interrupt kinds.
  explicit PciTransportDevice(Transport& t, bool msix = true)
      : t_(t), msix_(msix) {}
  uint64_t MmioRead(uint64_t offset, uint32_t size) override {
    return t_.BarRead(offset, size);
  }
  void MmioWrite(uint64_t offset, uint32_t size, uint64_t value) override {
    t_.BarWrite(offset, size, value);
  }
  uint32_t ConfigRead(uint32_t reg, uint32_t size) override {
    uint32_t v = t_.ConfigRead(reg, size);
    // The PCI_CFG capability links to MSI-X, the last in the list.
    constexpr uint32_t kNext = pci::kCapPciCfgAt + 1;
    if (!msix_ && reg <= kNext && kNext < reg + size)
      v &= ~(0xffu << (8 * (kNext - reg)));
    return v;
  }
  void ConfigWrite(uint32_t reg, uint32_t size, uint32_t value) override {
    t_.ConfigWrite(reg, size, value);
  }
  std::optional<std::pair<uint64_t, uint64_t>> BarWindow() const override {
    if (!t_.memory_enabled()) return std::nullopt;
    const uint64_t base = t_.bar_address();
    const uint64_t size = t_.bar_size();
    if (base == 0 || base + size - 1 < base) return std::nullopt;
    return std::make_pair(base, base + size - 1);
  }

 private:
  Transport& t_;
  bool msix_;
};

enum class IrqKind { kArmSpi, kX86Isa };

template <DeviceModelPort DM>
struct XenIrqLine {
  DM* dm = nullptr;
  DomId domid = 0;
  IrqKind kind = IrqKind::kArmSpi;
  unsigned irq = 0;
  // x86: the ISA dm_op is issued only for kHvm (see the file comment).
  GuestType guest = GuestType::kUnknown;
  unsigned refused = 0;  // ISA dm_ops not issued because of `guest`

  void Set(bool asserted) {
    const unsigned level = asserted ? 1 : 0;
    if (kind == IrqKind::kX86Isa && !LevelIrqDmOpsSafe(guest)) {
      if (refused++ == 0) {
        Logf(LogLevel::kError, "xen: not issuing set_isa_irq_level(%u, %u): %s",
             irq, level, LevelIrqRefusal(guest));
      }
      return;
    }
    const int r = kind == IrqKind::kArmSpi
                      ? dm->set_irq_level(domid, irq, level)
                      : dm->set_isa_irq_level(domid, static_cast<uint8_t>(irq), level);
    if (r != 0) {
      Logf(LogLevel::kError, "xen: %s(%u, %u) failed: %s",
           kind == IrqKind::kArmSpi ? "set_irq_level" : "set_isa_irq_level",
           irq, level, std::strerror(errno));
    }
  }
};

template <DeviceModelPort DM>
struct XenPciSink {
  DM* dm = nullptr;
  DomId domid = 0;
  uint16_t seg = 0;
  uint8_t bus = 0;
  uint8_t dev = 0;
  // INTx is asserted only for kHvm (see the file comment); MSI always.
  GuestType guest = GuestType::kUnknown;
  unsigned refused = 0;  // INTx dm_ops not issued because of `guest`

  void SendMsi(uint64_t address, uint32_t data) {
    if (dm->inject_msi(domid, address, data) != 0) {
      Logf(LogLevel::kError, "xen: inject_msi(0x%x, 0x%x) failed: %s", address,
           data, std::strerror(errno));
    }
  }
  // Xen's inject_msi reads a message with vector 0 as a PIRQ (number in
  // the address's destination bits) and raises its event channel; vector 0
  // is never a valid x86 vector otherwise. Linux in an HVM guest programs
  // its MSI-X entries that way and leaves them masked in the table (it
  // masks the event channel instead): found on Xen 4.17, where a device
  // honouring the table mask never interrupted the guest.
  bool BypassesMsixMask(uint64_t address, uint32_t data) const {
    return (address & 0xfff00000u) == 0xfee00000u && (data & 0xffu) == 0;
  }
  void SetIntx(bool asserted) {
    if (!LevelIrqDmOpsSafe(guest)) {
      if (refused++ == 0) {
        Logf(LogLevel::kError,
             "xen: not issuing set_pci_intx_level for %02x:%02x (INTx): %s",
             bus, dev, LevelIrqRefusal(guest));
      }
      return;
    }
    if (dm->set_pci_intx_level(domid, seg, bus, dev, 0, asserted ? 1 : 0) != 0) {
      Logf(LogLevel::kError, "xen: set_pci_intx_level failed: %s",
           std::strerror(errno));
    }
  }
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_DEVICES_H_
