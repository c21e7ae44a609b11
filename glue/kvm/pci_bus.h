// glue/kvm/pci_bus.h — an emulated PCI host bridge: configuration mechanism
// #1 (CONFIG_ADDRESS at 0xcf8, CONFIG_DATA at 0xcfc..0xcff), bus 0 only,
// slot 0 the host bridge itself, other slots the virtio functions.
//
// Guest mistakes (a CONFIG_ADDRESS access that is not 32 bits, a data access
// that is misaligned or crosses the dword) are logged and ignored; reads of
// absent functions return all ones, as on real hardware.
#ifndef LIBVIRTIO_GLUE_KVM_PCI_BUS_H_
#define LIBVIRTIO_GLUE_KVM_PCI_BUS_H_

#include <array>
#include <cstdint>
#include <functional>

#include "virtio/log.h"

namespace kvmglue {

// What the bus needs from a function behind it.
struct PciFunctionOps {
  std::function<uint32_t(uint32_t offset, uint32_t size)> read;
  std::function<void(uint32_t offset, uint32_t size, uint32_t value)> write;
};

class PciBus {
 public:
  static constexpr uint16_t kAddressPort = 0xcf8;
  static constexpr uint16_t kDataPort = 0xcfc;
  // The host bridge's identity: Red Hat's "QEMU PCIe host bridge".
  static constexpr uint16_t kBridgeVendor = 0x1b36;
  static constexpr uint16_t kBridgeDevice = 0x0008;

  void Attach(uint8_t slot, PciFunctionOps ops) { slots_[slot] = std::move(ops); }

  // True if `port` belongs to the bus.
  static bool Claims(uint16_t port) {
    return (port >= kAddressPort && port < kAddressPort + 4) ||
           (port >= kDataPort && port < kDataPort + 4);
  }

  uint32_t PortRead(uint16_t port, uint32_t size) {
    if (port >= kAddressPort && port < kAddressPort + 4) {
      if (port != kAddressPort || size != 4) {
        Bad("%u-byte read of CONFIG_ADDRESS+%u", size, port - kAddressPort);
        return 0xffffffff;
      }
      return address_;
    }
    uint32_t offset = 0;
    const std::function<uint32_t(uint32_t, uint32_t)>* read = nullptr;
    uint8_t slot = 0;
    if (!Decode(port, size, &offset, &slot)) return Ones(size);
    if (slot == 0) return BridgeRead(offset, size);
    read = &slots_[slot].read;
    if (!*read) return Ones(size);
    return (*read)(offset, size);
  }

  void PortWrite(uint16_t port, uint32_t size, uint32_t value) {
    if (port >= kAddressPort && port < kAddressPort + 4) {
      // Linux's probe for configuration mechanism #1 first writes a byte to
      // 0xcfb (a mechanism-select register on some old chipsets): ignored.
      if (port == kAddressPort + 3 && size == 1) return;
      if (port != kAddressPort || size != 4) {
        Bad("%u-byte write of 0x%x to CONFIG_ADDRESS+%u", size, value,
            port - kAddressPort);
        return;
      }
      address_ = value & 0x80fffffc;  // enable, bus, device, fn, register
      return;
    }
    uint32_t offset = 0;
    uint8_t slot = 0;
    if (!Decode(port, size, &offset, &slot)) return;
    if (slot == 0) return;  // the bridge's header is read-only here
    if (slots_[slot].write) slots_[slot].write(offset, size, value);
  }

  uint32_t address() const { return address_; }

 private:
  template <typename... Args>
  void Bad(const absl::FormatSpec<Args...>& f, const Args&... args) {
    if (errors_.Allow()) {
      virtio::Logf(virtio::LogLevel::kWarning, "pci-host: guest error: %s",
                   absl::StrFormat(f, args...));
    }
  }
  static uint32_t Ones(uint32_t size) {
    return size >= 4 ? 0xffffffff : (1u << (8 * size)) - 1;
  }

  // CONFIG_DATA access → (slot, register offset). False: no function
  // there, or a bad access.
  bool Decode(uint16_t port, uint32_t size, uint32_t* offset, uint8_t* slot) {
    const uint32_t byte = port - kDataPort;
    if (!(size == 1 || size == 2 || size == 4) || byte % size != 0) {
      Bad("%u-byte CONFIG_DATA access at +%u: misaligned", size, byte);
      return false;
    }
    if (!(address_ & 0x80000000)) return false;  // mechanism disabled
    const uint32_t bus = (address_ >> 16) & 0xff;
    const uint32_t dev = (address_ >> 11) & 0x1f;
    const uint32_t fn = (address_ >> 8) & 0x7;
    if (bus != 0 || fn != 0) return false;
    *slot = static_cast<uint8_t>(dev);
    *offset = (address_ & 0xfc) + byte;
    return true;
  }

  static uint32_t BridgeRead(uint32_t offset, uint32_t size) {
    uint8_t cfg[64] = {};
    cfg[0x00] = kBridgeVendor & 0xff;
    cfg[0x01] = kBridgeVendor >> 8;
    cfg[0x02] = kBridgeDevice & 0xff;
    cfg[0x03] = kBridgeDevice >> 8;
    cfg[0x0b] = 0x06;  // class: bridge, host bridge (0x0600), prog-if 0
    uint32_t v = 0;
    for (uint32_t i = 0; i < size; ++i) {
      const uint32_t at = offset + i;
      v |= uint32_t{at < sizeof cfg ? cfg[at] : uint8_t{0}} << (8 * i);
    }
    return v;
  }

  uint32_t address_ = 0;
  std::array<PciFunctionOps, 32> slots_;
  virtio::GuestErrorLimiter errors_;
};

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_PCI_BUS_H_
