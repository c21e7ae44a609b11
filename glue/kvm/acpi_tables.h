// glue/kvm/acpi_tables.h — the ACPI tables virtio-kvm gives a Linux guest:
// how it finds the vCPUs, the IOAPIC, the PCI host bridge and its INTx
// routes, the virtio-mmio devices, and how it powers the machine off.
//
// Why ACPI: on x86 a guest without firmware can only power off through
// ACPI (the FADT's PM1 control register and the DSDT's \_S5 sleep type); the
// MP table (mptable.h) is enough to boot but not to end a run cleanly. ACPI
// also lets Linux discover virtio-mmio devices (HID "LNRO0005", as QEMU's
// microvm describes them), which Debian's kernel cannot take from its
// command line.
//
// The tables (ACPI 6.x, all in one reserved region the caller provides):
//   RSDP  -> XSDT -> FADT (-> FACS, DSDT), MADT
//   FADT  fixed-hardware ACPI, always in ACPI mode (no SMI_CMD):
//         PM1a event block at kPm1EventPort (4 bytes), PM1a control block at
//         kPm1ControlPort (2 bytes), the SCI on an ISA IRQ no device uses,
//         reset register = 0xcf9 (value 6), no PM timer, no GPE block; boot
//         flags: no VGA, no i8042, ASPM untouched.
//   MADT  one enabled local APIC per vCPU (APIC ID = index), the IOAPIC
//         (ID = vCPU count, GSI base 0), overrides making the SCI and every
//         ISA IRQ a device uses level-triggered, LINT1 = NMI on every CPU.
//   DSDT  \_SB.PCI0 (PNP0A03: bus 0, config ports 0xcf8..0xcff, all other
//         I/O ports, the PCI memory window, and _PRT: each function's INTA#
//         on its GSI); \_SB.VRxx for each virtio-mmio device (LNRO0005,
//         its register window, its level-triggered interrupt); \_S5.
#ifndef LIBVIRTIO_GLUE_KVM_ACPI_TABLES_H_
#define LIBVIRTIO_GLUE_KVM_ACPI_TABLES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "mptable.h"

namespace kvmglue {

// The PM1 fixed-hardware registers (acpi_pm.h emulates them).
inline constexpr uint16_t kPm1EventPort = 0x600;    // PM1a_STS, PM1a_EN
inline constexpr uint16_t kPm1ControlPort = 0x604;  // PM1a_CNT
// The value of SLP_TYPx for S5 (soft off), as \_S5 declares it.
inline constexpr uint8_t kS5SleepType = 5;

struct AcpiMmioDevice {
  uint32_t base = 0;
  uint32_t size = 0;
  uint32_t gsi = 0;
};

struct AcpiPlatform {
  int vcpus = 1;
  std::vector<PciIntxRoute> pci_intx = {};
  std::vector<AcpiMmioDevice> mmio = {};
  uint64_t pci_mmio_min = 0, pci_mmio_max = 0;  // inclusive window
};

struct AcpiLayout {
  uint64_t rsdp = 0;    // what boot_params.acpi_rsdp_addr gets
  uint64_t end = 0;     // first byte after the tables
  uint8_t sci_irq = 0;  // the ISA IRQ chosen for the SCI
};

// Writes the tables at `addr` (16-byte aligned; Linux also finds the RSDP
// by scanning 0xe0000..0xfffff) up to `addr + limit` in `ram`. Fails when
// they do not fit, when a GSI is beyond the IOAPIC's pins, or when every
// ISA IRQ a SCI could take is used by a device.
absl::StatusOr<AcpiLayout> WriteAcpiTables(absl::Span<uint8_t> ram,
                                           uint64_t addr, uint64_t limit,
                                           const AcpiPlatform& platform);

// The DSDT alone (header included), for tests that disassemble it.
std::vector<uint8_t> BuildDsdt(const AcpiPlatform& platform);

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_ACPI_TABLES_H_
