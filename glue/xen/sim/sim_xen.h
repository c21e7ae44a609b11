// sim/sim_xen.h — an in-process Xen for testing glue/xen without a hypervisor.
//
// SimXen plays the hypervisor's half of the ioreq protocol for one guest
// domain, behind the same ports (xen_glue/ports.h) as libxen*:
//
//   * ioreq servers (at most 8, lowest free id, owned by the creating
//     domain), each with a real 4096-byte ioreq page in a memfd that the
//     backend maps (map_resource, or the x86 legacy gfn path) so both sides
//     touch the same physical page through different mappings. vp_eport is
//     written at enable time only if the page was mapped, as in Xen.
//   * routing: enabled servers, highest id first, full containment; x86
//     unclaimed reads return all ones (writes dropped), Arm aborts. PCI
//     config accesses are delivered as IOREQ_TYPE_PCI_CONFIG with
//     addr = SBDF << 32 | reg (x86 only). INVALIDATE is broadcast
//     synchronously to every enabled server.
//   * the vCPU side of the slot state machine: fill, release-store READY,
//     notify, wait; a backwards transition, a bad state or a wrong vp_eport
//     "crashes the domain" (crashed() / crash_reason()).
//   * event channels with Linux evtchn semantics: pending() hands out a port
//     and leaves it masked, a notification while masked is latched once and
//     redelivered by unmask(), the fd is an eventfd readable while ports
//     are queued; closing a handle reverts its channels to unbound.
//   * guest RAM in one memfd, banked; map()/map2() mmap the memfd at the
//     page's offset so foreign mappings alias the guest's real pages.
//   * dm_op error codes (ESRCH, ENOENT, EPERM, ENOSPC, EINVAL, EEXIST,
//     EOPNOTSUPP per arch: set_irq_level is Arm-only, the ISA/INTx/MSI ones
//     x86-only, as on Xen 4.17) and a recording interrupt controller.
//   * the guest's type (x86 HVM or PVH), reported by getdomaininfo
//     (SimDomainInfo). On a PVH guest set_isa_irq_level panicked the real
//     hypervisor every time; here it "crashes Xen" (hypervisor_crashed(),
//     and the domain with it). set_pci_intx_level returned 0 on a real PVH
//     guest but was never shown safe (there is no IO-APIC behind it): the
//     simulator treats it as fatal too, so any path that issues one fails
//     a test.
//   * a grant table owned by the guest (grant-based virtio DMA): the guest
//     grants gfns to a domain (GrantAccess / GrantRange, consecutive refs
//     as grant-dma allocates them) and ends access (EndAccess fails while
//     the backend has the ref mapped: Linux's "still in use"); gntdev-style
//     map_grant_refs aliases the granted memfd pages and enforces the
//     granted domain and read-only flag, failing with EINVAL and the GNTST
//     code Xen would give (last_gntst()).
//   * fault injection: failed map_resource (drives the legacy fallback),
//     failed pages, failing create (no ioreq support), spurious events,
//     pending() errors, lost requests of a killed backend.
//
// Two ways to run a vCPU access: threaded (Run() without a pump blocks like
// a trapped vCPU until the backend answers or the timeout passes) and step
// mode (Run() with a pump calls it between polls, so a single-threaded test
// interleaves deterministically).
#ifndef XEN_GLUE_SIM_SIM_XEN_H_
#define XEN_GLUE_SIM_SIM_XEN_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "xen_glue/abi.h"
#include "xen_glue/guest_type.h"

