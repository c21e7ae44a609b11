// kvm/firmware_tables.h — what the tables a BIOS leaves for the guest
// kernel share, whichever standard they follow: the MP table (mptable.h)
// and the ACPI tables (acpi_tables.h) are both checksummed the same way
// and describe interrupt lines with the same MPS INTI flags.
#ifndef KVM_FIRMWARE_TABLES_H_
#define KVM_FIRMWARE_TABLES_H_

#include <cstddef>
#include <cstdint>

namespace kvmglue {

// MPS INTI flags (MP table interrupt entries, ACPI MADT overrides):
// polarity in bits 0..1, trigger mode in bits 2..3. Active high (1),
// level-triggered (3): how the PCI INTx lines of this VMM are wired.
inline constexpr uint16_t kIntiLevelActiveHigh = 0x1 | (0x3 << 2);

// The byte that makes the `n` bytes at `p` sum to zero (mod 256) once
// stored in the table's checksum field (which must be 0 when this runs).
inline uint8_t TableChecksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum = static_cast<uint8_t>(sum + p[i]);
  return static_cast<uint8_t>(0x100 - sum);
}

}  // namespace kvmglue

#endif  // KVM_FIRMWARE_TABLES_H_
