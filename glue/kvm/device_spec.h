// glue/kvm/device_spec.h — `--device` parsing and placement for virtio-kvm.
//
// The syntax is the one every libvirtio glue binary shares (see
// ../shared/design.md):
//
//   --device rng[,id=rng0][,transport=mmio|pci][,addr=...][,irq=N]
//   --device blk,path=disk.img[,readonly=on][,queues=N][,id=...][,transport=...]...
//   --device net[,backend=loopback|tap][,ifname=tap0][,id=...]...
//   --device console[,backend=stdio|pty|socket=PATH|file=PATH][,id=...]...
//
// `addr=` pins the guest-visible address: a virtio-mmio base (hex, e.g.
// 0xd0000000) or a PCI function "bus:slot.fn" (e.g. 00:03.0, which implies
// transport=pci). `irq=` pins the interrupt line (IOAPIC pin / GSI 5..23;
// for PCI the INTx line). `packed=off` offers the split ring only (every
// type). Anything not given is assigned by ResolvePlacement
// in command-line order, and FormatPlacement prints the result as `--device`
// arguments a user can paste back to keep the layout stable.
#ifndef LIBVIRTIO_GLUE_KVM_DEVICE_SPEC_H_
#define LIBVIRTIO_GLUE_KVM_DEVICE_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvmglue {

enum class TransportKind { kMmio, kPci };

struct PciAddress {
  uint8_t bus = 0;
  uint8_t slot = 0;
  uint8_t fn = 0;
  bool operator==(const PciAddress&) const = default;
  uint32_t bdf() const {
    return (uint32_t{bus} << 8) | (uint32_t{slot} << 3) | fn;
  }
};

struct DeviceSpec {
  std::string type;  // "rng", "blk", "net", "console"
  std::string id;    // unique; default <type><n>
  std::optional<TransportKind> transport;
  std::optional<uint64_t> mmio_addr;
  std::optional<PciAddress> pci_addr;
  std::optional<uint32_t> irq;
  // Offer VIRTIO_F_RING_PACKED (a driver that supports both, as Linux does,
  // takes the packed ring when offered).
  bool packed = true;
  // blk: the image; console: the socket or file of backend=socket/file
  std::string path;
  bool readonly = false;
  uint16_t queues = 1;  // blk: request queues (MQ when > 1)
  // net: "loopback" (default) or "tap"; console: "stdio" (default), "pty",
  // "socket" or "file"
  std::string backend;
  std::string ifname;  // net,backend=tap: interface name ("" = kernel picks)
};

// Parses one --device argument.
absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view arg);

// Where a device ended up.
struct Placement {
  std::string id;
  std::string type;
  TransportKind transport = TransportKind::kMmio;
  uint64_t mmio_addr = 0;  // mmio: region base
  PciAddress pci;          // pci: function
  uint64_t bar_addr = 0;   // pci: BAR0 (filled in once the BAR size is known)
  uint32_t irq = 0;        // mmio line or PCI INTx line
};

struct PlacementLimits {
  uint64_t ram_size = 0;  // mmio bases must lie above RAM
  TransportKind default_transport = TransportKind::kMmio;
};

// Assigns ids, transports, addresses and IRQs; fills in defaults in place.
// Fails on duplicates, overlaps, out-of-window addresses and bad IRQs.
absl::StatusOr<std::vector<Placement>> ResolvePlacement(
    std::vector<DeviceSpec>& specs, const PlacementLimits& limits);

// Places PCI BARs (naturally aligned, in device order) in the PCI window.
// `bar_sizes[i]` is the BAR size of placements[i] (ignored for mmio).
absl::Status PlaceBars(std::vector<Placement>& placements,
                       const std::vector<uint64_t>& bar_sizes);

// "--device rng,id=rng0,transport=mmio,addr=0xd0000000,irq=5"
std::string FormatPlacement(const Placement& p, const DeviceSpec& spec);

std::string FormatPciAddress(const PciAddress& a);

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_DEVICE_SPEC_H_