namespace virtio::xg::sim {

enum class Arch { kArm, kX86 };

struct RamBank {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

struct SimOptions {
  Arch arch = Arch::kArm;
  DomId domid = 7;         // the guest
  DomId emulator = 0;      // the domain our backends run in
  unsigned vcpus = 2;
  std::vector<RamBank> ram = {{0x40000000, 16 << 20}};
  unsigned nr_spis = 64;   // Arm: SPIs 32 .. 32+nr_spis-1
  // x86: kHvm (emulated PIC/IO-APIC, a device model's guest) or kPvh.
  // Ignored on Arm.
  GuestType guest = GuestType::kHvm;
};

// One guest access as Xen would put it in a slot.
struct Request {
  uint8_t type = kTypeCopy;
  bool write = false;
  uint64_t addr = 0;
  uint64_t data = 0;
  uint32_t size = 4;
  uint32_t count = 1;
  bool data_is_ptr = false;
  bool df = false;
};

enum class AccessStatus {
  kOk,
  kUnclaimed,    // x86: nobody claims it; reads all ones, writes dropped
  kAbort,        // Arm: nobody claims it; data abort to the guest
  kTimeout,      // the backend did not answer in time (vCPU still blocked)
  kCrashed,      // the domain was crashed (bad protocol from a backend)
  kServerGone,   // the server was destroyed while the vCPU waited
};
const char* AccessStatusName(AccessStatus s);

struct AccessResult {
  AccessStatus status = AccessStatus::kOk;
  uint64_t data = 0;
  int server = -1;  // which server answered
};

struct IrqEvent {
  enum Kind { kSpi, kIsa, kIntx, kMsi } kind = kSpi;
  uint32_t irq = 0;        // SPI / ISA irq, or INTx pin (0=A)
  uint32_t level = 0;
  uint32_t sbdf = 0;       // INTx
  uint64_t msi_addr = 0;
  uint32_t msi_data = 0;
  // kMsi with vector 0: the PIRQ Xen raises instead (hvm_inject_msi: a
  // vector-0 message names a PIRQ in the address's destination bits, which
  // is how Linux in an HVM guest programs MSI-X on Xen 4.17); else -1.
  int64_t pirq = -1;
};

class SimEvtchn;

class SimXen {
 public:
  using Pump = std::function<void()>;
  static constexpr std::chrono::milliseconds kDefaultTimeout{5000};

  explicit SimXen(SimOptions options = {});
  ~SimXen();
  SimXen(const SimXen&) = delete;
  SimXen& operator=(const SimXen&) = delete;

  const SimOptions& options() const { return options_; }
  DomId domid() const { return options_.domid; }

  // --- the guest's vCPUs ----------------------------------------------------
  // Issues `req` on `vcpu` and waits for the answer. With a `pump`, waits in
  // step mode: pump() between polls, at most `max_pumps` times.
  AccessResult Run(unsigned vcpu, const Request& req, const Pump& pump = {},
                   std::chrono::milliseconds timeout = kDefaultTimeout,
                   int max_pumps = 64);
  AccessResult Mmio(unsigned vcpu, bool write, uint64_t addr, uint32_t size,
                    uint64_t data, const Pump& pump = {});
  AccessResult PciConfig(unsigned vcpu, bool write, uint32_t sbdf,
                         uint32_t reg, uint32_t size, uint64_t data,
                         const Pump& pump = {});
  // After a kTimeout: keeps waiting for the request already in the slot.
  AccessResult Resume(unsigned vcpu, const Pump& pump = {},
                      std::chrono::milliseconds timeout = kDefaultTimeout,
                      int max_pumps = 64);
  // Xen's mapcache invalidation: a synchronous INVALIDATE to every enabled
  // server, from `vcpu`'s slot. Returns the first non-OK result, if any.
  AccessResult Invalidate(unsigned vcpu, const Pump& pump = {},
                          std::chrono::milliseconds timeout = kDefaultTimeout);

  // --- guest RAM, the guest's own view ----------------------------------------
  uint8_t* GuestRam(uint64_t gpa, uint64_t len);  // nullptr outside RAM
  void WriteGuest(uint64_t gpa, const void* src, uint64_t len);
  void ReadGuest(uint64_t gpa, void* dst, uint64_t len);

  // --- the guest's grant table ------------------------------------------------
  // Grants `gfn` to domain `to` (default: the emulator); returns the ref.
  uint32_t GrantAccess(XenPfn gfn, bool readonly, DomId to = 0);
  // Grants `pages` consecutive gfns from `gfn` as consecutive refs; returns
  // the first. DMA address of byte `off` of it: kGrantAddrBit |
  // (ref << 12) + off.
  uint32_t GrantRange(XenPfn gfn, uint32_t pages, bool readonly, DomId to = 0);
  // gnttab_end_foreign_access_ref: false (and the grant stays) while the
  // ref is mapped by a backend; true once revoked.
  bool EndAccess(uint32_t ref);
  // GNTST_* of the last failed grant map (0 if none failed yet).
  int last_gntst() const;
  uint64_t grant_maps() const;  // grant pages currently mapped
  uint32_t GrantMapCount(uint32_t ref) const;  // mappings of `ref` now

