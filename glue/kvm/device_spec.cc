#include "device_spec.h"

#include <algorithm>
#include <map>
#include <set>

#include <charconv>

#include "absl/strings/str_format.h"
#include "boot_info.h"

namespace kvmglue {
namespace {

constexpr uint64_t kMmioRegionSize = 0x200;  // MmioTransport::kRegionSize

// Whole-string unsigned parse in `base`.
template <typename T>
bool ParseUnsigned(std::string_view s, int base, T* out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && end == s.data() + s.size();
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s = s.substr(at + 1);
  }
}

absl::StatusOr<bool> ParseBool(std::string_view key, std::string_view v) {
  if (v == "on" || v == "true" || v == "1" || v == "yes") return true;
  if (v == "off" || v == "false" || v == "0" || v == "no") return false;
  return absl::InvalidArgumentError(
      absl::StrFormat("%s=%s: expected on/off", key, v));
}

absl::StatusOr<uint64_t> ParseNumber(std::string_view key, std::string_view v) {
  uint64_t n = 0;
  bool ok = false;
  if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
    ok = ParseUnsigned(v.substr(2), 16, &n);
  } else {
    ok = ParseUnsigned(v, 10, &n);
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s=%s: not a number", key, v));
  }
  return n;
}

// "bus:slot.fn" with hex fields, e.g. 00:03.0 (bus optional: "03.0").
absl::StatusOr<PciAddress> ParsePci(std::string_view v) {
  PciAddress a;
  std::string_view rest = v;
  const size_t colon = rest.find(':');
  uint32_t bus = 0, slot = 0, fn = 0;
  if (colon != std::string_view::npos) {
    if (!ParseUnsigned(rest.substr(0, colon), 16, &bus)) {
      return absl::InvalidArgumentError(absl::StrFormat("addr=%s: bad bus", v));
    }
    rest = rest.substr(colon + 1);
  }
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos ||
      !ParseUnsigned(rest.substr(0, dot), 16, &slot) ||
      !ParseUnsigned(rest.substr(dot + 1), 16, &fn)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("addr=%s: expected bus:slot.fn", v));
  }
  if (bus != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("addr=%s: only bus 0 exists", v));
  }
  if (slot == 0 || slot > 31) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "addr=%s: slot must be 1..1f (slot 0 is the host bridge)", v));
  }
  if (fn != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("addr=%s: only function 0 is supported", v));
  }
  a.bus = static_cast<uint8_t>(bus);
  a.slot = static_cast<uint8_t>(slot);
  a.fn = static_cast<uint8_t>(fn);
  return a;
}

}  // namespace

