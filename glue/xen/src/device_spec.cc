// src/device_spec.cc — see xen_glue/device_spec.h.
#include "xen_glue/device_spec.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace virtio::xg {

namespace {

absl::StatusOr<uint64_t> ParseNumber(std::string_view s,
                                     std::string_view what) {
  uint64_t v = 0;
  std::string str(s);
  char* end = nullptr;
  errno = 0;
  v = std::strtoull(str.c_str(), &end, 0);
  if (str.empty() || errno != 0 || end == nullptr || *end != '\0' ||
      str[0] == '-') {
    return absl::InvalidArgumentError(absl::StrFormat("bad %s '%s'", what, s));
  }
  return v;
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(std::string_view s) {
  if (s.empty()) return absl::InvalidArgumentError("empty size");
  uint64_t mult = 1;
  const char last = s.back();
  if (last == 'K' || last == 'k') mult = 1ull << 10;
  if (last == 'M' || last == 'm') mult = 1ull << 20;
  if (last == 'G' || last == 'g') mult = 1ull << 30;
  if (mult != 1) s.remove_suffix(1);
  auto v = ParseNumber(s, "size");
  if (!v.ok()) return v.status();
  if (*v > ~uint64_t{0} / mult)
    return absl::InvalidArgumentError("size overflows");
  return *v * mult;
}

namespace {

using catalog::SpecReader;

// What the catalogue allows and this backend does not build (yet): refused
// here rather than ignored.
absl::Status CheckSupported(const SpecReader& reader,
                            const catalog::DeviceSpec& d) {
  auto unsupported = [&](std::string_view what) {
    return reader.Error(
        absl::StrFormat("xen-virtio-backend does not support %s yet", what));
  };
  if (d.queue_size) return unsupported("queue-size=");
  switch (d.type) {
    case catalog::DeviceType::kBlk:
      if (d.blk.backend != catalog::BlockBackendKind::kFile) {
        return unsupported(absl::StrFormat(
            "blk backend=%s", catalog::BackendName(d.blk.backend)));
      }
      if (d.blk.direct) return unsupported("direct=");
      if (d.blk.num_queues != 1) return unsupported("num-queues=");
      if (!d.blk.serial.empty()) return unsupported("serial=");
      break;
    case catalog::DeviceType::kNet:
      if (d.net.backend != catalog::NetBackendKind::kLoopback &&
          d.net.backend != catalog::NetBackendKind::kTap) {
        return unsupported(
            absl::StrFormat("net backend=%s (tap, loopback)",
                            catalog::BackendName(d.net.backend)));
      }
      if (d.net.mac) return unsupported("mac=");
      if (d.net.mtu != 0) return unsupported("mtu=");
      if (d.net.queue_pairs != 1) return unsupported("queue-pairs=");
      if (!d.net.ctrl_vq) return unsupported("ctrl-vq=off");
      break;
    case catalog::DeviceType::kRng:
      if (d.rng.rate != 0) return unsupported("rate=");
      break;
    case catalog::DeviceType::kConsole:
      break;
  }
  return absl::OkStatus();
}

// The backend's own keys: where the device sits (transport=, addr=, irq=),
// how it interrupts (msix=) and how it reaches guest memory (grant=).
absl::Status ReadXenKeys(SpecReader& reader, DeviceSpec& d) {
  absl::StatusOr<std::optional<std::string>> transport =
      reader.Choice({.name = "transport"}, {"mmio", "pci"});
  if (!transport.ok()) return transport.status();
  if (*transport) d.pci = **transport == "pci";
  absl::StatusOr<std::optional<bool>> grant = reader.Bool({.name = "grant"});
  if (!grant.ok()) return grant.status();
  d.grant = grant->value_or(false);
  absl::StatusOr<std::optional<bool>> msix = reader.Bool({.name = "msix"});
  if (!msix.ok()) return msix.status();
  d.msix = msix->value_or(true);
  absl::StatusOr<std::optional<uint64_t>> irq =
      reader.Integer({.name = "irq"}, 0, 1023);
  if (!irq.ok()) return irq.status();
  if (*irq) d.irq = static_cast<unsigned>(**irq);
  absl::StatusOr<std::optional<std::string>> addr =
      reader.Text({.name = "addr"});
  if (!addr.ok()) return addr.status();
  if (*addr) {
    if (catalog::LooksLikePciAddress(**addr)) {
      absl::StatusOr<std::optional<catalog::PciAddress>> pci =
          reader.Pci({.name = "addr"});
      if (!pci.ok()) return pci.status();
      const catalog::PciAddress& a = **pci;
      d.pci = true;
      d.pci_addr = PciAddr{a.segment, a.bus, a.slot, a.function};
    } else {
      absl::StatusOr<std::optional<uint64_t>> base =
          reader.Integer({.name = "addr"}, 0, UINT64_MAX);
      if (!base.ok()) return base.status();
      d.mmio_base = **base;
    }
  }
  if (d.pci && d.grant) {
    return reader.Error(
        "grant=on is virtio-mmio only for now (libvirtio cannot yet offer "
        "ACCESS_PLATFORM through virtio-pci)");
  }
  if (d.pci && d.mmio_base) {
    return reader.Error("an MMIO addr= needs transport=mmio");
  }
  if (!d.pci && !d.msix) return reader.Error("msix=off is for virtio-pci");
  if (d.pci && d.irq) {
    return reader.Error("irq= is for virtio-mmio; virtio-pci uses MSI-X/INTx");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view spec) {
  DeviceSpec d;
  absl::StatusOr<catalog::DeviceSpec> device = catalog::ParseDeviceSpec(
      spec, [&](SpecReader& reader, const catalog::DeviceSpec& shared) {
        if (absl::Status s = CheckSupported(reader, shared); !s.ok()) return s;
        return ReadXenKeys(reader, d);
      });
  if (!device.ok()) return device.status();
  d.device = *std::move(device);
  // The fields Backend reads, from the shared spec.
  d.id = d.device.id;
  d.packed = d.device.packed;
  switch (d.device.type) {
    case catalog::DeviceType::kBlk:
      d.type = DeviceType::kBlk;
      d.path = d.device.blk.path;
      d.readonly = d.device.blk.readonly;
      break;
    case catalog::DeviceType::kRng:
      d.type = DeviceType::kRng;
      break;
    case catalog::DeviceType::kConsole:
      d.type = DeviceType::kConsole;
      d.backend = std::string(catalog::BackendName(d.device.console.backend));
      d.path = d.device.console.path;
      break;
    case catalog::DeviceType::kNet:
      d.type = DeviceType::kNet;
      d.backend = std::string(catalog::BackendName(d.device.net.backend));
      d.ifname = d.device.net.ifname;
      break;
  }
  return d;
}

std::string Usage() {
  return absl::StrFormat(
      "usage: xen-virtio-backend --domid N --device SPEC [--device SPEC ...]\n"
      "                          [--arch arm|x86] [--ram GPA:SIZE ...]\n"
      "                          [--claims-dir DIR] [--print-placement]\n"
      "\n"
      "Serves libvirtio devices to Xen guest N as an ioreq server of its own,\n"
      "alone or beside the guest's QEMU and other backends.\n"
      "\n"
      "  --device SPEC: the shared device syntax (docs/devices.md):\n%s\n"
      "    (here: blk on a file, one queue; net on tap or loopback)\n"
      "    and this backend's own keys, on every type:\n"
      "      [,transport=mmio|pci][,addr=A][,irq=I][,grant=on][,msix=off]\n"
      "      msix=off (virtio-pci): no MSI-X capability, INTx only\n"
      "      grant=on (any device, virtio-mmio): offer ACCESS_PLATFORM and\n"
      "            map grant-reference DMA addresses (Linux xen-grant-dma)\n"
      "      addr: MMIO base (0x2000000) for virtio-mmio, or PCI\n"
      "            [seg:]bus:slot.fn (00:05.0) for virtio-pci (x86)\n"
      "      irq:  SPI (Arm, >= 32) or ISA IRQ (x86 virtio-mmio, 0-15)\n"
      "      unpinned devices get the next free MMIO slot from 0x2000000\n"
      "      (0x200 each) and SPI from 33 / ISA IRQ 5,7,10,11\n"
      "  --arch arm|x86        guest architecture (default: the host's)\n"
      "  --ram GPA:SIZE        a guest RAM bank for foreign mapping (repeat;\n"
      "                        default Arm 0x40000000:3G, x86 0:3G)\n"
      "  --claims-dir DIR      placement claims shared by every backend of\n"
      "                        the domain (default /run/xen-virtio-backend)\n"
      "  --print-placement     print the resolved addr/irq of every device\n"
      "  --no-guardian         no guardian process (see below)\n"
      "  --help                this text\n"
      "\n"
      "Several backends may serve one domain; each claims only its own\n"
      "devices' ranges, and a conflicting claim is refused. SIGTERM/SIGINT\n"
      "tear the ioreq server down cleanly. If the backend dies any other\n"
      "way (SIGKILL, a crash), its guardian, a small child process, answers\n"
      "the guest's pending requests and destroys the ioreq server, so the\n"
      "guest sees the devices vanish instead of hanging.\n",
      catalog::DeviceSpecHelp());
}

absl::StatusOr<BackendArgs> ParseArgs(int argc, const char* const* argv) {
  BackendArgs a;
#if defined(__aarch64__) || defined(__arm__)
  a.arch = GuestArch::kArm;
#else
  a.arch = GuestArch::kX86;
#endif
  bool ram_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> absl::StatusOr<std::string_view> {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s needs a value", arg));
      }
      return std::string_view(argv[++i]);
    };
    if (arg == "--help" || arg == "-h") {
      a.help = true;
      return a;
    } else if (arg == "--domid") {
      auto v = value();
      if (!v.ok()) return v.status();
      auto n = ParseNumber(*v, "--domid");
      if (!n.ok() || *n >= 0x7ff0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("bad --domid '%s'", *v));
      }
      a.domid = static_cast<DomId>(*n);
    } else if (arg == "--device") {
      auto v = value();
      if (!v.ok()) return v.status();
      auto d = ParseDeviceSpec(*v);
      if (!d.ok()) return d.status();
      a.devices.push_back(*d);
    } else if (arg == "--arch") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (*v == "arm") {
        a.arch = GuestArch::kArm;
      } else if (*v == "x86") {
        a.arch = GuestArch::kX86;
      } else {
        return absl::InvalidArgumentError("--arch arm|x86");
      }
    } else if (arg == "--ram") {
      auto v = value();
      if (!v.ok()) return v.status();
      std::pair<std::string, std::string> gs =
          absl::StrSplit(std::string(*v), absl::MaxSplits(':', 1));
      auto gpa = ParseNumber(gs.first, "--ram GPA");
      auto size = ParseSize(gs.second);
      if (!gpa.ok() || !size.ok() || *size == 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("bad --ram '%s' (GPA:SIZE)", *v));
      }
      a.ram.push_back({*gpa, *size});
      ram_given = true;
    } else if (arg == "--claims-dir") {
      auto v = value();
      if (!v.ok()) return v.status();
      a.claims_dir = std::string(*v);
    } else if (arg == "--print-placement") {
      a.print_placement = true;
    } else if (arg == "--no-guardian") {
      a.guardian = false;
    } else {
      return absl::InvalidArgumentError(
          absl::StrFormat("unknown argument '%s' (see --help)", arg));
    }
  }
  if (!a.domid)
    return absl::InvalidArgumentError("--domid N is required (see --help)");
  if (a.devices.empty())
    return absl::InvalidArgumentError("no --device given (see --help)");
  if (!ram_given) {
    if (a.arch == GuestArch::kArm) {
      a.ram.push_back({0x40000000, 3ull << 30});
    } else {
      a.ram.push_back({0, 3ull << 30});
    }
  }
  return a;
}

