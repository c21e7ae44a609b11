// glue/kvm/mptable.h — an Intel MultiProcessor Specification 1.4 table for
// guests booted without firmware or ACPI.
//
// Linux finds the vCPUs, the IOAPIC and how ISA and PCI interrupts reach the
// IOAPIC from this table when there is no ACPI MADT: without it a Linux
// guest sees one CPU and routes PCI INTx nowhere. The table names:
//   * one processor entry per vCPU (APIC ID = vCPU index, vCPU 0 the BSP);
//   * bus 0 = PCI, bus 1 = ISA;
//   * the in-kernel IOAPIC (ID = number of vCPUs, so it collides with no
//     LAPIC) at kIoapicBase;
//   * ISA IRQs 0..15 on IOAPIC pins 0..15 (edge, active high: KVM's default
//     GSI routing, which the in-kernel PIT on GSI 0 uses), except IRQ 2 (the
//     cascade) and the pins given to PCI devices;
//   * every PCI function's INTx pin on its IOAPIC pin, level-triggered and
//     active high (how KVM's IOAPIC sees an irqfd line);
//   * LINT0 as ExtINT and LINT1 as NMI on every LAPIC.
#ifndef LIBVIRTIO_GLUE_KVM_MPTABLE_H_
#define LIBVIRTIO_GLUE_KVM_MPTABLE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace kvmglue {

// A PCI function's INTx wiring: INTA# of bus 0 `slot` on IOAPIC pin `gsi`.
struct PciIntxRoute {
  uint8_t slot = 0;
  uint32_t gsi = 0;
};

// Writes the MP floating pointer and configuration table at `addr` (16-byte
// aligned, inside the 0xf0000..0xfffff BIOS area Linux scans) into `ram`.
// Fails when the table would not fit below `addr + limit`.
absl::Status WriteMpTable(absl::Span<uint8_t> ram, uint64_t addr,
                          uint64_t limit, int vcpus,
                          const std::vector<PciIntxRoute>& pci_intx);

// Bytes the table takes for `vcpus` and `num_pci` PCI functions.
uint64_t MpTableSize(int vcpus, size_t num_pci);

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_MPTABLE_H_
