// virtio/pci_config_space.h — a PCI function's configuration space (PCI
// Local Bus 3.0 §6), as PciTransport presents it.
//
// PciConfigSpace models the 256 bytes of a type-0 function's configuration
// space: the contents, a per-byte mask of the bits the guest may write, and
// the power-on contents a function reset restores. On top of the raw bytes
// it knows
//   * the type-0 header (InitType0): IDs, class code, subsystem, interrupt
//     line / pin; command register with memory space, bus master and INTx
//     disable writable (no I/O BAR, so I/O space is hardwired 0); status
//     with the capabilities-list bit and a live Interrupt Status bit (the
//     caller passes the INTx request to Read);
//   * one 64-bit memory BAR in BAR0/BAR1 (InitBar64): the low address bits a
//     BAR of its size decodes are hardwired 0, so the standard sizing write
//     of all-ones reads back ~(size-1) | type bits;
//   * the capability list (AddCapability links each new capability at the
//     end; the caller fills in its body) and the MSI-X capability's
//     registers (AddMsixCapability; enable and function mask writable).
// Guest accesses (Read / Write) are naturally aligned 1/2/4 bytes (AccessOk)
// below kConfigSpaceSize; Write applies the write mask and never changes a
// read-only bit. The side effects of a write (programming the interrupt
// logic from command / MSI-X control, a PCI_CFG window access) are the
// caller's: it checks which registers the access Overlaps().
//
// Not thread-safe: accesses are serialised by the caller (PciTransport's
// rule: one vCPU at a time per function).
//
// Example:
//   virtio::PciConfigSpace cfg;
//   cfg.InitType0({.vendor_id = 0x1af4, .device_id = 0x1044,
//                  .class_code = 0x00ff00});
//   cfg.InitBar64(/*size=*/0x10000, /*prefetchable=*/false);
//   cfg.AddMsixCapability(0x40, /*table_size=*/3, 0x2000, 0x3000);
//   cfg.SavePowerOn();
//   cfg.Write(virtio::pci::kCfgBar0, 4, 0xffffffff);  // sizing
//   uint32_t mask = cfg.Read(virtio::pci::kCfgBar0, 4, /*intx_pending=*/false);
#ifndef VIRTIO_PCI_CONFIG_SPACE_H_
#define VIRTIO_PCI_CONFIG_SPACE_H_

#include <cstdint>
#include <cstring>

namespace virtio {

namespace pci {

inline constexpr uint32_t kConfigSpaceSize = 256;
inline constexpr uint32_t kExtendedConfigSpaceSize = 4096;

// Type-0 header registers.
inline constexpr uint32_t kCfgVendorId = 0x00;
inline constexpr uint32_t kCfgDeviceId = 0x02;
inline constexpr uint32_t kCfgCommand = 0x04;
inline constexpr uint32_t kCfgStatus = 0x06;
inline constexpr uint32_t kCfgRevision = 0x08;
inline constexpr uint32_t kCfgClassCode = 0x09;  // 3 bytes: prog-if, sub, base
inline constexpr uint32_t kCfgCacheLineSize = 0x0c;
inline constexpr uint32_t kCfgHeaderType = 0x0e;
inline constexpr uint32_t kCfgBar0 = 0x10;
inline constexpr uint32_t kCfgBar1 = 0x14;
inline constexpr uint32_t kCfgSubsystemVendorId = 0x2c;
inline constexpr uint32_t kCfgSubsystemId = 0x2e;
inline constexpr uint32_t kCfgRomAddress = 0x30;
inline constexpr uint32_t kCfgCapabilityPointer = 0x34;
inline constexpr uint32_t kCfgInterruptLine = 0x3c;
inline constexpr uint32_t kCfgInterruptPin = 0x3d;

inline constexpr uint16_t kCommandIoSpace = 1 << 0;
inline constexpr uint16_t kCommandMemorySpace = 1 << 1;
inline constexpr uint16_t kCommandBusMaster = 1 << 2;
inline constexpr uint16_t kCommandIntxDisable = 1 << 10;
inline constexpr uint16_t kStatusInterrupt = 1 << 3;
inline constexpr uint16_t kStatusCapabilityList = 1 << 4;

inline constexpr uint32_t kBarMemory64 = 0x4;  // BAR type bits 2:1 = 10b
inline constexpr uint32_t kBarPrefetchable = 0x8;

inline constexpr uint8_t kCapIdVendor = 0x09;
inline constexpr uint8_t kCapIdMsix = 0x11;

// Every capability starts with its ID and the offset of the next one (0:
// the last).
inline constexpr uint32_t kCapVndr = 0;
inline constexpr uint32_t kCapNext = 1;

// MSI-X capability (PCI 3.0 §6.8.2).
inline constexpr uint32_t kMsixControl = 2;
inline constexpr uint32_t kMsixTable = 4;
inline constexpr uint32_t kMsixPba = 8;
inline constexpr uint32_t kMsixCapSize = 12;
inline constexpr uint16_t kMsixControlEnable = 1 << 15;
inline constexpr uint16_t kMsixControlFunctionMask = 1 << 14;
inline constexpr uint16_t kMsixControlTableSizeMask = 0x7ff;

// What InitType0 puts in the header.
struct Type0Header {
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // base << 16 | sub << 8 | prog-if
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint8_t interrupt_line = 0;
  uint8_t interrupt_pin = 1;  // INTA#
};

}  // namespace pci

class PciConfigSpace {
 public:
  PciConfigSpace() { Clear(); }