  // --- observation --------------------------------------------------------------
  std::vector<IrqEvent> irq_log() const;
  size_t CountIrq(IrqEvent::Kind kind, uint32_t irq, uint32_t level) const;
  size_t CountMsi(uint64_t addr, uint32_t data) const;
  size_t CountPirq(uint32_t pirq) const;  // vector-0 MSIs raising `pirq`
  // Waits until `pred(irq_log())` holds.
  bool WaitForIrqs(const std::function<bool(const std::vector<IrqEvent>&)>& pred,
                   std::chrono::milliseconds timeout = kDefaultTimeout);
  bool crashed() const;
  std::string crash_reason() const;
  // A dm_op that panics the real Xen was issued (crash_reason() says which);
  // the domain counts as crashed too.
  bool hypervisor_crashed() const;
  bool server_exists(IoServId id) const;
  bool server_enabled(IoServId id) const;
  size_t num_ranges(IoServId id, uint32_t type) const;
  uint64_t lost_events() const;
  uint64_t mapped_pages() const;  // foreign pages currently mapped

  // --- fault injection ------------------------------------------------------
  void FailNextCreate(int err);            // e.g. ENOSYS: no CONFIG_IOREQ_SERVER
  void FailNextMapResource(int err);       // e.g. EOPNOTSUPP: legacy fallback
  void FailPfn(XenPfn pfn, bool fail);     // foreign map of this page fails
  void FailNextPending(int err);           // e.g. EINTR
  void FailDomainInfo(int err);            // e.g. EPERM: getdomaininfo denied
  void SpuriousEvent(IoServId id, unsigned vcpu);  // notify with no request
  // Writes a raw 32-byte image into a slot and marks it READY (fuzzing).
  bool PostRaw(IoServId id, unsigned vcpu, const IoreqSlot& image);
  // The slot's state nibble (fuzzing / tests).
  uint8_t SlotState(IoServId id, unsigned vcpu) const;
  // Completes a PostRaw()'d slot if answered: true and the data if so.
  std::optional<uint64_t> TakeRawAnswer(IoServId id, unsigned vcpu);

  // --- ports, called by the port objects below ---------------------------------
  // libxendevicemodel
  int nr_vcpus(DomId caller, DomId d, unsigned* n);
  int create_ioreq_server(DomId caller, DomId d, int bufioreq, IoServId* id);
  int get_ioreq_server_info(DomId caller, DomId d, IoServId id, XenPfn* gfn,
                            XenPfn* bufgfn, EvtchnPort* bufport);
  int map_range(DomId caller, DomId d, IoServId id, uint32_t type,
                uint64_t start, uint64_t end, bool map);
  int set_ioreq_server_state(DomId caller, DomId d, IoServId id, int enabled);
  int destroy_ioreq_server(DomId caller, DomId d, IoServId id);
  int set_irq_level(DomId d, unsigned irq, unsigned level);
  int set_isa_irq_level(DomId d, uint8_t irq, unsigned level);
  int set_pci_intx_level(DomId d, uint16_t seg, uint8_t bus, uint8_t dev,
                         uint8_t intx, unsigned level);
  int inject_msi(DomId d, uint64_t addr, uint32_t data);
  // libxenctrl
  int get_domain_info(DomId d, DomainInfo* info);
  // libxenforeignmemory
  void* map_resource(DomId caller, DomId d, unsigned type, unsigned id,
                     unsigned long frame, unsigned long nr, void** addr,
                     int prot);
  int unmap_resource(void* token);
  void* map2(uint32_t dom, void* addr, int prot, int flags, size_t pages,
             const XenPfn* pfns, int* err);
  int unmap(void* addr, size_t pages);
  // gntdev (libxengnttab)
  void* map_grant_refs(DomId caller, uint32_t n, uint32_t dom,
                       const uint32_t* refs, int prot);
  int unmap_grants(void* addr, uint32_t n);

  // GNTST_* (xen/include/public/grant_table.h).
  static constexpr int kGntstOkay = 0;
  static constexpr int kGntstGeneralError = -1;
  static constexpr int kGntstBadDomain = -2;
  static constexpr int kGntstBadGntref = -3;
  static constexpr uint32_t kGrantTableSize = 32 * 512;  // 32 v1 frames
  static constexpr uint32_t kFirstGrantRef = 8;  // GNTTAB_NR_RESERVED_ENTRIES

