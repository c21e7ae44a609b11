// xen_glue/device_spec.h — the command line of xen-virtio-backend.
//
//   xen-virtio-backend --domid N --device SPEC [--device SPEC ...]
//                      [--arch arm|x86] [--ram GPA:SIZE ...]
//                      [--claims-dir DIR] [--print-placement]
//                      [--no-guardian]
//   SPEC: the device catalogue's syntax (virtio/catalog/device_spec.h,
//         docs/devices.md), shared with vhost-user-device and virtio-kvm,
//         plus this backend's own keys:
//         [,transport=mmio|pci][,addr=A][,irq=I][,grant=on][,msix=off]
//   grant=on: offer VIRTIO_F_ACCESS_PLATFORM and accept grant-reference
//         DMA addresses (bit 63) mapped through libxengnttab (virtio-mmio
//         only for now; see README).
//   addr: an MMIO base (0x2000000) for virtio-mmio, or a PCI
//         [seg:]bus:slot.fn (00:05.0) for virtio-pci (x86 only).
//   irq:  the SPI (Arm, 32..) or ISA IRQ (x86 virtio-mmio, 0..15).
//   msix=off (virtio-pci): no MSI-X capability, INTx only.
// Catalogue options the backend does not build yet (blk backend=ram|null,
// num-queues, net null/generator backends, mac=, ...) are refused by name.
// Unpinned devices get the next free MMIO slot from 0x02000000 in 0x200
// steps (libxl's GUEST_VIRTIO_MMIO_BASE) and SPI from 33 (Arm) or ISA IRQ
// 5/7/10/11 (x86); --print-placement shows the result to pin next time.
#ifndef XEN_GLUE_DEVICE_SPEC_H_
#define XEN_GLUE_DEVICE_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/catalog/device_spec.h"
#include "xen_glue/abi.h"
#include "xen_glue/foreign_memory.h"

namespace virtio::xg {

enum class DeviceType { kBlk, kRng, kConsole, kNet };
enum class GuestArch { kArm, kX86 };

struct PciAddr {
  uint16_t seg = 0;
  uint8_t bus = 0;
  uint8_t dev = 0;
  uint8_t fn = 0;
  bool operator==(const PciAddr&) const = default;
};

struct DeviceSpec {
  // The shared keys as parsed; the fields below repeat what Backend uses.
  catalog::DeviceSpec device;
  DeviceType type = DeviceType::kRng;
  std::string id;
  std::string path;
  bool readonly = false;
  bool pci = false;                   // virtio-pci (else virtio-mmio)
  std::optional<uint64_t> mmio_base;  // virtio-mmio
  std::optional<PciAddr> pci_addr;    // virtio-pci
  std::optional<unsigned> irq;        // virtio-mmio line
  bool grant = false;                 // grant-based DMA + ACCESS_PLATFORM
  std::string backend;  // console: pty|stdio|socket|file; net: tap|loopback
  std::string ifname;   // net,backend=tap
  bool packed = true;   // offer VIRTIO_F_RING_PACKED
  bool msix = true;     // virtio-pci: offer MSI-X (else INTx only)
};

inline constexpr uint64_t kVirtioMmioBase =
    0x02000000;  // GUEST_VIRTIO_MMIO_BASE
inline constexpr uint64_t kVirtioMmioWindow = 0x00100000;
inline constexpr uint64_t kVirtioMmioSize = 0x200;
inline constexpr unsigned kFirstVirtioSpi = 33;  // GUEST_VIRTIO_MMIO_SPI_FIRST

struct BackendArgs {
  bool help = false;
  std::optional<DomId> domid;
  GuestArch arch = GuestArch::kX86;
  std::vector<DeviceSpec> devices;
  std::vector<GuestRamBank> ram;
  std::string claims_dir = "/run/xen-virtio-backend";
  bool print_placement = false;
  // Fork a guardian that reaps the ioreq server if we die (guardian.h).
  bool guardian = true;
};

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view spec);
absl::StatusOr<BackendArgs> ParseArgs(int argc, const char* const* argv);
std::string Usage();
// Fills in addr/irq of unpinned devices, checks pinned ones.
absl::Status ResolvePlacement(GuestArch arch, std::vector<DeviceSpec>& devices);
// One line per device: "blk0 virtio-mmio 0x2000000-0x20001ff irq 33".
std::string PlacementString(const std::vector<DeviceSpec>& devices);
absl::StatusOr<uint64_t> ParseSize(std::string_view s);

}  // namespace virtio::xg

#endif  // XEN_GLUE_DEVICE_SPEC_H_
