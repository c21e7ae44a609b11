// glue/kvm/boot_info.h — the contract between the KVM VMM (virtio-kvm) and
// the freestanding test guest it runs (glue/kvm/guest/).
//
// Shared by both sides, so it includes only freestanding-safe headers: the
// guest is built with -m32 -ffreestanding -nostdlib (see guest/shim/ for the
// few <c...> headers it maps onto the compiler's own).
//
// Guest-physical layout (flat 32-bit protected mode, paging off):
//   0x00000800  GDT written by the VMM (null, code 0x08, data 0x10)
//   0x00001000  BootInfo written by the VMM
//   0x00100000  guest image (ELF PT_LOAD segments or a flat binary)
//   ... RAM end (--mem)
//   0xd0000000  virtio-mmio devices (auto: one 4 KiB page each)
//   0xe0000000  PCI memory window (BARs, auto-placed by size)
//   0xfec00000  IOAPIC, 0xfee00000 LAPIC (in-kernel irqchip)
//
// I/O ports: 0x3f8 16550A UART (transmit only; uart16550.h), 0xf4 exit
// port (32-bit write: 0 = every check passed, anything else = number of
// failures; the VMM's exit status mirrors it), 0xcf8/0xcfc PCI
// configuration mechanism #1.
#ifndef LIBVIRTIO_GLUE_KVM_BOOT_INFO_H_
#define LIBVIRTIO_GLUE_KVM_BOOT_INFO_H_

#include <cstdint>

namespace kvmglue {

inline constexpr uint32_t kGdtAddr = 0x800;
inline constexpr uint32_t kBootInfoAddr = 0x1000;
inline constexpr uint32_t kGuestLoadAddr = 0x100000;
inline constexpr uint16_t kCodeSelector = 0x08;
inline constexpr uint16_t kDataSelector = 0x10;

inline constexpr uint32_t kMmioWindowBase = 0xd0000000;
inline constexpr uint32_t kMmioWindowEnd = 0xe0000000;
inline constexpr uint32_t kMmioSlotStride = 0x1000;
inline constexpr uint32_t kPciWindowBase = 0xe0000000;
inline constexpr uint32_t kPciWindowEnd = 0xfec00000;
inline constexpr uint32_t kIoapicBase = 0xfec00000;
inline constexpr uint32_t kLapicBase = 0xfee00000;

inline constexpr uint16_t kUartPort = 0x3f8;
inline constexpr uint16_t kExitPort = 0xf4;
inline constexpr uint16_t kPciConfigAddressPort = 0xcf8;
inline constexpr uint16_t kPciConfigDataPort = 0xcfc;

// Interrupt lines (IOAPIC pins = GSIs) the VMM hands out.
inline constexpr uint32_t kFirstDeviceIrq = 5;
inline constexpr uint32_t kLastDeviceIrq = 23;
// The CMOS RTC's ISA IRQ: never given to a device automatically.
inline constexpr uint32_t kRtcIrq = 8;
inline constexpr uint32_t kIoapicPins = 24;

inline constexpr uint32_t kBootInfoMagic = 0x4b4f4f42;  // "BOOK"
inline constexpr uint32_t kBootInfoVersion = 1;
inline constexpr uint32_t kMaxBootDevices = 16;

// What the guest is asked to do (--guest-flags).
enum GuestFlag : uint32_t {
  kFlagPacked = 1u << 0,      // negotiate VIRTIO_F_RING_PACKED
  kFlagNoEventIdx = 1u << 1,  // do not negotiate VIRTIO_F_EVENT_IDX
  kFlagHostile = 1u << 2,     // run the misbehaviour checks too
  kFlagPoll = 1u << 3,        // no interrupts: poll the used rings
  kFlagIntx = 1u << 4,        // virtio-pci: INTx instead of MSI-X
};

enum BootTransport : uint32_t { kBootMmio = 1, kBootPci = 2 };

// BootDevice::flags
inline constexpr uint32_t kDeviceReadOnly = 1u << 0;

struct BootDevice {
  uint32_t transport;  // BootTransport
  uint32_t device_id;  // virtio device ID
  uint32_t addr;       // mmio: region base; pci: BAR0 as placed by the VMM
  uint32_t pci_bdf;    // pci: bus << 8 | slot << 3 | fn
  uint32_t irq;        // mmio: IOAPIC pin; pci: INTx pin (interrupt line)
  uint32_t flags;      // kDeviceReadOnly
};
static_assert(sizeof(BootDevice) == 24);

struct BootInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;  // GuestFlag
  uint32_t ram_size;
  uint32_t num_devices;
  uint32_t reserved;
  BootDevice devices[kMaxBootDevices];
};
static_assert(sizeof(BootInfo) == 24 + 24 * kMaxBootDevices);

// --- The virtio-blk check's on-disk footprint (the host test verifies it) ---
// The guest writes kBlkWriteSectors sectors of BlkPattern at kBlkWriteSector,
// reads them back, flushes, and discards kBlkDiscardSectors sectors at
// kBlkDiscardSector (when DISCARD is offered), and WRITE_ZEROES
// kBlkWriteZeroesSectors at kBlkWriteZeroesSector. Everything else is
// untouched.
inline constexpr uint32_t kBlkWriteSector = 8;
inline constexpr uint32_t kBlkWriteSectors = 8;
inline constexpr uint32_t kBlkDiscardSector = 32;
inline constexpr uint32_t kBlkDiscardSectors = 8;
inline constexpr uint32_t kBlkWriteZeroesSector = 48;
inline constexpr uint32_t kBlkWriteZeroesSectors = 4;
inline constexpr uint32_t kBlkMinSectors = 64;

constexpr uint8_t BlkPattern(uint32_t sector, uint32_t byte) {
  return static_cast<uint8_t>((sector * 37u + byte * 7u + (byte >> 8) + 0x5a) &
                              0xff);
}

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_BOOT_INFO_H_