 private:
  struct GrantEntry {
    bool active = false;
    bool readonly = false;
    DomId to = 0;
    XenPfn gfn = 0;
    uint32_t maps = 0;
  };
  struct GrantMapping {
    std::vector<uint32_t> refs;
  };
  friend class SimEvtchn;
  struct Server;
  struct Channel {
    IoServId server = 0;
    unsigned vcpu = 0;
    DomId remote = 0;          // who may bind it (the emulator)
    SimEvtchn* handle = nullptr;
    EvtchnPort local = 0;
  };

  Server* FindServer(IoServId id);
  const Server* FindServer(IoServId id) const;
  int CheckServer(DomId caller, DomId d, IoServId id, Server** out);
  int SelectServer(const Request& req, uint64_t* first, uint64_t* last) const;
  void DeliverLocked(EvtchnPort xen_port);
  void Crash(const std::string& why);
  // Step 1 of an access: select, fill the slot, READY, notify.
  AccessResult PostLocked(unsigned vcpu, const Request& req, bool* posted);
  // Step 2: look at the slot once. nullopt: still pending.
  std::optional<AccessResult> PollLocked(unsigned vcpu);
  AccessResult WaitLocked(std::unique_lock<std::mutex>& lock, unsigned vcpu,
                          const Pump& pump, std::chrono::milliseconds timeout,
                          int max_pumps);
  void RecordIrq(const IrqEvent& e);

  SimOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;      // slot state changes, irqs
  std::vector<std::unique_ptr<Server>> servers_;  // index = id
  std::map<EvtchnPort, Channel> channels_;        // by Xen-side port
  EvtchnPort next_xen_port_ = 100;
  EvtchnPort next_local_port_ = 1;  // the emulator domain's port space
  struct VcpuWait {
    int server = -1;           // server holding our request, -1 = none
    uint8_t prev_state = 0;
    bool broadcast = false;
  };
  std::vector<VcpuWait> vcpu_;
  bool crashed_ = false;
  bool hypervisor_crashed_ = false;
  std::string crash_reason_;
  std::vector<IrqEvent> irqs_;
  uint64_t lost_events_ = 0;
  // RAM
  int ram_fd_ = -1;
  uint8_t* ram_ = nullptr;       // our own mapping of the whole memfd
  uint64_t ram_bytes_ = 0;
  std::vector<uint64_t> bank_off_;  // memfd offset of each bank
  std::set<XenPfn> failed_pfns_;
  std::set<uintptr_t> mapped_;  // host addresses of mapped foreign pages
  std::vector<GrantEntry> grants_ = std::vector<GrantEntry>(kFirstGrantRef);
  std::map<uintptr_t, GrantMapping> grant_maps_;  // by host address
  int last_gntst_ = 0;
  int fail_create_ = 0;
  int fail_map_resource_ = 0;
  int fail_pending_ = 0;
  int fail_domain_info_ = 0;
};

// --- port objects (satisfy the concepts in ports.h) ------------------------

class SimDeviceModel {
 public:
  explicit SimDeviceModel(SimXen& xen, DomId caller = 0)
      : xen_(&xen), caller_(caller) {}
  int nr_vcpus(DomId d, unsigned* n) { return xen_->nr_vcpus(caller_, d, n); }
  int create_ioreq_server(DomId d, int buf, IoServId* id) {
    return xen_->create_ioreq_server(caller_, d, buf, id);
  }
  int get_ioreq_server_info(DomId d, IoServId id, XenPfn* g, XenPfn* bg,
                            EvtchnPort* bp) {
    return xen_->get_ioreq_server_info(caller_, d, id, g, bg, bp);
  }
  int map_io_range(DomId d, IoServId id, int is_mmio, uint64_t s, uint64_t e) {
    return xen_->map_range(caller_, d, id, is_mmio ? kIoRangeMemory : kIoRangePort,
                           s, e, true);
  }
  int unmap_io_range(DomId d, IoServId id, int is_mmio, uint64_t s, uint64_t e) {
    return xen_->map_range(caller_, d, id, is_mmio ? kIoRangeMemory : kIoRangePort,
                           s, e, false);
  }
  int map_pcidev(DomId d, IoServId id, uint16_t seg, uint8_t bus, uint8_t dev,
                 uint8_t fn);
  int unmap_pcidev(DomId d, IoServId id, uint16_t seg, uint8_t bus,
                   uint8_t dev, uint8_t fn);
  int set_ioreq_server_state(DomId d, IoServId id, int enabled) {
    return xen_->set_ioreq_server_state(caller_, d, id, enabled);
  }
  int destroy_ioreq_server(DomId d, IoServId id) {
    return xen_->destroy_ioreq_server(caller_, d, id);
  }
  int set_irq_level(DomId d, unsigned irq, unsigned level) {
    return xen_->set_irq_level(d, irq, level);
  }
  int set_isa_irq_level(DomId d, uint8_t irq, unsigned level) {
    return xen_->set_isa_irq_level(d, irq, level);
  }
  int set_pci_intx_level(DomId d, uint16_t seg, uint8_t bus, uint8_t dev,
                         uint8_t intx, unsigned level) {
    return xen_->set_pci_intx_level(d, seg, bus, dev, intx, level);
  }
  int inject_msi(DomId d, uint64_t addr, uint32_t data) {
    return xen_->inject_msi(d, addr, data);
  }

