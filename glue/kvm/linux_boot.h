// glue/kvm/linux_boot.h — loads an unmodified x86-64 Linux kernel into
// guest RAM for the Linux x86 64-bit boot protocol (Documentation/arch/x86/
// boot.rst): no firmware, no real-mode setup code.
//
// Accepted kernels:
//   * a bzImage (boot protocol 2.12 or later with XLF_KERNEL_64, as every
//     distribution kernel is): its protected-mode part is loaded at the
//     kernel's preferred address and entered at +0x200, the 64-bit entry of
//     the decompressor;
//   * an uncompressed ELF64 vmlinux (as extracted from a bzImage): its
//     PT_LOAD segments go to their physical addresses and it is entered at
//     its ELF entry point. Saves the decompression, which costs seconds
//     when the guest's code runs under emulation.
//
// The loader writes, besides the kernel:
//   * boot_params (the "zero page") with the kernel's setup header, the
//     command line pointer, the initramfs location and an e820 map;
//   * the initramfs at the top of RAM (below the kernel's initrd_addr_max);
//   * an MP table (mptable.h) for the vCPUs, the IOAPIC and PCI INTx;
//   * unless disabled, ACPI tables (acpi_tables.h): the same platform plus
//     the PCI host bridge, virtio-mmio devices and power-off. Linux prefers
//     them; with acpi=off it falls back to the MP table.
// The caller then enters long mode (Vm::EnterLongMode) with the returned
// entry point and boot_params address, and the GDT/page-table addresses
// below.
//
// Guest-physical layout:
//   0x00000500  GDT (Vm::EnterLongMode)
//   0x00007000  boot_params
//   0x00009000  page tables (6 pages)
//   0x00020000  command line
//   0x0009fc00  reserved (e820) ...
//   0x000e0000  ... ACPI tables (RSDP first)
//   0x000f0000  ... MP table, up to 1 MiB
//   0x01000000  kernel (its preferred load address)
//   RAM top     initramfs
#ifndef LIBVIRTIO_GLUE_KVM_LINUX_BOOT_H_
#define LIBVIRTIO_GLUE_KVM_LINUX_BOOT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "acpi_tables.h"
#include "mptable.h"

namespace kvmglue {

inline constexpr uint64_t kLinuxGdtAddr = 0x500;
inline constexpr uint64_t kLinuxBootParamsAddr = 0x7000;
inline constexpr uint64_t kLinuxPageTablesAddr = 0x9000;
inline constexpr uint64_t kLinuxCmdlineAddr = 0x20000;
inline constexpr uint64_t kLinuxCmdlineMax = 0x10000;
inline constexpr uint64_t kLinuxLowRamEnd = 0x9fc00;
inline constexpr uint64_t kLinuxAcpiAddr = 0xe0000;
inline constexpr uint64_t kLinuxMpTableAddr = 0xf0000;
inline constexpr uint64_t kLinuxHighRamStart = 0x100000;

// True if `image` starts like a bzImage ("HdrS" at 0x202) or an x86-64 ELF.
bool LooksLikeLinux(absl::Span<const uint8_t> image);

struct LinuxBootConfig {
  std::vector<uint8_t> kernel = {};  // bzImage or vmlinux, whole file
  std::vector<uint8_t> initrd = {};  // may be empty
  std::string cmdline = {};
  int vcpus = 1;
  std::vector<PciIntxRoute> pci_intx = {};
  // ACPI tables (vcpus and pci_intx above are copied into them).
  bool acpi = true;
  std::vector<AcpiMmioDevice> mmio = {};
  uint64_t pci_mmio_min = 0, pci_mmio_max = 0;
};

struct LinuxEntry {
  uint64_t entry = 0;        // RIP
  uint64_t boot_params = 0;  // RSI
  uint64_t kernel_start = 0, kernel_end = 0;
  uint64_t initrd_start = 0, initrd_size = 0;
  bool compressed = false;  // bzImage (vs. vmlinux)
  std::optional<AcpiLayout> acpi = std::nullopt;  // when tables were written
};

// Lays out the kernel, initramfs, command line, boot_params and MP table in
// `ram` (guest-physical 0..ram.size()). Every failure (a truncated or
// foreign image, too little RAM, a command line too long for the kernel)
// is an InvalidArgument saying which.
absl::StatusOr<LinuxEntry> LoadLinux(const LinuxBootConfig& config,
                                     absl::Span<uint8_t> ram);

// Reads a whole file (at most `max_bytes`) for LinuxBootConfig; the
// message names the file and what went wrong.
absl::StatusOr<std::vector<uint8_t>> ReadBootFile(const std::string& path,
                                                  const char* what,
                                                  uint64_t max_bytes);

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_LINUX_BOOT_H_