std::string FormatPciAddress(const PciAddress& a) {
  return absl::StrFormat("%02x:%02x.%x", a.bus, a.slot, a.fn);
}

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view arg) {
  std::vector<std::string_view> parts = Split(arg, ',');
  DeviceSpec spec;
  spec.type = std::string(parts[0]);
  if (spec.type != "rng" && spec.type != "blk" && spec.type != "net" &&
      spec.type != "console") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--device %s: unknown or unsupported device type '%s' (rng, blk, net, "
        "console)",
        arg, spec.type));
  }
  if (spec.type == "net") spec.backend = "loopback";
  if (spec.type == "console") spec.backend = "stdio";
  std::string_view addr;
  for (size_t i = 1; i < parts.size(); ++i) {
    std::string_view kv = parts[i];
    const size_t eq = kv.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--device %s: '%s' is not key=value", arg, kv));
    }
    std::string_view key = kv.substr(0, eq);
    std::string_view value = kv.substr(eq + 1);
    if (key == "backend" && spec.type == "console" &&
        (value.starts_with("socket=") || value.starts_with("file="))) {
      const size_t eq2 = value.find('=');
      key = value.substr(0, eq2);
      value = value.substr(eq2 + 1);
    }
    if (key == "id") {
      if (value.empty()) return absl::InvalidArgumentError("id= is empty");
      spec.id = std::string(value);
    } else if (key == "transport") {
      if (value == "mmio") {
        spec.transport = TransportKind::kMmio;
      } else if (value == "pci") {
        spec.transport = TransportKind::kPci;
      } else {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--device %s: transport=%s (mmio or pci)", arg, value));
      }
    } else if (key == "addr") {
      addr = value;
    } else if (key == "irq") {
      absl::StatusOr<uint64_t> n = ParseNumber(key, value);
      if (!n.ok()) return n.status();
      if (*n < kFirstDeviceIrq || *n > kLastDeviceIrq) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--device %s: irq=%u not in %u..%u", arg, *n, kFirstDeviceIrq,
            kLastDeviceIrq));
      }
      spec.irq = static_cast<uint32_t>(*n);
    } else if (key == "packed") {
      absl::StatusOr<bool> b = ParseBool(key, value);
      if (!b.ok()) return b.status();
      spec.packed = *b;
    } else if (key == "path" && spec.type == "blk") {
      spec.path = std::string(value);
    } else if (key == "readonly" && spec.type == "blk") {
      absl::StatusOr<bool> b = ParseBool(key, value);
      if (!b.ok()) return b.status();
      spec.readonly = *b;
    } else if (key == "queues" && spec.type == "blk") {
      absl::StatusOr<uint64_t> n = ParseNumber(key, value);
      if (!n.ok()) return n.status();
      if (*n < 1 || *n > 16) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--device %s: queues=%u not in 1..16", arg, *n));
      }
      spec.queues = static_cast<uint16_t>(*n);
    } else if (key == "backend" && spec.type == "net") {
      if (value != "loopback" && value != "tap") {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--device %s: backend=%s (loopback or tap)", arg, value));
      }
      spec.backend = std::string(value);
    } else if (key == "ifname" && spec.type == "net") {
      spec.ifname = std::string(value);
    } else if (key == "backend" && spec.type == "console") {
      if (value == "stdio" || value == "pty") {
        spec.backend = std::string(value);
      } else {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--device %s: backend=%s (stdio, pty, socket=PATH or file=PATH)",
            arg, value));
      }
    } else if ((key == "socket" || key == "file") && spec.type == "console") {
      // backend=socket=PATH splits as key "backend", value "socket=PATH";
      // accept both that and the short socket=PATH / file=PATH.
      if (value.empty()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--device %s: %s= needs a path", arg, key));
      }
      spec.backend = std::string(key);
      spec.path = std::string(value);
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--device %s: unknown option '%s' for %s", arg, key, spec.type));
    }
  }
  if (!addr.empty()) {
    const bool looks_pci = addr.find(':') != std::string_view::npos ||
                           (addr.find('.') != std::string_view::npos);
    if (looks_pci || spec.transport == TransportKind::kPci) {
      if (spec.transport == TransportKind::kMmio) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--device %s: a PCI address with transport=mmio", arg));
      }
      absl::StatusOr<PciAddress> a = ParsePci(addr);
      if (!a.ok()) return a.status();
      spec.pci_addr = *a;
      spec.transport = TransportKind::kPci;
    } else {
      absl::StatusOr<uint64_t> n = ParseNumber("addr", addr);
      if (!n.ok()) return n.status();
      spec.mmio_addr = *n;
      spec.transport = TransportKind::kMmio;
    }
  }
  if (spec.type == "blk" && spec.path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--device %s: blk needs path=", arg));
  }
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
        return absl::InvalidArgumentError(absl::StrFormat(
            "addr=0x%x: virtio-mmio bases are 0x%x-aligned", a,
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
      return absl::InvalidArgumentError(absl::StrFormat(
          "PCI address %s given to two devices", FormatPciAddress(*s.pci_addr)));
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
      while (next_irq <= kLastDeviceIrq && irqs.count(next_irq)) ++next_irq;
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
        s.pci_addr = PciAddress{0, static_cast<uint8_t>(next_slot), 0};
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
  std::string s = absl::StrFormat("--device %s,id=%s", p.type, p.id);
  if (p.type == "blk") {
    s += absl::StrFormat(",path=%s%s", spec.path,
                         spec.readonly ? ",readonly=on" : "");
    if (spec.queues > 1) s += absl::StrFormat(",queues=%u", spec.queues);
  } else if (p.type == "net") {
    s += ",backend=" + spec.backend;
    if (!spec.ifname.empty()) s += ",ifname=" + spec.ifname;
  } else if (p.type == "console") {
    s += ",backend=" + spec.backend;
    if (!spec.path.empty()) s += "=" + spec.path;
  }
  if (!spec.packed) s += ",packed=off";
  if (p.transport == TransportKind::kMmio) {
    s += absl::StrFormat(",transport=mmio,addr=0x%x,irq=%u", p.mmio_addr,
                         p.irq);
  } else {
    s += absl::StrFormat(",transport=pci,addr=%s,irq=%u   # BAR0 0x%x",
                         FormatPciAddress(p.pci), p.irq, p.bar_addr);
  }
  return s;
}

}  // namespace kvmglue