 private:
  SimXen* xen_;
  DomId caller_;
};

// getdomaininfo (libxenctrl): the guest's type (DomainInfoPort).
class SimDomainInfo {
 public:
  explicit SimDomainInfo(SimXen& xen) : xen_(&xen) {}
  int get_domain_info(DomId d, DomainInfo* info) {
    return xen_->get_domain_info(d, info);
  }

 private:
  SimXen* xen_;
};

class SimForeignMemory {
 public:
  explicit SimForeignMemory(SimXen& xen, DomId caller = 0)
      : xen_(&xen), caller_(caller) {}
  void* map_resource(DomId d, unsigned type, unsigned id, unsigned long frame,
                     unsigned long nr, void** addr, int prot, int /*flags*/) {
    return xen_->map_resource(caller_, d, type, id, frame, nr, addr, prot);
  }
  int unmap_resource(void* token) { return xen_->unmap_resource(token); }
  void* map(uint32_t dom, int prot, size_t pages, const XenPfn* pfns, int* err) {
    return xen_->map2(dom, nullptr, prot, 0, pages, pfns, err);
  }
  void* map2(uint32_t dom, void* addr, int prot, int flags, size_t pages,
             const XenPfn* pfns, int* err) {
    return xen_->map2(dom, addr, prot, flags, pages, pfns, err);
  }
  int unmap(void* addr, size_t pages) { return xen_->unmap(addr, pages); }

 private:
  SimXen* xen_;
  DomId caller_;
};

// A /dev/xen/gntdev handle of the emulator domain (GrantTablePort).
class SimGrantTable {
 public:
  explicit SimGrantTable(SimXen& xen, DomId caller = 0)
      : xen_(&xen), caller_(caller) {}
  void* map_domain_grant_refs(uint32_t n, uint32_t dom, uint32_t* refs, int prot) {
    return xen_->map_grant_refs(caller_, n, dom, refs, prot);
  }
  int unmap(void* addr, uint32_t n) { return xen_->unmap_grants(addr, n); }

 private:
  SimXen* xen_;
  DomId caller_;
};

// One /dev/xen/evtchn handle of the emulator domain.
class SimEvtchn {
 public:
  explicit SimEvtchn(SimXen& xen, DomId self = 0);
  ~SimEvtchn();  // close(): unbinds everything
  SimEvtchn(const SimEvtchn&) = delete;
  SimEvtchn& operator=(const SimEvtchn&) = delete;

  int fd() { return efd_; }
  int bind_interdomain(uint32_t dom, EvtchnPort remote);
  int unbind(EvtchnPort local);
  int pending();
  int unmask(EvtchnPort local);
  int notify(EvtchnPort local);

 private:
  friend class SimXen;
  void QueueLocked(EvtchnPort local);
  SimXen* xen_;
  DomId self_;
  int efd_ = -1;
  std::map<EvtchnPort, EvtchnPort> bound_;  // local -> xen port
  std::set<EvtchnPort> masked_;
  std::set<EvtchnPort> latched_;
  std::deque<EvtchnPort> queue_;
};

}  // namespace virtio::xg::sim

#endif  // XEN_GLUE_SIM_SIM_XEN_H_