  // --- Building (before SavePowerOn) ---------------------------------------

  // All zero, nothing writable, no capabilities.
  void Clear() {
    std::memset(cfg_, 0, sizeof cfg_);
    std::memset(wmask_, 0, sizeof wmask_);
    last_cap_ = 0;
    msix_cap_ = 0;
  }

  void InitType0(const pci::Type0Header& h) {
    Set16(pci::kCfgVendorId, h.vendor_id);
    Set16(pci::kCfgDeviceId, h.device_id);
    cfg_[pci::kCfgRevision] = h.revision;
    cfg_[pci::kCfgClassCode] = static_cast<uint8_t>(h.class_code);
    cfg_[pci::kCfgClassCode + 1] = static_cast<uint8_t>(h.class_code >> 8);
    cfg_[pci::kCfgClassCode + 2] = static_cast<uint8_t>(h.class_code >> 16);
    cfg_[pci::kCfgHeaderType] = 0;  // type 0, single function
    Set16(pci::kCfgSubsystemVendorId, h.subsystem_vendor_id);
    Set16(pci::kCfgSubsystemId, h.subsystem_id);
    cfg_[pci::kCfgInterruptLine] = h.interrupt_line;
    cfg_[pci::kCfgInterruptPin] = h.interrupt_pin;

    SetWriteMask16(pci::kCfgCommand, pci::kCommandMemorySpace |
                                         pci::kCommandBusMaster |
                                         pci::kCommandIntxDisable);
    wmask_[pci::kCfgCacheLineSize] = 0xff;  // no effect, but must be RW
    wmask_[pci::kCfgInterruptLine] = 0xff;
  }

  // BAR0/BAR1 as one 64-bit memory BAR of `size` bytes (a power of two, at
  // least 16), at address 0.
  void InitBar64(uint64_t size, bool prefetchable) {
    bar_size_ = size;
    bar_type_ = pci::kBarMemory64 | (prefetchable ? pci::kBarPrefetchable : 0);
    // The low address bits a BAR of this size decodes are hardwired 0: that
    // is what makes the all-ones sizing write read back the size.
    SetWriteMask32(pci::kCfgBar0,
                   static_cast<uint32_t>(~(size - 1)) & ~uint32_t{0xf});
    SetWriteMask32(pci::kCfgBar1, 0xffffffff);
    SetBarAddress(0);
  }

