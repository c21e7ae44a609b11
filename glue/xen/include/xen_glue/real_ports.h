// xen_glue/real_ports.h — the ports over libxendevicemodel,
// libxenforeignmemory, libxenevtchn and libxengnttab (libxen-dev), and the
// one libxenctrl call the backend makes (getdomaininfo, for the guest's
// type: guest_type.h).
// Pass-throughs that own their handle; semantics are the libraries'.
// The libxen headers have no extern "C" guards and hide
// HVM_IOREQSRV_BUFIOREQ_* unless __XEN_TOOLS__ is defined.
#ifndef XEN_GLUE_REAL_PORTS_H_
#define XEN_GLUE_REAL_PORTS_H_

#ifndef __XEN_TOOLS__
#define __XEN_TOOLS__ 1
#endif
extern "C" {
#include <xendevicemodel.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xengnttab.h>
#include <xentoollog.h>
}

#include <type_traits>

#include "xen_glue/guest_type.h"
#include "xen_glue/ports.h"

namespace virtio::xg {

static_assert(std::is_same_v<xen_pfn_t, XenPfn> || sizeof(xen_pfn_t) == sizeof(XenPfn));

class RealDeviceModel {
 public:
  explicit RealDeviceModel(xentoollog_logger* log = nullptr)
      : h_(xendevicemodel_open(log, 0)) {}
  ~RealDeviceModel() { if (h_ != nullptr) xendevicemodel_close(h_); }
  RealDeviceModel(const RealDeviceModel&) = delete;
  RealDeviceModel& operator=(const RealDeviceModel&) = delete;
  bool ok() const { return h_ != nullptr; }

  int nr_vcpus(DomId d, unsigned* n) { return xendevicemodel_nr_vcpus(h_, d, n); }
  int create_ioreq_server(DomId d, int buf, IoServId* id) {
    return xendevicemodel_create_ioreq_server(h_, d, buf, id);
  }
  int get_ioreq_server_info(DomId d, IoServId id, XenPfn* g, XenPfn* bg, EvtchnPort* bp) {
    return xendevicemodel_get_ioreq_server_info(
        h_, d, id, reinterpret_cast<xen_pfn_t*>(g), reinterpret_cast<xen_pfn_t*>(bg), bp);
  }
  int map_io_range(DomId d, IoServId id, int mmio, uint64_t s, uint64_t e) {
    return xendevicemodel_map_io_range_to_ioreq_server(h_, d, id, mmio, s, e);
  }
  int unmap_io_range(DomId d, IoServId id, int mmio, uint64_t s, uint64_t e) {
    return xendevicemodel_unmap_io_range_from_ioreq_server(h_, d, id, mmio, s, e);
  }
  int map_pcidev(DomId d, IoServId id, uint16_t seg, uint8_t bus, uint8_t dev, uint8_t fn) {
    return xendevicemodel_map_pcidev_to_ioreq_server(h_, d, id, seg, bus, dev, fn);
  }
  int unmap_pcidev(DomId d, IoServId id, uint16_t seg, uint8_t bus, uint8_t dev, uint8_t fn) {
    return xendevicemodel_unmap_pcidev_from_ioreq_server(h_, d, id, seg, bus, dev, fn);
  }
  int set_ioreq_server_state(DomId d, IoServId id, int en) {
    return xendevicemodel_set_ioreq_server_state(h_, d, id, en);
  }
  int destroy_ioreq_server(DomId d, IoServId id) {
    return xendevicemodel_destroy_ioreq_server(h_, d, id);
  }
  int set_irq_level(DomId d, unsigned irq, unsigned level) {
    return xendevicemodel_set_irq_level(h_, d, irq, level);
  }
  int set_isa_irq_level(DomId d, uint8_t irq, unsigned level) {
    return xendevicemodel_set_isa_irq_level(h_, d, irq, level);
  }
  int set_pci_intx_level(DomId d, uint16_t seg, uint8_t bus, uint8_t dev, uint8_t intx,
                         unsigned level) {
    return xendevicemodel_set_pci_intx_level(h_, d, seg, bus, dev, intx, level);
  }
  int inject_msi(DomId d, uint64_t addr, uint32_t data) {
    return xendevicemodel_inject_msi(h_, d, addr, data);
  }

