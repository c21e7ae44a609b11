// tests/sim_bus.h — the harness drivers' register interfaces, as guest
// accesses trapped by the simulated Xen and sent to ioreq servers.
#ifndef XEN_GLUE_TESTS_SIM_BUS_H_
#define XEN_GLUE_TESTS_SIM_BUS_H_

#include <cstdint>

#include "gtest/gtest.h"
#include "sim/sim_xen.h"
#include "virtio/pci_transport.h"

namespace virtio::xg::sim {

// MmioDriver's Regs: offsets relative to `base`, issued by vCPU `vcpu`.
struct SimMmioBus {
  SimXen* xen;
  unsigned vcpu;
  uint64_t base;
  SimXen::Pump pump;  // empty: threaded (block until answered)

  uint32_t Read(uint64_t offset, uint32_t size) {
    AccessResult r = xen->Mmio(vcpu, false, base + offset, size, 0, pump);
    EXPECT_EQ(r.status, AccessStatus::kOk) << AccessStatusName(r.status);
    return static_cast<uint32_t>(r.data);
  }
  void Write(uint64_t offset, uint32_t size, uint32_t value) {
    AccessResult r = xen->Mmio(vcpu, true, base + offset, size, value, pump);
    EXPECT_EQ(r.status, AccessStatus::kOk) << AccessStatusName(r.status);
  }
};

// PciDriver's Bus: config cycles as Xen delivers them after decoding
// CF8/CFC (IOREQ_TYPE_PCI_CONFIG by SBDF), BAR accesses as MMIO at the
// address the driver programmed into BAR0/BAR1.
struct SimPciBus {
  SimXen* xen;
  unsigned vcpu;
  uint32_t sbdf;
  SimXen::Pump pump;
  uint32_t bar_lo = 0;
  uint32_t bar_hi = 0;

  uint32_t ConfigRead(uint32_t offset, uint32_t size) {
    AccessResult r = xen->PciConfig(vcpu, false, sbdf, offset, size, 0, pump);
    EXPECT_EQ(r.status, AccessStatus::kOk) << AccessStatusName(r.status);
    return static_cast<uint32_t>(r.data);
  }
  void ConfigWrite(uint32_t offset, uint32_t size, uint32_t value) {
    if (offset == pci::kCfgBar0 && size == 4) bar_lo = value;
    if (offset == pci::kCfgBar1 && size == 4) bar_hi = value;
    AccessResult r = xen->PciConfig(vcpu, true, sbdf, offset, size, value, pump);
    EXPECT_EQ(r.status, AccessStatus::kOk) << AccessStatusName(r.status);
  }
  uint64_t bar() const { return (bar_lo & ~uint64_t{0xf}) | (uint64_t{bar_hi} << 32); }
  uint64_t BarRead(uint64_t offset, uint32_t size) {
    AccessResult r = xen->Mmio(vcpu, false, bar() + offset, size, 0, pump);
    EXPECT_EQ(r.status, AccessStatus::kOk) << AccessStatusName(r.status);
    return r.data;
  }
  void BarWrite(uint64_t offset, uint32_t size, uint64_t value) {
    AccessResult r = xen->Mmio(vcpu, true, bar() + offset, size, value, pump);
    EXPECT_EQ(r.status, AccessStatus::kOk) << AccessStatusName(r.status);
  }
};

}  // namespace virtio::xg::sim

#endif  // XEN_GLUE_TESTS_SIM_BUS_H_