  // Starts a capability with ID `id` at `at` and links it at the end of the
  // list (the capabilities pointer for the first). The caller writes the
  // rest of it.
  void AddCapability(uint32_t at, uint8_t id) {
    cfg_[at + pci::kCapVndr] = id;
    cfg_[at + pci::kCapNext] = 0;
    if (last_cap_ == 0) {
      cfg_[pci::kCfgCapabilityPointer] = static_cast<uint8_t>(at);
      Set16(pci::kCfgStatus, Get16(pci::kCfgStatus) | pci::kStatusCapabilityList);
    } else {
      cfg_[last_cap_ + pci::kCapNext] = static_cast<uint8_t>(at);
    }
    last_cap_ = at;
  }

  // The MSI-X capability at `at`: `table_size` entries (1..2048); table and
  // PBA at these offsets in BAR0 (BIR 0).
  void AddMsixCapability(uint32_t at, uint32_t table_size,
                         uint32_t table_offset, uint32_t pba_offset) {
    AddCapability(at, pci::kCapIdMsix);
    Set16(at + pci::kMsixControl, static_cast<uint16_t>(table_size - 1));
    SetWriteMask16(at + pci::kMsixControl,
                   pci::kMsixControlEnable | pci::kMsixControlFunctionMask);
    Set32(at + pci::kMsixTable, table_offset);
    Set32(at + pci::kMsixPba, pba_offset);
    msix_cap_ = at;
  }

  // The current contents become the power-on contents Reset() restores.
  void SavePowerOn() { std::memcpy(init_cfg_, cfg_, sizeof cfg_); }

  // --- Guest accesses --------------------------------------------------------

  // `size` is 1, 2 or 4, `offset` aligned to it and below 4096 (extended
  // space included; the caller decides what lies beyond kConfigSpaceSize).
  static bool AccessOk(uint32_t offset, uint32_t size) {
    return (size == 1 || size == 2 || size == 4) && offset % size == 0 &&
           offset <= pci::kExtendedConfigSpaceSize - size;
  }

  // An AccessOk access below kConfigSpaceSize. Interrupt Status reads as
  // `intx_pending` (the INTx request, whether or not disabled).
  uint32_t Read(uint32_t offset, uint32_t size, bool intx_pending) const {
    uint32_t v = 0;
    for (uint32_t i = 0; i < size; ++i) {
      uint8_t b = cfg_[offset + i];
      if (offset + i == pci::kCfgStatus && intx_pending) {
        b |= pci::kStatusInterrupt;
      }
      v |= uint32_t{b} << (8 * i);
    }
    return v;
  }

  // An AccessOk access below kConfigSpaceSize: changes the writable bits.
  // False when it hit only read-only bits of registers other than those
  // firmware routinely writes (status, to clear error bits; the BARs and ROM
  // address, to size them) — a guest mistake worth reporting.
  bool Write(uint32_t offset, uint32_t size, uint32_t value) {
    bool writable = false;
    for (uint32_t i = 0; i < size; ++i) {
      const uint8_t m = wmask_[offset + i];
      const uint8_t b = static_cast<uint8_t>(value >> (8 * i));
      cfg_[offset + i] = static_cast<uint8_t>((cfg_[offset + i] & ~m) | (b & m));
      writable |= m != 0;
    }
    // Writes a driver makes as a matter of course to registers this
    // function hardwires (Linux's pci_set_master programs the latency
    // timer, others the cache line size): not guest errors.
    const bool probe = Overlaps(offset, size, pci::kCfgStatus, 2) ||
                       Overlaps(offset, size, pci::kCfgCacheLineSize, 2) ||
                       Overlaps(offset, size, pci::kCfgBar0, 24) ||
                       Overlaps(offset, size, pci::kCfgRomAddress, 4);
    return writable || probe;
  }

  static bool Overlaps(uint64_t off, uint64_t size, uint64_t start, uint64_t len) {
    return off < start + len && start < off + size;
  }

