// glue/kvm/guest/main.cc — the virtio-kvm test guest.
//
// A freestanding 32-bit program (flat protected mode, no paging) that finds
// the devices the VMM lists in BootInfo (virtio-mmio: magic/version/ID at
// the given base; virtio-pci: a scan of bus 0 for vendor 0x1af4), brings
// each up as Linux does and exercises it, printing one line per check on
// the UART and reporting the number of failures on the exit port.
//
// Adding a device type: see device_checks.h.
//
// Runs at ~1.5M instructions/s under the nested KVM here, so it is small:
// rings of 16 entries, a handful of requests per check.
//
// Files: runtime.* (entry, interrupts, timer, DMA memory), virtio_guest.*
// (the driver), check.* (report lines), check_helpers.* and blk_request.*
// (shared by the checks), check_<type>.cc (one per device type), and this
// file: discovery and the run.
#include <cstdint>

#include "boot_info.h"
#include "guest/check.h"
#include "guest/device_checks.h"
#include "guest/hw.h"
#include "guest/runtime.h"
#include "guest/virtio_guest.h"
#include "virtio/spec.h"

namespace guest {
namespace {

using kvmglue::BootDevice;

// --- Discovery ---------------------------------------------------------------
const char* DeviceName(uint32_t id) {
  switch (id) {
    case spec::kDeviceIdEntropy:
      return "rng";
    case spec::kDeviceIdBlock:
      return "blk";
    case spec::kDeviceIdNet:
      return "net";
    case spec::kDeviceIdConsole:
      return "console";
    default:
      return "unknown";
  }
}

bool ProbeMmio(Dev& d, const BootDevice& b) {
  d.base = b.addr;
  if (mmio_read32(d.base + mmio::kMagicValue) != mmio::kMagic) return false;
  if (mmio_read32(d.base + mmio::kVersion) != mmio::kVersion2) return false;
  d.device_id = mmio_read32(d.base + mmio::kDeviceId);
  return d.device_id != 0;
}

// Scans bus 0 for virtio functions, as a PCI core would, and checks the
// VMM's list against what is found.
uint32_t ScanPci() {
  uint32_t found = 0;
  for (uint32_t slot = 0; slot < 32; ++slot) {
    const uint32_t id = PciRead32(slot << 3, 0);
    if ((id & 0xffff) == pci::kVendorId && (id >> 16) >= pci::kDeviceIdBase) {
      ++found;
    }
  }
  return found;
}

void RunDevice(Dev& d) {
  switch (d.device_id) {
    case spec::kDeviceIdEntropy:
      TestRng(d);
      break;
    case spec::kDeviceIdBlock:
      TestBlk(d);
      break;
    case spec::kDeviceIdNet:
      TestNet(d);
      return;  // no hostile variant for net / console yet
    case spec::kDeviceIdConsole:
      TestConsole(d);
      return;
    default:
      puts("SKIP ");
      puts(g_dev_name);
      puts(": no guest test for this device type yet\n");
      return;
  }
  if (g_flags & kvmglue::kFlagHostile) TestHostile(d);
}

}  // namespace
}  // namespace guest

extern "C" void guest_main() {
  using namespace guest;
  puts("guest: libvirtio virtio-kvm test guest\n");
  const auto* info =
      reinterpret_cast<const kvmglue::BootInfo*>(kvmglue::kBootInfoAddr);
  if (info->magic != kvmglue::kBootInfoMagic ||
      info->version != kvmglue::kBootInfoVersion ||
      info->num_devices > kvmglue::kMaxBootDevices) {
    puts("FAIL guest: no valid BootInfo\n");
    exit_vm(1);
  }
  g_flags = info->flags;
  InitHeap(info->ram_size);
  SetUpIdt();
  sti();

  uint32_t pci_listed = 0;
  for (uint32_t i = 0; i < info->num_devices; ++i) {
    const kvmglue::BootDevice& b = info->devices[i];
    Dev& d = g_devs[g_num_devs];
    d.index = g_num_devs;
    d.transport = b.transport;
    d.irq = b.irq;
    d.readonly = b.flags & kvmglue::kDeviceReadOnly;
    g_dev_name = "guest";
    bool ok;
    if (b.transport == kvmglue::kBootMmio) {
      ok = ProbeMmio(d, b);
    } else {
      ++pci_listed;
      ok = d.PciProbe(b, !(g_flags & kvmglue::kFlagIntx));
      if (ok)
        d.device_id = PciRead16(d.bdf, pci::kCfgDeviceId) - pci::kDeviceIdBase;
    }
    Check(ok, b.transport == kvmglue::kBootMmio ? "probe virtio-mmio device"
                                                : "probe virtio-pci function");
    if (!ok) continue;
    if (!Poll()) d.SetUpInterrupts(!(g_flags & kvmglue::kFlagIntx));
    ++g_num_devs;
  }
  if (pci_listed) {
    g_dev_name = "guest";
    Check(ScanPci() == pci_listed, "PCI bus scan finds every listed function");
  }
  for (uint32_t i = 0; i < g_num_devs; ++i) {
    Dev& d = g_devs[i];
    g_dev_name = DeviceName(d.device_id);
    puts("---- ");
    puts(g_dev_name);
    puts(d.transport == kvmglue::kBootMmio ? " (virtio-mmio @"
                                           : " (virtio-pci BAR0 @");
    puthex(d.transport == kvmglue::kBootMmio ? d.base : d.bar);
    puts(d.transport == kvmglue::kBootPci && d.msix ? ", MSI-X" : "");
    if (!Poll() && !(d.transport == kvmglue::kBootPci && d.msix)) {
      puts(", irq ");
      putdec(d.irq);
    }
    puts(Poll() ? ", polling)\n" : ")\n");
    RunDevice(d);
  }
  g_dev_name = "guest";
  puts("guest: ");
  putdec(g_checks);
  puts(" checks, ");
  putdec(g_failures);
  puts(" failed (");
  putdec(g_ticks);
  puts(" timer ticks)\n");
  exit_vm(g_failures);
}
