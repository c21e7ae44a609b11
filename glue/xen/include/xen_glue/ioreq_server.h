// xen_glue/ioreq_server.h — one Xen ioreq server: setup, dispatch, teardown.
//
// IoreqServer<DM, FM, EV> runs the backend half of the ioreq protocol over
// the ports in ports.h:
//
//   Start():  nr_vcpus → create_ioreq_server(BUFIOREQ_OFF) (or re-attach to
//             a surviving server id) → map the ioreq page with
//             map_resource(frame_ioreq(0)), falling back to the legacy gfn
//             path only on EOPNOTSUPP → map our MMIO ranges and PCI
//             functions → enable → read vp_eport and bind one event channel
//             per vCPU → rescan every slot (requests posted while nobody was
//             listening, e.g. before a restart, are answered).
//   Dispatch: poll(fd) → pending() → unmask() → acquire-load the state
//             byte; if READY: INPROCESS, handle a copy, write data,
//             release-store IORESP_READY, notify. Spurious and stale events
//             are counted and ignored. The slot is never touched again
//             after IORESP_READY.
//   Stop():   unmap ranges and functions, disable, answer what is pending,
//             unbind, unmap the page, destroy (reverse of Start). Answering
//             after disabling (Xen pauses the domain for it, so no vCPU is
//             still posting) catches a request that was routed to us while
//             we unmapped: on Xen 4.17 a vCPU left waiting on a destroyed
//             server is never woken (ioreq_server_destroy frees its event
//             channels without waking it), which hangs that vCPU.
//
// Requests are hostile input even though Xen validates them: sizes other
// than 1/2/4/8, count 0 or above kMaxRepCount, accesses not entirely inside
// one of our ranges (straddling its end), unknown types and PIO are
// answered (reads all ones, writes dropped) and logged, rate limited.
// Rep MMIO (count > 1) is executed element by element; with data_is_ptr the
// data lives in guest memory and is copied through a GuestCopier (foreign
// mapping); without one the request fails loudly. IOREQ_TYPE_INVALIDATE
// calls the invalidate hook (drop foreign-mapping caches) and is answered.
//
// Devices plug in as IoDevice: a small virtual interface. The ports and the
// slot protocol are compile-time; the device boundary is one indirect call
// per guest register access, next to an event-channel syscall and two
// hypercalls per access, and it lets one server host blk, rng, ... at once
// without a variant over every device type.
//
// Threads: one IoreqServer per dispatch thread (an evtchn handle is not
// thread-shareable); all methods run on that thread.
#ifndef XEN_GLUE_IOREQ_SERVER_H_
#define XEN_GLUE_IOREQ_SERVER_H_

#include <poll.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "virtio/log.h"
#include "xen_glue/abi.h"
#include "xen_glue/ports.h"

