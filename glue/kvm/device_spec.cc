#include "device_spec.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>

#include "absl/strings/str_format.h"
#include "boot_info.h"

namespace kvmglue {
namespace {

using virtio::catalog::DeviceType;
using virtio::catalog::SpecReader;

constexpr uint64_t kMmioRegionSize = 0x200;  // MmioTransport::kRegionSize

// virtio-kvm's own keys: transport=, addr=, irq=.
absl::Status ReadPlacementKeys(SpecReader& reader, DeviceSpec& spec) {
  absl::StatusOr<std::optional<std::string>> transport =
      reader.Choice({.name = "transport"}, {"mmio", "pci"});
  if (!transport.ok()) return transport.status();
  if (*transport) {
    spec.transport =
        **transport == "pci" ? TransportKind::kPci : TransportKind::kMmio;
  }
  absl::StatusOr<std::optional<uint64_t>> irq =
      reader.Integer({.name = "irq"}, kFirstDeviceIrq, kLastDeviceIrq);
  if (!irq.ok()) return irq.status();
  if (*irq) spec.irq = static_cast<uint32_t>(**irq);
  absl::StatusOr<std::optional<std::string>> addr =
      reader.Text({.name = "addr"});
  if (!addr.ok()) return addr.status();
  if (!*addr) return absl::OkStatus();
  if (virtio::catalog::LooksLikePciAddress(**addr) ||
      spec.transport == TransportKind::kPci) {
    if (spec.transport == TransportKind::kMmio) {
      return reader.Error("a PCI address with transport=mmio");
    }
    absl::StatusOr<std::optional<PciAddress>> pci =
        reader.Pci({.name = "addr"});
    if (!pci.ok()) return pci.status();
    const PciAddress& a = **pci;
    if (a.segment != 0 || a.bus != 0) {
      return reader.Error(
          absl::StrFormat("addr=%s: only bus 0 exists", **addr));
    }
    if (a.slot == 0) {
      return reader.Error(absl::StrFormat(
          "addr=%s: slot must be 1..1f (slot 0 is the host bridge)", **addr));
    }
    if (a.function != 0) {
      return reader.Error(
          absl::StrFormat("addr=%s: only function 0 is supported", **addr));
    }
    spec.pci_addr = a;
    spec.transport = TransportKind::kPci;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<uint64_t>> base =
      reader.Integer({.name = "addr"}, 0, UINT64_MAX);
  if (!base.ok()) return base.status();
  spec.mmio_addr = **base;
  spec.transport = TransportKind::kMmio;
  return absl::OkStatus();
}

// What the catalogue allows and virtio-kvm does not build (yet).
absl::Status CheckSupported(const SpecReader& reader,
                            const virtio::catalog::DeviceSpec& d) {
  if (d.type == DeviceType::kBlk && d.blk.num_queues > kMaxBlkQueues) {
    return reader.Error(absl::StrFormat(
        "virtio-kvm serves at most %u blk request queues", kMaxBlkQueues));
  }
  if (d.type == DeviceType::kNet) {
    if (d.net.backend != virtio::catalog::NetBackendKind::kLoopback &&
        d.net.backend != virtio::catalog::NetBackendKind::kTap) {
      return reader.Error(
          absl::StrFormat("virtio-kvm has no net backend=%s (loopback, tap)",
                          virtio::catalog::BackendName(d.net.backend)));
    }
    if (d.net.queue_pairs != 1) {
      return reader.Error("virtio-kvm serves one net queue pair");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view arg) {
  DeviceSpec spec;
  absl::StatusOr<virtio::catalog::DeviceSpec> device =
      virtio::catalog::ParseDeviceSpec(
          arg, [&](SpecReader& reader, const virtio::catalog::DeviceSpec& d) {
            if (absl::Status s = CheckSupported(reader, d); !s.ok()) return s;
            return ReadPlacementKeys(reader, spec);
          });
  if (!device.ok()) return device.status();
  spec.device = *std::move(device);
  spec.type = std::string(virtio::catalog::DeviceTypeName(spec.device.type));
  spec.id = spec.device.id;
  return spec;
}

absl::StatusOr<std::vector<Placement>> ResolvePlacement(
    std::vector<DeviceSpec>& specs, const PlacementLimits& limits) {
  if (specs.size() > kMaxBootDevices) {
    return absl::InvalidArgumentError(
        absl::StrFormat("at most %u devices", kMaxBootDevices));
  }
  std::set<std::string> ids;
  std::set<uint32_t> irqs;
  std::set<uint64_t> mmio_bases;
  std::set<uint32_t> slots;
  // Pinned resources first, so automatic ones avoid them.
  for (DeviceSpec& s : specs) {
    if (!s.transport) s.transport = limits.default_transport;
    if (s.irq && !irqs.insert(*s.irq).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("irq %u given to two devices", *s.irq));
    }
    if (s.mmio_addr) {
      const uint64_t a = *s.mmio_addr;
      if (a % kMmioRegionSize != 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("addr=0x%x: virtio-mmio bases are 0x%x-aligned", a,
                            kMmioRegionSize));
      }
      if (a < limits.ram_size || a < kMmioWindowBase ||
          a + kMmioRegionSize > kMmioWindowEnd) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "addr=0x%x: outside the virtio-mmio window [0x%x, 0x%x) or "
            "inside RAM",
            a, kMmioWindowBase, kMmioWindowEnd));
      }
      for (uint64_t b : mmio_bases) {
        if (a < b + kMmioRegionSize && b < a + kMmioRegionSize) {
          return absl::InvalidArgumentError(
              absl::StrFormat("addr=0x%x overlaps the device at 0x%x", a, b));
        }
      }
      mmio_bases.insert(a);
    }
    if (s.pci_addr && !slots.insert(s.pci_addr->slot).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("PCI address %s given to two devices",
                          FormatPciAddress(*s.pci_addr)));
    }
  }
  std::vector<Placement> out;
  std::map<std::string, int> per_type;
  uint32_t next_irq = kFirstDeviceIrq;
  uint64_t next_mmio = kMmioWindowBase;
  uint32_t next_slot = 1;
  for (DeviceSpec& s : specs) {
    if (s.id.empty()) {
      do {
        s.id = absl::StrFormat("%s%d", s.type, per_type[s.type]++);
      } while (ids.count(s.id) != 0);
    }
    if (!ids.insert(s.id).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("device id '%s' used twice", s.id));
    }
    if (!s.irq) {
      // IRQ 8 is the RTC's on a PC: Linux's rtc_cmos claims it as an edge
      // interrupt, which a level-triggered device line could not share.
      while (next_irq <= kLastDeviceIrq &&
             (irqs.count(next_irq) || next_irq == kRtcIrq)) {
        ++next_irq;
      }
      if (next_irq > kLastDeviceIrq) {
        return absl::ResourceExhaustedError("out of interrupt lines");
      }
      s.irq = next_irq;
      irqs.insert(next_irq);
    }
    Placement p;
    p.id = s.id;
    p.type = s.type;
    p.transport = *s.transport;
    p.irq = *s.irq;
    if (p.transport == TransportKind::kMmio) {
      if (!s.mmio_addr) {
        auto overlaps = [&](uint64_t a) {
          for (uint64_t b : mmio_bases) {
            if (a < b + kMmioRegionSize && b < a + kMmioRegionSize) return true;
          }
          return false;
        };
        while (next_mmio < limits.ram_size || overlaps(next_mmio)) {
          next_mmio += kMmioSlotStride;
        }
        if (next_mmio + kMmioRegionSize > kMmioWindowEnd) {
          return absl::ResourceExhaustedError("virtio-mmio window is full");
        }
        s.mmio_addr = next_mmio;
        mmio_bases.insert(next_mmio);
      }
      p.mmio_addr = *s.mmio_addr;
    } else {
      if (!s.pci_addr) {
        while (next_slot <= 31 && slots.count(next_slot)) ++next_slot;
        if (next_slot > 31) {
          return absl::ResourceExhaustedError("PCI bus 0 is full");
        }
        s.pci_addr = PciAddress{.slot = static_cast<uint8_t>(next_slot)};
        slots.insert(next_slot);
      }
      p.pci = *s.pci_addr;
    }
    out.push_back(p);
  }
  return out;
}