absl::Status ResolvePlacement(GuestArch arch,
                              std::vector<DeviceSpec>& devices) {
  std::set<uint64_t> bases;
  std::set<unsigned> irqs;
  std::set<uint32_t> sbdfs;
  int n_blk = 0, n_rng = 0, n_con = 0, n_net = 0;
  for (DeviceSpec& d : devices) {
    if (d.id.empty()) {
      switch (d.type) {
        case DeviceType::kBlk:
          d.id = absl::StrCat("blk", n_blk++);
          break;
        case DeviceType::kRng:
          d.id = absl::StrCat("rng", n_rng++);
          break;
        case DeviceType::kConsole:
          d.id = absl::StrCat("console", n_con++);
          break;
        case DeviceType::kNet:
          d.id = absl::StrCat("net", n_net++);
          break;
      }
    }
    if (d.pci && arch == GuestArch::kArm) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: virtio-pci needs an x86 guest (Xen on Arm routes no PCI config "
          "accesses to ioreq servers)",
          d.id));
    }
    if (d.mmio_base) {
      if (*d.mmio_base % kVirtioMmioSize != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: addr=0x%x is not 0x200-aligned", d.id, *d.mmio_base));
      }
      for (uint64_t b : bases) {
        if (b == *d.mmio_base) {
          return absl::AlreadyExistsError(
              absl::StrFormat("%s: addr=0x%x used twice", d.id, *d.mmio_base));
        }
      }
      bases.insert(*d.mmio_base);
    }
    if (d.irq) {
      if (arch == GuestArch::kArm && *d.irq < 32) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: irq=%u is not an SPI (Arm: 32 and up)", d.id, *d.irq));
      }
      if (arch == GuestArch::kX86 && *d.irq > 15) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: irq=%u is not an ISA IRQ (x86: 0-15)", d.id, *d.irq));
      }
      if (!irqs.insert(*d.irq).second) {
        return absl::AlreadyExistsError(
            absl::StrFormat("%s: irq=%u used twice", d.id, *d.irq));
      }
    }
    if (d.pci_addr) {
      const uint32_t s = PciSbdf(d.pci_addr->seg, d.pci_addr->bus,
                                 d.pci_addr->dev, d.pci_addr->fn);
      if (!sbdfs.insert(s).second) {
        return absl::AlreadyExistsError(
            absl::StrFormat("%s: PCI address used twice", d.id));
      }
    }
  }
  uint64_t next_base = kVirtioMmioBase;
  unsigned next_spi = kFirstVirtioSpi;
  const unsigned isa[] = {5, 7, 10, 11};
  size_t next_isa = 0;
  uint8_t next_slot = 0x10;
  for (DeviceSpec& d : devices) {
    if (d.pci) {
      while (!d.pci_addr) {
        if (next_slot > 0x1f)
          return absl::ResourceExhaustedError("no free PCI slot");
        const uint32_t s = PciSbdf(0, 0, next_slot, 0);
        if (sbdfs.insert(s).second) d.pci_addr = PciAddr{0, 0, next_slot, 0};
        ++next_slot;
      }
      continue;
    }
    while (!d.mmio_base) {
      if (next_base >= kVirtioMmioBase + kVirtioMmioWindow) {
        return absl::ResourceExhaustedError(
            "virtio-mmio window 0x2000000+1M is full");
      }
      if (bases.insert(next_base).second) d.mmio_base = next_base;
      next_base += kVirtioMmioSize;
    }
    while (!d.irq) {
      if (arch == GuestArch::kArm) {
        if (irqs.insert(next_spi).second) d.irq = next_spi;
        ++next_spi;
      } else {
        if (next_isa >= std::size(isa)) {
          return absl::ResourceExhaustedError("no free ISA IRQ; pin irq=");
        }
        if (irqs.insert(isa[next_isa]).second) d.irq = isa[next_isa];
        ++next_isa;
      }
    }
  }
  return absl::OkStatus();
}

std::string PlacementString(const std::vector<DeviceSpec>& devices) {
  std::string out;
  for (const DeviceSpec& d : devices) {
    if (d.pci && d.pci_addr) {
      absl::StrAppendFormat(&out, "%s virtio-pci %04x:%02x:%02x.%x\n", d.id,
                            d.pci_addr->seg, d.pci_addr->bus, d.pci_addr->dev,
                            d.pci_addr->fn);
    } else if (d.mmio_base) {
      absl::StrAppendFormat(&out, "%s virtio-mmio addr=0x%x irq=%u\n", d.id,
                            *d.mmio_base, d.irq.value_or(0));
    }
  }
  return out;
}

}  // namespace virtio::xg
