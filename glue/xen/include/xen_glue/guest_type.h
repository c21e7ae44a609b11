// xen_glue/guest_type.h — what kind of guest the backend serves, and which
// interrupt dm_ops are safe for it.
//
// Xen 4.17 on x86 (measured, ../shared/reference/nested-hypervisors.md B):
// on an HVM guest set_isa_irq_level, set_pci_intx_level and inject_msi
// work; on a PVH guest set_isa_irq_level crashed the *hypervisor* every
// time (GP fault in hvm_isa_irq_deassert <- dm_op). A PVH guest is an HVM
// container without the emulated PIC and IO-APIC, and the ISA/GSI/INTx
// dm_ops drive exactly those (hvm_isa_irq_*, hvm_pci_intx_*). So the
// backend must know the guest's type before it may issue a level dm_op,
// and issues none unless it knows the guest is HVM with an emulated
// IO-APIC/PIC.
//
// The type comes from XEN_DOMCTL_getdomaininfo (libxenctrl's
// xc_domain_getinfo): the HVM flag, and on x86 the domain's
// emulation_flags (XEN_X86_EMU_*), which are fixed at domain creation:
// libxl gives HVM guests all of them and PVH guests only LAPIC. The
// DomainInfoPort concept is that one call; RealDomainInfo (real_ports.h)
// and the simulator (sim/sim_xen.h) satisfy it.
#ifndef XEN_GLUE_GUEST_TYPE_H_
#define XEN_GLUE_GUEST_TYPE_H_

#include <cerrno>
#include <concepts>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "xen_glue/abi.h"

namespace virtio::xg {

// XEN_X86_EMU_* (xen/include/public/arch-x86/xen.h; checked in
// src/abi_check.cc).
inline constexpr uint32_t kX86EmuLapic = 1u << 0;
inline constexpr uint32_t kX86EmuIoapic = 1u << 4;
inline constexpr uint32_t kX86EmuPic = 1u << 5;

// What getdomaininfo says about a domain.
struct DomainInfo {
  bool hvm = false;              // XEN_DOMINF_hvm_guest
  bool x86 = true;               // emulation_flags is meaningful
  uint32_t emulation_flags = 0;  // XEN_X86_EMU_* (x86 only)
};

// libxenctrl's getdomaininfo for one domain: 0, or -1 with errno (ESRCH:
// no such domain).
template <typename T>
concept DomainInfoPort = requires(T& t, DomId d, DomainInfo* info) {
  { t.get_domain_info(d, info) } -> std::same_as<int>;
};

enum class GuestType {
  kUnknown,  // not determined: no level dm_op is issued
  kPv,       // PV: no ioreq servers at all
  kHvm,      // x86 HVM with emulated PIC + IO-APIC (a device model's guest)
  kPvh,      // x86 HVM container without PIC/IO-APIC
  kArm,      // Arm: interrupts are SPIs (set_irq_level), no ISA/INTx
};

inline const char* GuestTypeName(GuestType t) {
  switch (t) {
    case GuestType::kUnknown:
      return "unknown";
    case GuestType::kPv:
      return "PV";
    case GuestType::kHvm:
      return "HVM";
    case GuestType::kPvh:
      return "PVH";
    case GuestType::kArm:
      return "Arm";
  }
  return "?";
}

inline GuestType ClassifyGuest(const DomainInfo& info) {
  if (!info.x86) return GuestType::kArm;
  if (!info.hvm) return GuestType::kPv;
  // Both are needed for hvm_isa_irq_* and hvm_pci_intx_* to reach an
  // emulated controller; libxl sets both or neither.
  constexpr uint32_t kLevelControllers = kX86EmuIoapic | kX86EmuPic;
  return (info.emulation_flags & kLevelControllers) == kLevelControllers
             ? GuestType::kHvm
             : GuestType::kPvh;
}

// Whether set_isa_irq_level / set_pci_intx_level may be issued for a guest
// of type `t` (x86). Only for a guest known to be HVM: PVH crashed Xen,
// and an unknown type might be PVH.
constexpr bool LevelIrqDmOpsSafe(GuestType t) { return t == GuestType::kHvm; }

// Why a level dm_op is refused for `t`, for error messages.
inline const char* LevelIrqRefusal(GuestType t) {
  switch (t) {
    case GuestType::kPvh:
      return "the guest is PVH (no emulated PIC/IO-APIC); Xen 4.17 crashed on "
             "set_isa_irq_level for a PVH guest, so no ISA/GSI/INTx dm_op is "
             "issued for one";
    case GuestType::kUnknown:
      return "the guest's type could not be determined (getdomaininfo), and "
             "ISA/GSI/INTx dm_ops crash Xen if the guest is PVH";
    case GuestType::kPv:
      return "the guest is PV (no emulated interrupt controllers)";
    case GuestType::kArm:
      return "Arm guests have SPIs, not ISA/INTx lines";
    case GuestType::kHvm:
      break;
  }
  return "";
}

// Asks `di` for domain `d`'s type.
template <DomainInfoPort DI>
absl::StatusOr<GuestType> DetectGuestType(DI& di, DomId d) {
  DomainInfo info;
  if (di.get_domain_info(d, &info) != 0) {
    const int e = errno;
    return absl::FailedPreconditionError(absl::StrFormat(
        "getdomaininfo for domain %u failed: %s", d, std::strerror(e)));
  }
  return ClassifyGuest(info);
}

}  // namespace virtio::xg

#endif  // XEN_GLUE_GUEST_TYPE_H_