namespace virtio::xg {

// What a device behind the server looks like to dispatch.
class IoDevice {
 public:
  virtual ~IoDevice() = default;
  // MMIO: offset into the device's region (virtio-mmio) or BAR (virtio-pci).
  virtual uint64_t MmioRead(uint64_t offset, uint32_t size) = 0;
  virtual void MmioWrite(uint64_t offset, uint32_t size, uint64_t value) = 0;
  // PCI functions only.
  virtual uint32_t ConfigRead(uint32_t /*reg*/, uint32_t /*size*/) {
    return ~0u;
  }
  virtual void ConfigWrite(uint32_t /*reg*/, uint32_t /*size*/,
                           uint32_t /*v*/) {}
  // The BAR window the guest programmed, if memory decoding is on.
  virtual std::optional<std::pair<uint64_t, uint64_t>> BarWindow() const {
    return std::nullopt;
  }
};

// Guest-memory copies for rep MMIO with data_is_ptr (x86 string I/O).
class GuestCopier {
 public:
  virtual ~GuestCopier() = default;
  virtual bool ReadGuest(uint64_t gpa, void* dst, uint64_t len) = 0;
  virtual bool WriteGuest(uint64_t gpa, const void* src, uint64_t len) = 0;
};

// errno of a failed Xen call, as a message a user can act on.
inline std::string XenErrnoHint(int err) {
  switch (err) {
    case ENOSYS:
    case EOPNOTSUPP:
      return "Xen built without ioreq server support (CONFIG_IOREQ_SERVER)?";
    case EPERM:
    case EACCES:
      return "not privileged over the domain (run in dom0 or a domain with "
             "device-model rights)";
    case ESRCH:
      return "no such domain";
    case ENOSPC:
      return "the domain already has the maximum of 8 ioreq servers";
    case EEXIST:
      return "range already registered with this ioreq server";
    default:
      return std::strerror(err);
  }
}

struct IoreqServerOptions {
  DomId domid = 0;
  // Re-attach to a server that survived a previous process (its id).
  std::optional<IoServId> reattach = std::nullopt;
  // Allow the x86 legacy gfn path when map_resource is EOPNOTSUPP.
  bool legacy_fallback = true;
  // Destroy the server on Stop() (false keeps it for a restart).
  bool destroy_on_stop = true;
  std::string name = "xen-ioreq";
};

struct IoreqStats {
  uint64_t requests = 0;
  uint64_t invalid = 0;    // answered without reaching a device
  uint64_t straddles = 0;  // crossed the end of a range
  uint64_t unclaimed = 0;  // address/SBDF/type not ours
  uint64_t rep = 0;        // count > 1 or data_is_ptr handled
  uint64_t invalidates = 0;
  uint64_t spurious = 0;  // events with no READY slot behind them
  uint64_t pending_errors = 0;
  uint64_t adopted = 0;  // INPROCESS slots taken over from a dead owner
};

template <DeviceModelPort DM, ForeignMemoryPort FM, EventChannelPort EV>
class IoreqServer {
 public:
  static constexpr uint32_t kMaxRepCount = 4096;

  IoreqServer(DM& dm, FM& fm, EV& ev, IoreqServerOptions options)
      : dm_(dm), fm_(fm), ev_(ev), options_(std::move(options)) {}
  ~IoreqServer() { Stop(); }
  IoreqServer(const IoreqServer&) = delete;
  IoreqServer& operator=(const IoreqServer&) = delete;

  // --- devices (before or after Start)
  // ------------------------------------------
  absl::Status AddMmio(uint64_t base, uint64_t size, IoDevice* dev,
                       std::string name) {
    if (size == 0 || base + size - 1 < base) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: empty or wrapping MMIO range 0x%x+0x%x", name, base, size));
    }
    const uint64_t end = base + size - 1;
    for (const Window& w : windows_) {
      if (base <= w.end && w.start <= end) {
        return absl::AlreadyExistsError(
            absl::StrFormat("%s: MMIO 0x%x-0x%x overlaps %s at 0x%x-0x%x", name,
                            base, end, w.name, w.start, w.end));
      }
    }
    Window w{base, end, dev, std::move(name), false};
    if (started_) {
      if (dm_.map_io_range(options_.domid, id_, 1, w.start, w.end) != 0) {
        return Errno(absl::StrFormat("%s: map_io_range 0x%x-0x%x", w.name,
                                     w.start, w.end));
      }
      w.registered = true;
    }
    windows_.push_back(std::move(w));
    SortWindows();
    return absl::OkStatus();
  }

