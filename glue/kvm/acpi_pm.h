// glue/kvm/acpi_pm.h — the ACPI PM1 fixed-hardware registers the FADT
// points at (acpi_tables.h): PM1a_STS and PM1a_EN at kPm1EventPort, PM1a_CNT
// at kPm1ControlPort.
//
// The one thing a guest does with them here is power off: Linux writes
// SLP_TYPx = \_S5's value with SLP_EN to PM1a_CNT, and the VMM ends the run.
// No fixed event is ever raised (no power button, no PM timer), so the
// status register reads 0; SCI_EN reads 1 because the platform is always in
// ACPI mode. Registers accept byte, word and dword accesses, as the
// hardware's do. Not thread-safe: the VMM calls it under its port-I/O lock.
#ifndef LIBVIRTIO_GLUE_KVM_ACPI_PM_H_
#define LIBVIRTIO_GLUE_KVM_ACPI_PM_H_

#include <array>
#include <cstdint>

#include "acpi_tables.h"

namespace kvmglue {

class AcpiPm {
 public:
  enum class Event { kNone, kPowerOff, kBadSleepType };

  static bool Claims(uint16_t port) {
    return port >= kPm1EventPort && port < kPm1ControlPort + 2;
  }

  uint32_t Read(uint16_t port, uint32_t size) const {
    uint32_t v = 0;
    for (uint32_t i = 0; i < size; ++i) {
      const uint32_t at = port + i - kPm1EventPort;
      v |= uint32_t{at < regs_.size() ? regs_[at] : uint8_t{0xff}} << (8 * i);
    }
    return v;
  }

  // What the write asked for: kPowerOff when SLP_EN was written with the
  // S5 sleep type; kBadSleepType for SLP_EN with any other (the DSDT names
  // no other sleep state, so a guest asking for one is confused).
  Event Write(uint16_t port, uint32_t size, uint32_t value) {
    bool control_written = false;
    for (uint32_t i = 0; i < size; ++i) {
      const uint32_t at = port + i - kPm1EventPort;
      const uint8_t byte = static_cast<uint8_t>(value >> (8 * i));
      if (at < 2) {
        regs_[at] &= static_cast<uint8_t>(~byte);  // status: write 1 to clear
      } else if (at < regs_.size()) {
        regs_[at] = byte;
        control_written |= at >= kControl;
      }
    }
    regs_[kControl] |= kSciEnable;
    if (!control_written) return Event::kNone;
    const uint16_t control =
        static_cast<uint16_t>(regs_[kControl] | regs_[kControl + 1] << 8);
    if (!(control & kSleepEnable)) return Event::kNone;
    regs_[kControl + 1] &=
        static_cast<uint8_t>(~(kSleepEnable >> 8));  // write-only
    const uint8_t type = (control >> kSleepTypeShift) & 0x7;
    return type == kS5SleepType ? Event::kPowerOff : Event::kBadSleepType;
  }

 private:
  static constexpr uint32_t kControl = kPm1ControlPort - kPm1EventPort;
  static constexpr uint8_t kSciEnable = 1u << 0;
  static constexpr uint16_t kSleepEnable = 1u << 13;
  static constexpr int kSleepTypeShift = 10;

  // PM1a_STS (2 bytes), PM1a_EN (2), PM1a_CNT (2).
  std::array<uint8_t, 6> regs_{0, 0, 0, 0, kSciEnable, 0};
};

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_ACPI_PM_H_