  // Function-level reset: back to the power-on contents.
  void Reset() { std::memcpy(cfg_, init_cfg_, sizeof cfg_); }

  // --- Registers ---------------------------------------------------------------

  uint16_t command() const { return Get16(pci::kCfgCommand); }
  bool memory_enabled() const { return command() & pci::kCommandMemorySpace; }
  bool bus_master_enabled() const { return command() & pci::kCommandBusMaster; }
  bool intx_disabled() const { return command() & pci::kCommandIntxDisable; }

  uint64_t bar_size() const { return bar_size_; }
  // As programmed (only meaningful while memory_enabled(): during sizing it
  // holds the mask).
  uint64_t bar_address() const {
    return (Get32(pci::kCfgBar0) & ~uint64_t{0xf}) |
           (uint64_t{Get32(pci::kCfgBar1)} << 32);
  }
  // Rounded down to the BAR's natural alignment, as the hardware would; also
  // the address a function reset restores.
  void SetBarAddress(uint64_t address) {
    address &= ~(bar_size_ - 1);
    Set32(pci::kCfgBar0, static_cast<uint32_t>(address) | bar_type_);
    Set32(pci::kCfgBar1, static_cast<uint32_t>(address >> 32));
    std::memcpy(init_cfg_ + pci::kCfgBar0, cfg_ + pci::kCfgBar0, 8);
  }

  // Offset of the MSI-X capability (0: none) and its control bits.
  uint32_t msix_cap() const { return msix_cap_; }
  bool msix_enabled() const {
    return msix_cap_ != 0 &&
           (Get16(msix_cap_ + pci::kMsixControl) & pci::kMsixControlEnable);
  }
  bool msix_function_masked() const {
    return msix_cap_ != 0 && (Get16(msix_cap_ + pci::kMsixControl) &
                              pci::kMsixControlFunctionMask);
  }

  // Raw little-endian access to the contents and the write mask (`at` +
  // width <= kConfigSpaceSize), for capability bodies.
  uint8_t Get8(uint32_t at) const { return cfg_[at]; }
  uint16_t Get16(uint32_t at) const {
    return static_cast<uint16_t>(cfg_[at] | (cfg_[at + 1] << 8));
  }
  uint32_t Get32(uint32_t at) const {
    return uint32_t{cfg_[at]} | (uint32_t{cfg_[at + 1]} << 8) |
           (uint32_t{cfg_[at + 2]} << 16) | (uint32_t{cfg_[at + 3]} << 24);
  }
  void Set8(uint32_t at, uint8_t v) { cfg_[at] = v; }
  void Set16(uint32_t at, uint16_t v) {
    cfg_[at] = static_cast<uint8_t>(v);
    cfg_[at + 1] = static_cast<uint8_t>(v >> 8);
  }
  void Set32(uint32_t at, uint32_t v) {
    for (uint32_t i = 0; i < 4; ++i) cfg_[at + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  void SetWriteMask8(uint32_t at, uint8_t m) { wmask_[at] = m; }
  void SetWriteMask16(uint32_t at, uint16_t m) {
    wmask_[at] = static_cast<uint8_t>(m);
    wmask_[at + 1] = static_cast<uint8_t>(m >> 8);
  }
  void SetWriteMask32(uint32_t at, uint32_t m) {
    for (uint32_t i = 0; i < 4; ++i) wmask_[at + i] = static_cast<uint8_t>(m >> (8 * i));
  }

 private:
  uint8_t cfg_[pci::kConfigSpaceSize];
  uint8_t wmask_[pci::kConfigSpaceSize];     // per byte: guest-writable bits
  uint8_t init_cfg_[pci::kConfigSpaceSize] = {};  // power-on contents
  uint64_t bar_size_ = 0;
  uint32_t bar_type_ = 0;
  uint32_t last_cap_ = 0;  // offset of the last capability (0: none)
  uint32_t msix_cap_ = 0;
};

}  // namespace virtio

#endif  // VIRTIO_PCI_CONFIG_SPACE_H_