  absl::Status AddPci(uint16_t seg, uint8_t bus, uint8_t dev, uint8_t fn,
                      IoDevice* device, std::string name) {
    if (dev > 0x1f || fn > 7) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: bad PCI address %02x:%02x.%x", name, bus, dev, fn));
    }
    const uint32_t sbdf = PciSbdf(seg, bus, dev, fn);
    for (const PciFn& f : pci_) {
      if (f.sbdf == sbdf) {
        return absl::AlreadyExistsError(
            absl::StrFormat("%s: PCI %04x:%02x:%02x.%x already used by %s",
                            name, seg, bus, dev, fn, f.name));
      }
    }
    PciFn f{sbdf, seg, bus, dev, fn, device, std::move(name), std::nullopt};
    if (started_) {
      if (dm_.map_pcidev(options_.domid, id_, seg, bus, dev, fn) != 0) {
        return Errno(absl::StrFormat("%s: map_pcidev", f.name));
      }
      f.registered = true;
    }
    pci_.push_back(std::move(f));
    if (started_) UpdateBar(pci_.back());
    return absl::OkStatus();
  }

  void set_invalidate_hook(std::function<void()> hook) {
    on_invalidate_ = std::move(hook);
  }
  void set_guest_copier(GuestCopier* copier) { copier_ = copier; }

  // --- lifecycle
  // ----------------------------------------------------------------
  absl::Status Start() {
    if (started_) return absl::OkStatus();
    const DomId d = options_.domid;
    unsigned n = 0;
    if (dm_.nr_vcpus(d, &n) != 0) {
      return Errno(absl::StrFormat("nr_vcpus(domain %u)", d));
    }
    if (n == 0 || n > kMaxVcpusPerPage) {
      return absl::OutOfRangeError(
          absl::StrFormat("domain %u has %u vCPUs; one ioreq page serves 1..%u",
                          d, n, kMaxVcpusPerPage));
    }
    nr_vcpus_ = n;
    if (options_.reattach) {
      id_ = *options_.reattach;
    } else if (dm_.create_ioreq_server(d, kBufioreqOff, &id_) != 0) {
      return Errno(absl::StrFormat("create_ioreq_server(domain %u)", d));
    }
    created_ = true;
    absl::Status s = MapPage();
    if (s.ok()) s = RegisterAll();
    if (s.ok() && dm_.set_ioreq_server_state(d, id_, 1) != 0) {
      s = Errno("set_ioreq_server_state(1)");
    }
    if (s.ok()) {
      enabled_ = true;
      s = BindPorts();
    }
    if (!s.ok()) {
      Stop();
      return s;
    }
    started_ = true;
    // A re-attached server's previous owner is gone: a slot it had taken
    // (INPROCESS) will never be answered by it, so it is ours now.
    RescanSlots(/*adopt_in_process=*/options_.reattach.has_value());
    return absl::OkStatus();
  }

  // Teardown in reverse order. Idempotent.
  void Stop() {
    const DomId d = options_.domid;
    if (created_) {
      for (Window& w : windows_) {
        if (w.registered) dm_.unmap_io_range(d, id_, 1, w.start, w.end);
        w.registered = false;
      }
      for (PciFn& f : pci_) {
        if (f.registered) dm_.unmap_pcidev(d, id_, f.seg, f.bus, f.dev, f.fn);
        f.registered = false;
      }
      std::erase_if(windows_,
                    [](const Window& w) { return w.bar_of != nullptr; });
      for (PciFn& f : pci_) f.bar.reset();
      if (enabled_) dm_.set_ioreq_server_state(d, id_, 0);
      enabled_ = false;
    }
    // Nothing new reaches us now; answer whatever is still READY (the
    // vCPU's event channel is still bound, so the answer wakes it).
    if (started_) RescanSlots();
    for (EvtchnPort p : local_ports_) {
      if (p != 0) ev_.unbind(p);
    }
    local_ports_.clear();
    port_vcpu_.clear();
    UnmapPage();
    if (created_ && options_.destroy_on_stop) dm_.destroy_ioreq_server(d, id_);
    created_ = false;
    started_ = false;
  }

  // Stops Xen routing requests here (disables the server) and answers what
  // raced in; ranges, page and ports stay until Stop(). Idempotent.
  void Disable() {
    if (!created_ || !enabled_) return;
    dm_.set_ioreq_server_state(options_.domid, id_, 0);
    enabled_ = false;
    if (started_) RescanSlots();
  }

  // Slots whose answer (IORESP_READY) the vCPU has not taken yet. Xen sets
  // the slot back to NONE when the vCPU runs again and consumes it; until
  // then destroying the server would lose the answer.
  unsigned UnconsumedAnswers() const {
    if (page_ == nullptr) return 0;
    unsigned n = 0;
    for (unsigned v = 0; v < nr_vcpus_; ++v) {
      if ((SlotByte30(page_[v]).load(std::memory_order_acquire) &
           kFlagStateMask) == kStateRespReady) {
        ++n;
      }
    }
    return n;
  }

  // Forgets everything without telling Xen (a crashed process): tests only.
  void Abandon() {
    local_ports_.clear();
    port_vcpu_.clear();
    if (resource_ != nullptr || legacy_page_ != nullptr) UnmapPage();
    created_ = enabled_ = started_ = false;
    for (Window& w : windows_) w.registered = false;
    for (PciFn& f : pci_) f.registered = false;
  }

  // --- dispatch
  // -------------------------------------------------------------------
  int fd() { return ev_.fd(); }

  // Waits up to `timeout_ms` for events and handles them. Returns false on
  // a fatal event-channel error.
  bool PollOnce(int timeout_ms) {
    pollfd pfd{ev_.fd(), POLLIN, 0};
    const int r = poll(&pfd, 1, timeout_ms);
    if (r < 0) return errno == EINTR;
    if (r == 0) return true;
    return HandleEvents();
  }

  // Drains the pending ports (fd readable). Never blocks: pending() is only
  // called while poll() says the fd is readable.
  bool HandleEvents() {
    for (int i = 0; i < 4096; ++i) {
      pollfd pfd{ev_.fd(), POLLIN, 0};
      if (poll(&pfd, 1, 0) <= 0) return true;
      const int port = ev_.pending();
      if (port < 0) {
        if (errno == EINTR || errno == EAGAIN) {
          ++stats_.pending_errors;
          continue;
        }
        Logf(LogLevel::kError, "%s: evtchn pending: %s", options_.name,
             std::strerror(errno));
        return false;
      }
      const auto p = static_cast<EvtchnPort>(port);
      // Unmask first: the vCPU waits for our answer, so no second event
      // for this port can arrive before we service the slot.
      ev_.unmask(p);
      auto it = port_vcpu_.find(p);
      if (it == port_vcpu_.end()) {
        ++stats_.spurious;
        continue;
      }
      ServiceSlot(it->second);
    }
    return true;
  }

  // Looks at every slot (after a (re)bind the notification may be lost).
  // `adopt_in_process`: also serve slots left INPROCESS (by a process that
  // died between taking a request and answering it).
  void RescanSlots(bool adopt_in_process = false) {
    if (page_ == nullptr) return;
    for (unsigned v = 0; v < nr_vcpus_ && v < local_ports_.size(); ++v) {
      ServiceSlot(v, /*count_spurious=*/false, adopt_in_process);
    }
  }

  // --- introspection
  // ----------------------------------------------------------------
  bool started() const { return started_; }
  IoServId id() const { return id_; }
  unsigned nr_vcpus() const { return nr_vcpus_; }
  bool used_legacy_page() const { return legacy_page_ != nullptr; }
  const IoreqStats& stats() const { return stats_; }
  const IoreqServerOptions& options() const { return options_; }
  // Test/fuzz hook: dispatch one already-decoded request.
  uint64_t DispatchForTest(const Ioreq& r) { return Dispatch(r); }

 private:
  struct PciFn;
  struct Window {
    uint64_t start = 0;
    uint64_t end = 0;  // inclusive
    IoDevice* dev = nullptr;
    std::string name;
    bool registered = false;
    const PciFn* bar_of = nullptr;  // a PCI BAR window
  };
  struct PciFn {
    uint32_t sbdf = 0;
    uint16_t seg = 0;
    uint8_t bus = 0, dev = 0, fn = 0;
    IoDevice* device = nullptr;
    std::string name;
    std::optional<std::pair<uint64_t, uint64_t>> bar;  // registered window
    bool registered = false;
  };

  // NotFound when the domain or the server does not exist (a reaper tells
  // "already gone" from "cannot attach" by it), Unavailable otherwise.
  absl::Status Errno(const std::string& what) const {
    const int e = errno;
    const std::string msg =
        absl::StrFormat("%s: %s failed: %s (%s)", options_.name, what,
                        std::strerror(e), XenErrnoHint(e));
    return e == ENOENT || e == ESRCH ? absl::NotFoundError(msg)
                                     : absl::UnavailableError(msg);
  }

  void SortWindows() {
    std::sort(
        windows_.begin(), windows_.end(),
        [](const Window& a, const Window& b) { return a.start < b.start; });
  }

  absl::Status MapPage() {
    void* addr = nullptr;
    resource_ = fm_.map_resource(options_.domid, kResourceIoreqServer, id_,
                                 ResourceFrameIoreq(0), 1, &addr,
                                 PROT_READ | PROT_WRITE, 0);
    if (resource_ != nullptr) {
      page_ = static_cast<IoreqSlot*>(addr);
      return absl::OkStatus();
    }
    const int e = errno;
    if (e != EOPNOTSUPP || !options_.legacy_fallback) {
      errno = e;
      return Errno("map_resource(ioreq page)");
    }
    // Old Xen/kernel on x86: the page via its gfn. Never mixed with the above.
    XenPfn gfn = 0;
    if (dm_.get_ioreq_server_info(options_.domid, id_, &gfn, nullptr,
                                  nullptr) != 0) {
      return Errno(
          "map_resource(ioreq page) unsupported and "
          "get_ioreq_server_info (legacy gfn)");
    }
    legacy_page_ =
        fm_.map(options_.domid, PROT_READ | PROT_WRITE, 1, &gfn, nullptr);
    if (legacy_page_ == nullptr)
      return Errno("foreign map of the legacy ioreq gfn");
    page_ = static_cast<IoreqSlot*>(legacy_page_);
    Logf(LogLevel::kInfo, "%s: ioreq page mapped through legacy gfn 0x%x",
         options_.name, gfn);
    return absl::OkStatus();
  }

  void UnmapPage() {
    if (resource_ != nullptr) fm_.unmap_resource(resource_);
    if (legacy_page_ != nullptr) fm_.unmap(legacy_page_, 1);
    resource_ = nullptr;
    legacy_page_ = nullptr;
    page_ = nullptr;
  }

  absl::Status RegisterAll() {
    for (Window& w : windows_) {
      if (w.bar_of != nullptr || w.registered) continue;
      // A re-attached server kept its ranges (EEXIST: already ours).
      if (dm_.map_io_range(options_.domid, id_, 1, w.start, w.end) != 0 &&
          !(options_.reattach && errno == EEXIST)) {
        return Errno(absl::StrFormat("%s: map_io_range 0x%x-0x%x", w.name,
                                     w.start, w.end));
      }
      w.registered = true;
    }
    for (PciFn& f : pci_) {
      if (f.registered) continue;
      if (dm_.map_pcidev(options_.domid, id_, f.seg, f.bus, f.dev, f.fn) != 0 &&
          !(options_.reattach && errno == EEXIST)) {
        return Errno(absl::StrFormat("%s: map_pcidev %02x:%02x.%x", f.name,
                                     f.bus, f.dev, f.fn));
      }
      f.registered = true;
      UpdateBar(f);
    }
    return absl::OkStatus();
  }

  absl::Status BindPorts() {
    local_ports_.assign(nr_vcpus_, 0);
    for (unsigned v = 0; v < nr_vcpus_; ++v) {
      // Written by Xen at enable time; read after set_ioreq_server_state.
      const uint32_t remote = std::atomic_ref<uint32_t>(page_[v].vp_eport)
                                  .load(std::memory_order_acquire);
      const int local = ev_.bind_interdomain(options_.domid, remote);
      if (local < 0) {
        return Errno(absl::StrFormat(
            "bind_interdomain(vCPU %u, remote port %u) (was the page mapped "
            "before enabling?)",
            v, remote));
      }
      local_ports_[v] = static_cast<EvtchnPort>(local);
      port_vcpu_[static_cast<EvtchnPort>(local)] = v;
    }
    return absl::OkStatus();
  }

  // PCI BAR tracking (DEMU's pci_bar_update): the server claims the BAR's
  // MMIO window only while the guest has memory decoding on.
  void UpdateBar(PciFn& f) {
    const auto want = f.device->BarWindow();
    if (want == f.bar) return;
    if (f.bar) {
      dm_.unmap_io_range(options_.domid, id_, 1, f.bar->first, f.bar->second);
      std::erase_if(windows_, [&](const Window& w) { return w.bar_of == &f; });
      f.bar.reset();
    }
    if (!want) return;
    for (const Window& w : windows_) {
      if (want->first <= w.end && w.start <= want->second) {
        if (limiter_.Allow()) {
          Logf(
              LogLevel::kWarning,
              "%s: guest placed the BAR of %s at 0x%x-0x%x over %s; not mapped",
              options_.name, f.name, want->first, want->second, w.name);
        }
        return;
      }
    }
    if (dm_.map_io_range(options_.domid, id_, 1, want->first, want->second) !=
        0) {
      Logf(LogLevel::kError, "%s: %s: map_io_range(BAR 0x%x-0x%x): %s",
           options_.name, f.name, want->first, want->second,
           std::strerror(errno));
      return;
    }
    // Rare (firmware and the guest kernel program a BAR a few times per
    // boot) and the first thing to check when a guest sees no device.
    Logf(LogLevel::kInfo, "%s: %s: BAR at 0x%x-0x%x claimed", options_.name,
         f.name, want->first, want->second);
    f.bar = want;
    windows_.push_back(
        Window{want->first, want->second, f.device, f.name, true, &f});
    SortWindows();
  }

  void ServiceSlot(unsigned v, bool count_spurious = true,
                   bool adopt_in_process = false) {
    IoreqSlot& slot = page_[v];
    auto b30 = SlotByte30(slot);
    const uint8_t f = b30.load(std::memory_order_acquire);
    const uint8_t state = f & kFlagStateMask;
    if (state != kStateReady &&
        !(adopt_in_process && state == kStateInProcess)) {
      if (count_spurious) ++stats_.spurious;
      return;
    }
    if (state == kStateInProcess) ++stats_.adopted;
    b30.store(static_cast<uint8_t>((f & ~kFlagStateMask) | kStateInProcess),
              std::memory_order_relaxed);
    Ioreq r;
    r.addr = slot.addr;
    r.data = slot.data;
    r.count = slot.count;
    r.size = slot.size;
    r.type = slot.type;
    r.read = f & kFlagDirRead;
    r.data_is_ptr = f & kFlagDataIsPtr;
    r.df = f & kFlagDf;
    slot.data = Dispatch(r);
    b30.store(static_cast<uint8_t>((f & ~kFlagStateMask) | kStateRespReady),
              std::memory_order_release);
    ev_.notify(local_ports_[v]);
  }

  static uint64_t Ones(uint32_t size) {
    return size >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * size)) - 1;
  }
  static bool SizeOk(uint32_t size) {
    return size == 1 || size == 2 || size == 4 || size == 8;
  }

  // What the slot's data becomes when we refuse a request.
  uint64_t Refuse(const Ioreq& r, uint64_t* counter, const char* why) {
    ++*counter;
    if (limiter_.Allow()) {
      Logf(LogLevel::kWarning,
           "%s: refused ioreq type %u %s addr 0x%x size %u count %u%s: %s",
           options_.name, r.type, r.read ? "read" : "write", r.addr, r.size,
           r.count, r.data_is_ptr ? " data_is_ptr" : "", why);
    }
    if (r.data_is_ptr || !r.read) return r.data;
    return SizeOk(r.size) ? Ones(r.size) : ~uint64_t{0};
  }

  uint64_t Dispatch(const Ioreq& r) {
    ++stats_.requests;
    switch (r.type) {
      case kTypeInvalidate:
        ++stats_.invalidates;
        if (on_invalidate_) on_invalidate_();
        return r.data;
      case kTypeTimeOffset:
        return r.data;
      case kTypeCopy:
        return HandleMmio(r);
      case kTypePciConfig:
        return HandlePciConfig(r);
      case kTypePio:
        return Refuse(r, &stats_.unclaimed, "no port I/O ranges registered");
      default:
        return Refuse(r, &stats_.invalid, "unknown ioreq type");
    }
  }

  const Window* FindWindow(uint64_t addr) const {
    auto it = std::upper_bound(
        windows_.begin(), windows_.end(), addr,
        [](uint64_t a, const Window& w) { return a < w.start; });
    if (it == windows_.begin()) return nullptr;
    --it;
    return addr <= it->end ? &*it : nullptr;
  }

  uint64_t HandleMmio(const Ioreq& r) {
    if (!SizeOk(r.size) || r.count == 0) {
      return Refuse(r, &stats_.invalid, "bad size or count");
    }
    if (r.count > kMaxRepCount)
      return Refuse(r, &stats_.invalid, "rep count too large");
    const uint64_t span = uint64_t{r.size} * r.count;
    uint64_t first = r.addr;
    if (r.df && r.count > 1) {
      if (r.addr < span - r.size)
        return Refuse(r, &stats_.invalid, "rep wraps");
      first = r.addr - (span - r.size);
    }
    const uint64_t last = first + span - 1;
    if (last < first) return Refuse(r, &stats_.invalid, "access wraps");
    const Window* w = FindWindow(first);
    if (w == nullptr)
      return Refuse(r, &stats_.unclaimed, "not in any of our ranges");
    if (last > w->end) {
      return Refuse(r, &stats_.straddles, "straddles the end of a range");
    }
    if (r.count == 1 && !r.data_is_ptr) {
      if (r.read)
        return w->dev->MmioRead(r.addr - w->start, r.size) & Ones(r.size);
      w->dev->MmioWrite(r.addr - w->start, r.size, r.data & Ones(r.size));
      return r.data;
    }
    ++stats_.rep;
    if (r.data_is_ptr && copier_ == nullptr) {
      Logf(LogLevel::kError,
           "%s: rep MMIO with data_is_ptr at 0x%x needs guest memory access; "
           "failing it",
           options_.name, r.addr);
      return Refuse(r, &stats_.invalid, "data_is_ptr without guest memory");
    }
    uint64_t last_read = 0;
    for (uint32_t i = 0; i < r.count; ++i) {
      const uint64_t step = uint64_t{i} * r.size;
      const uint64_t dev_addr = r.df ? r.addr - step : r.addr + step;
      const uint64_t buf = r.df ? r.data - step : r.data + step;
      uint64_t v = 0;
      if (r.read) {
        v = w->dev->MmioRead(dev_addr - w->start, r.size) & Ones(r.size);
        if (r.data_is_ptr) {
          if (!copier_->WriteGuest(buf, &v, r.size)) {
            return Refuse(r, &stats_.invalid,
                          "rep buffer outside guest memory");
          }
        } else {
          last_read = v;
        }
      } else {
        if (r.data_is_ptr) {
          if (!copier_->ReadGuest(buf, &v, r.size)) {
            return Refuse(r, &stats_.invalid,
                          "rep buffer outside guest memory");
          }
        } else {
          v = r.data & Ones(r.size);
        }
        w->dev->MmioWrite(dev_addr - w->start, r.size, v);
      }
    }
    return r.data_is_ptr || !r.read ? r.data : last_read;
  }

  uint64_t HandlePciConfig(const Ioreq& r) {
    if (r.count != 1 || r.data_is_ptr ||
        (r.size != 1 && r.size != 2 && r.size != 4)) {
      return Refuse(r, &stats_.invalid, "bad PCI config access");
    }
    const uint32_t sbdf = PciConfigSbdf(r.addr);
    const uint32_t reg = PciConfigReg(r.addr);
    for (PciFn& f : pci_) {
      if (f.sbdf != sbdf) continue;
      if (reg >= 4096 || reg % r.size != 0) {
        return Refuse(r, &stats_.invalid, "PCI config register out of range");
      }
      if (r.read) return f.device->ConfigRead(reg, r.size) & Ones(r.size);
      f.device->ConfigWrite(reg, r.size,
                            static_cast<uint32_t>(r.data & Ones(r.size)));
      UpdateBar(f);
      return r.data;
    }
    return Refuse(r, &stats_.unclaimed, "PCI function not ours");
  }

  DM& dm_;
  FM& fm_;
  EV& ev_;
  IoreqServerOptions options_;
  IoServId id_ = 0;
  unsigned nr_vcpus_ = 0;
  bool created_ = false;
  bool enabled_ = false;
  bool started_ = false;
  void* resource_ = nullptr;
  void* legacy_page_ = nullptr;
  IoreqSlot* page_ = nullptr;
  std::vector<EvtchnPort> local_ports_;
  std::unordered_map<EvtchnPort, unsigned> port_vcpu_;
  std::vector<Window> windows_;  // sorted by start
  std::deque<PciFn> pci_;        // stable addresses: windows point at them
  std::function<void()> on_invalidate_;
  GuestCopier* copier_ = nullptr;
  IoreqStats stats_;
  GuestErrorLimiter limiter_;
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_IOREQ_SERVER_H_
