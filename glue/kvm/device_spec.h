// glue/kvm/device_spec.h — `--device` parsing and placement for virtio-kvm.
//
// The syntax is the device catalogue's (virtio/catalog/device_spec.h,
// docs/devices.md), shared with vhost-user-device and xen-virtio-backend:
//
//   --device rng[,id=rng0][,packed=off]...
//   --device blk,path=disk.img[,readonly=on][,num-queues=N]...
//   --device net[,backend=loopback|tap][,ifname=tap0][,mac=...]...
//   --device console[,backend=stdio|pty|socket=PATH|file=PATH]...
//
// plus virtio-kvm's own keys, where the device sits:
//
//   [,transport=mmio|pci][,addr=...][,irq=N]
//
// `addr=` pins the guest-visible address: a virtio-mmio base (hex, e.g.
// 0xd0000000) or a PCI function "bus:slot.fn" (e.g. 00:03.0, which implies
// transport=pci). `irq=` pins the interrupt line (IOAPIC pin / GSI 5..23;
// for PCI the INTx line). Anything not given is assigned by ResolvePlacement
// in command-line order, and FormatPlacement prints the result as `--device`
// arguments a user can paste back to keep the layout stable.
//
// What virtio-kvm cannot build is refused here, with the reason: net
// backends other than loopback and tap, more than one net queue pair, more
// than 16 blk request queues.
#ifndef LIBVIRTIO_GLUE_KVM_DEVICE_SPEC_H_
#define LIBVIRTIO_GLUE_KVM_DEVICE_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "virtio/catalog/device_spec.h"
#include "virtio/catalog/spec_values.h"

namespace kvmglue {

enum class TransportKind { kMmio, kPci };

using PciAddress = virtio::catalog::PciAddress;

// Most blk request queues virtio-kvm serves (the catalogue allows 64).
inline constexpr uint16_t kMaxBlkQueues = 16;

struct DeviceSpec {
  // The shared keys (backend, path, packed, ...).
  virtio::catalog::DeviceSpec device;
  std::string type;  // "rng", "blk", "net", "console"
  std::string id;    // unique; default <type><n>
  std::optional<TransportKind> transport;
  std::optional<uint64_t> mmio_addr;
  std::optional<PciAddress> pci_addr;
  std::optional<uint32_t> irq;
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

// "00:03.0".
using virtio::catalog::FormatPciAddress;

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_DEVICE_SPEC_H_