absl::Status PlaceBars(std::vector<Placement>& placements,
                       const std::vector<uint64_t>& bar_sizes) {
  uint64_t next = kPciWindowBase;
  for (size_t i = 0; i < placements.size(); ++i) {
    Placement& p = placements[i];
    if (p.transport != TransportKind::kPci) continue;
    const uint64_t size = bar_sizes.at(i);
    if (size == 0 || (size & (size - 1)) != 0) {
      return absl::InternalError(absl::StrFormat("BAR size 0x%x", size));
    }
    next = (next + size - 1) & ~(size - 1);
    if (next + size > kPciWindowEnd) {
      return absl::ResourceExhaustedError("PCI memory window is full");
    }
    p.bar_addr = next;
    next += size;
  }
  return absl::OkStatus();
}

std::string FormatPlacement(const Placement& p, const DeviceSpec& spec) {
  virtio::catalog::DeviceSpec device = spec.device;
  device.id = p.id;
  std::string s = "--device " + virtio::catalog::FormatDeviceSpec(device);
  if (p.transport == TransportKind::kMmio) {
    s +=
        absl::StrFormat(",transport=mmio,addr=0x%x,irq=%u", p.mmio_addr, p.irq);
  } else {
    s += absl::StrFormat(",transport=pci,addr=%s,irq=%u   # BAR0 0x%x",
                         FormatPciAddress(p.pci), p.irq, p.bar_addr);
  }
  return s;
}

}  // namespace kvmglue
