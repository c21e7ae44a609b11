// xen_glue/ports.h — the seam between the glue's logic and Xen.
//
// Four C++20 concepts mirror the four libraries one call for one call (same
// argument order, `int` results with -1 + errno on failure, nothing
// allocates), so production types are pass-throughs (real_ports.h) and the
// simulator (sim/sim_xen.h) plays Xen's half in-process. Everything above
// the ports — ordering rules, slot state machine, range bookkeeping, PCI
// decode, rep/data_is_ptr, INVALIDATE, restart rescan — is ordinary,
// testable code templated on them: no virtual call between the logic and
// the port.
#ifndef XEN_GLUE_PORTS_H_
#define XEN_GLUE_PORTS_H_

#include <concepts>
#include <cstddef>
#include <cstdint>

#include "xen_glue/abi.h"

namespace virtio::xg {

// libxendevicemodel.
template <typename T>
concept DeviceModelPort = requires(T& t, DomId d, IoServId id, IoServId* idp,
                                   unsigned* n, XenPfn* g, EvtchnPort* p,
                                   uint64_t a, uint32_t u32, uint16_t u16,
                                   uint8_t u8, int i, unsigned u) {
  { t.nr_vcpus(d, n) } -> std::same_as<int>;
  { t.create_ioreq_server(d, i, idp) } -> std::same_as<int>;
  { t.get_ioreq_server_info(d, id, g, g, p) } -> std::same_as<int>;
  { t.map_io_range(d, id, i, a, a) } -> std::same_as<int>;
  { t.unmap_io_range(d, id, i, a, a) } -> std::same_as<int>;
  { t.map_pcidev(d, id, u16, u8, u8, u8) } -> std::same_as<int>;
  { t.unmap_pcidev(d, id, u16, u8, u8, u8) } -> std::same_as<int>;
  { t.set_ioreq_server_state(d, id, i) } -> std::same_as<int>;
  { t.destroy_ioreq_server(d, id) } -> std::same_as<int>;
  { t.set_irq_level(d, u, u) } -> std::same_as<int>;          // Arm SPI
  { t.set_isa_irq_level(d, u8, u) } -> std::same_as<int>;     // x86
  { t.set_pci_intx_level(d, u16, u8, u8, u8, u) } -> std::same_as<int>;
  { t.inject_msi(d, a, u32) } -> std::same_as<int>;           // x86
};

// libxenforeignmemory. map_resource returns an opaque resource token (the
// xenforeignmemory_resource_handle) or nullptr; *addr receives the mapping.
template <typename T>
concept ForeignMemoryPort = requires(T& t, DomId d, void** addr, void* p,
                                     const XenPfn* pfns, int* err, size_t n,
                                     unsigned u, unsigned long ul, int i,
                                     uint32_t dom) {
  { t.map_resource(d, u, u, ul, ul, addr, i, i) } -> std::same_as<void*>;
  { t.unmap_resource(p) } -> std::same_as<int>;
  { t.map(dom, i, n, pfns, err) } -> std::same_as<void*>;
  { t.map2(dom, p, i, i, n, pfns, err) } -> std::same_as<void*>;
  { t.unmap(p, n) } -> std::same_as<int>;
};

// libxenevtchn. One handle per dispatch thread (handles are not
// thread-shareable); pending() leaves the port masked until unmask().
template <typename T>
concept EventChannelPort = requires(T& t, EvtchnPort p, uint32_t dom) {
  { t.fd() } -> std::same_as<int>;
  { t.bind_interdomain(dom, p) } -> std::same_as<int>;
  { t.unbind(p) } -> std::same_as<int>;
  { t.pending() } -> std::same_as<int>;
  { t.unmask(p) } -> std::same_as<int>;
  { t.notify(p) } -> std::same_as<int>;
};

// libxengnttab (grant-based DMA: addresses with bit 63 set).
template <typename T>
concept GrantTablePort = requires(T& t, uint32_t n, uint32_t dom,
                                  uint32_t* refs, int prot, void* addr) {
  { t.map_domain_grant_refs(n, dom, refs, prot) } -> std::same_as<void*>;
  { t.unmap(addr, n) } -> std::same_as<int>;
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_PORTS_H_