 private:
  xendevicemodel_handle* h_;
};

class RealForeignMemory {
 public:
  explicit RealForeignMemory(xentoollog_logger* log = nullptr)
      : h_(xenforeignmemory_open(log, 0)) {}
  ~RealForeignMemory() { if (h_ != nullptr) xenforeignmemory_close(h_); }
  RealForeignMemory(const RealForeignMemory&) = delete;
  RealForeignMemory& operator=(const RealForeignMemory&) = delete;
  bool ok() const { return h_ != nullptr; }

  void* map_resource(DomId d, unsigned type, unsigned id, unsigned long frame,
                     unsigned long nr, void** addr, int prot, int flags) {
    return xenforeignmemory_map_resource(h_, d, type, id, frame, nr, addr, prot, flags);
  }
  int unmap_resource(void* token) {
    return xenforeignmemory_unmap_resource(
        h_, static_cast<xenforeignmemory_resource_handle*>(token));
  }
  void* map(uint32_t dom, int prot, size_t pages, const XenPfn* pfns, int* err) {
    return xenforeignmemory_map(h_, dom, prot, pages,
                                reinterpret_cast<const xen_pfn_t*>(pfns), err);
  }
  void* map2(uint32_t dom, void* addr, int prot, int flags, size_t pages,
             const XenPfn* pfns, int* err) {
    return xenforeignmemory_map2(h_, dom, addr, prot, flags, pages,
                                 reinterpret_cast<const xen_pfn_t*>(pfns), err);
  }
  int unmap(void* addr, size_t pages) { return xenforeignmemory_unmap(h_, addr, pages); }

 private:
  xenforeignmemory_handle* h_;
};

class RealEventChannel {
 public:
  explicit RealEventChannel(xentoollog_logger* log = nullptr)
      : h_(xenevtchn_open(log, 0)) {}
  ~RealEventChannel() { if (h_ != nullptr) xenevtchn_close(h_); }
  RealEventChannel(const RealEventChannel&) = delete;
  RealEventChannel& operator=(const RealEventChannel&) = delete;
  bool ok() const { return h_ != nullptr; }

  int fd() { return xenevtchn_fd(h_); }
  int bind_interdomain(uint32_t dom, EvtchnPort p) { return xenevtchn_bind_interdomain(h_, dom, p); }
  int unbind(EvtchnPort p) { return xenevtchn_unbind(h_, p); }
  int pending() { return xenevtchn_pending(h_); }
  int unmask(EvtchnPort p) { return xenevtchn_unmask(h_, p); }
  int notify(EvtchnPort p) { return xenevtchn_notify(h_, p); }

 private:
  xenevtchn_handle* h_;
};

class RealGrantTable {
 public:
  explicit RealGrantTable(xentoollog_logger* log = nullptr) : h_(xengnttab_open(log, 0)) {}
  ~RealGrantTable() { if (h_ != nullptr) xengnttab_close(h_); }
  RealGrantTable(const RealGrantTable&) = delete;
  RealGrantTable& operator=(const RealGrantTable&) = delete;
  bool ok() const { return h_ != nullptr; }

  void* map_domain_grant_refs(uint32_t n, uint32_t dom, uint32_t* refs, int prot) {
    return xengnttab_map_domain_grant_refs(h_, n, dom, refs, prot);
  }
  int unmap(void* addr, uint32_t n) { return xengnttab_unmap(h_, addr, n); }

 private:
  xengnttab_handle* h_;
};

// getdomaininfo through libxenctrl (DomainInfoPort). Only for the guest's
// type at startup; everything else goes through the stable libraries.
// Defined in src/domain_info.cc: xenctrl.h pulls in the generated
// xen/foreign headers, which do not compile as ISO C++ (they need GNU
// extensions), so that one file is built with -std=gnu++20.
class RealDomainInfo {
 public:
  explicit RealDomainInfo(xentoollog_logger* log = nullptr);
  ~RealDomainInfo();
  RealDomainInfo(const RealDomainInfo&) = delete;
  RealDomainInfo& operator=(const RealDomainInfo&) = delete;
  bool ok() const { return h_ != nullptr; }

  // 0, or -1 with errno (ESRCH: no such domain).
  int get_domain_info(DomId d, DomainInfo* out);

 private:
  void* h_;  // xc_interface*
};

static_assert(DeviceModelPort<RealDeviceModel>);
static_assert(DomainInfoPort<RealDomainInfo>);
static_assert(ForeignMemoryPort<RealForeignMemory>);
static_assert(EventChannelPort<RealEventChannel>);
static_assert(GrantTablePort<RealGrantTable>);

}  // namespace virtio::xg

#endif  // XEN_GLUE_REAL_PORTS_H_
