// xen_glue/backend.h — what xen-virtio-backend does, over any ports.
//
// Backend<DM, FM, EV, GT> turns BackendArgs into running devices: resolves
// placement, claims it against the domain's other backends
// (placement.h), builds foreign-mapped guest memory (plus grant-mapped
// memory over GT for grant=on devices, grant_memory.h), creates each
// device (blk on io_uring, rng, console on a pty/stdio/socket/file, net on
// TAP or loopback) behind virtio-mmio (Xen SPI / ISA line) or virtio-pci
// (MSI-X via inject_msi, INTx), registers them with one IoreqServer and
// runs one dispatch loop: the event channel fd, each disk queue's
// completion fd, the console and net backends' fds and a stop fd
// (SIGTERM). The production binary instantiates it with the libxen ports,
// the tests with the simulator's.
//
// The guest's type (guest_type.h, set_guest_type(); main.cc asks Xen) decides
// which interrupt dm_ops are allowed on x86: ISA lines (virtio-mmio) and
// INTx need an HVM guest. Start() refuses devices that could only
// interrupt through them on any other guest (PVH crashed Xen 4.17 on
// set_isa_irq_level), and the sinks never issue them there either.
#ifndef XEN_GLUE_BACKEND_H_
#define XEN_GLUE_BACKEND_H_

#include <poll.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/backends/console_backends.h"
#include "virtio/backends/loopback_net.h"
#include "virtio/backends/tap_net.h"
#include "virtio/backends/uring_disk.h"
#include "virtio/blk_device.h"
#include "virtio/console_device.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/net_device.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/rng_device.h"
#include "xen_glue/device_spec.h"
#include "xen_glue/devices.h"
#include "xen_glue/foreign_memory.h"
#include "xen_glue/grant_memory.h"
#include "xen_glue/guest_type.h"
#include "xen_glue/ioreq_server.h"
#include "xen_glue/placement.h"

namespace virtio::xg {

namespace internal {
// Names PciTransport<Dev> only when selected (its constraint would fail for
// an MMIO device).
template <bool kPci, typename Dev>
struct TransportOf {
  using type = MmioTransport<Dev>;
};
template <typename Dev>
struct TransportOf<true, Dev> {
  using type = PciTransport<Dev>;
};
}  // namespace internal

template <DeviceModelPort DM, ForeignMemoryPort FM, EventChannelPort EV,
          GrantTablePort GT = NoGrantTable>
class Backend {
 public:
  // Every device sees guest memory through a XenGrantMemory over the
  // foreign mapping: grant=on devices through one with the grant table,
  // the others through one without (bit-63 addresses refused).
  using Memory = XenGrantMemory<GT, XenGuestMemory<FM>>;
  // grant=on devices get a GrantRelease per queue (their request grants
  // are unmapped before each completion is published); the others none
  // (a null observer costs a branch per pop/push).
  using Observer = GrantRelease<Memory>;
  struct MmioTraits {
    using Memory = Backend::Memory;
    using Interrupt = MmioInterrupt<XenIrqLine<DM>>;
    using RingObserver = Backend::Observer;
  };
  struct PciTraits {
    using Memory = Backend::Memory;
    using Interrupt = PciInterrupt<XenPciSink<DM>>;
    using RingObserver = Backend::Observer;
  };

  // `gt`: the grant table (libxengnttab) for grant=on devices; null when
  // unavailable (such devices are then refused at Start()).
  Backend(DM& dm, FM& fm, EV& ev, BackendArgs args, GT* gt = nullptr)
      : dm_(dm), fm_(fm), ev_(ev), gt_(gt), args_(std::move(args)) {}
  ~Backend() { Stop(); }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // The guest's type, before Start(). Default kUnknown: on x86 no ISA/INTx
  // dm_op is issued, so virtio-mmio and msix=off devices are refused.
  void set_guest_type(GuestType t) { guest_ = t; }
  GuestType guest_type() const { return guest_; }

  absl::Status Start() {
    if (!args_.domid) return absl::InvalidArgumentError("no domid");
    const DomId d = *args_.domid;
    if (absl::Status s = ResolvePlacement(args_.arch, args_.devices); !s.ok()) return s;
    if (absl::Status s = CheckInterruptsSafe(); !s.ok()) return s;
    if (!args_.claims_dir.empty()) {
      claims_ = std::make_unique<ClaimRegistry>(args_.claims_dir, d);
      if (absl::Status s = claims_->Acquire(ClaimsFor(args_.arch, args_.devices));
          !s.ok()) {
        return s;
      }
    }
    auto mem = XenGuestMemory<FM>::Create(fm_, d, args_.ram);
    if (!mem.ok()) return mem.status();
    memory_ = std::move(*mem);
    plain_ = std::make_unique<Memory>(nullptr, d, memory_.get());
    for (const DeviceSpec& spec : args_.devices) {
      if (!spec.grant) continue;
      if (gt_ == nullptr) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s: grant=on needs libxengnttab (/dev/xen/gntdev)", spec.id));
      }
      if (!granted_) granted_ = std::make_unique<Memory>(gt_, d, memory_.get());
    }
    server_ = std::make_unique<IoreqServer<DM, FM, EV>>(
        dm_, fm_, ev_, IoreqServerOptions{.domid = d, .name = "xen-virtio-backend"});
    server_->set_invalidate_hook([this] { memory_->Invalidate(); });
    server_->set_guest_copier(memory_.get());
    for (const DeviceSpec& spec : args_.devices) {
      absl::Status s = AddDevice(spec);
      if (!s.ok()) return s;
    }
    return server_->Start();
  }

  // One round of the loop. `stop_fd` (or -1): readable = stop. Returns
  // false when stopping (stop fd or a fatal error).
  bool RunOnce(int timeout_ms, int stop_fd = -1) {
    std::vector<pollfd> fds;
    fds.push_back({server_->fd(), POLLIN, 0});
    if (stop_fd >= 0) fds.push_back({stop_fd, POLLIN, 0});
    const size_t first_completion = fds.size();
    for (const Completion& c : completions_) fds.push_back({c.fd, POLLIN, 0});
    const size_t end_completions = fds.size();
    std::vector<std::pair<size_t, size_t>> ranges;
    std::vector<bool> timed;
    for (const Service& sv : services_) {
      const size_t b = fds.size();
      int t = -1;
      sv.fill(fds, t);
      ranges.emplace_back(b, fds.size());
      timed.push_back(t >= 0);
      if (t >= 0 && (timeout_ms < 0 || t < timeout_ms)) timeout_ms = t;
    }
    const int r = poll(fds.data(), fds.size(), timeout_ms);
    if (r < 0) return errno == EINTR;
    if (r > 0) ++busy_rounds_;
    if (stop_fd >= 0 && fds[1].revents) return false;
    if (fds[0].revents) {
      ++guest_events_;
      if (!server_->HandleEvents()) return false;
    }
    for (size_t i = first_completion; i < end_completions; ++i) {
      if (!fds[i].revents) continue;
      uint64_t v;
      (void)!read(fds[i].fd, &v, sizeof v);
      const Completion& c = completions_[i - first_completion];
      c.complete(c.ctx, c.queue);
    }
    for (size_t k = 0; k < services_.size(); ++k) {
      bool ready = r == 0 && timed[k];
      for (size_t i = ranges[k].first; i < ranges[k].second; ++i) {
        if (fds[i].revents) ready = true;
      }
      if (ready) services_[k].run();
    }
    return true;
  }

  void Run(int stop_fd) {
    while (RunOnce(-1, stop_fd)) {
    }
  }

  void Stop() {
    if (server_) server_->Stop();
    completions_.clear();
    services_.clear();
    devices_.clear();
    server_.reset();
    granted_.reset();
    plain_.reset();
    memory_.reset();
    if (claims_) claims_->Release();
    claims_.reset();
  }

  std::string Placement() const { return PlacementString(args_.devices); }
  // Rounds of RunOnce() in which poll() found an fd ready. A loop that
  // spins (a level-triggered fd nobody drains) shows up here.
  uint64_t busy_rounds() const { return busy_rounds_; }
  IoreqServer<DM, FM, EV>* server() { return server_.get(); }
  XenGuestMemory<FM>* memory() { return memory_.get(); }
  Memory* grant_memory() { return granted_.get(); }
  // The ACCESS_PLATFORM filter of grant=on device `id` (null otherwise).
  AccessPlatformMmio* access_platform(std::string_view id) {
    for (auto& h : devices_) {
      if (h->id == id) return h->ap.get();
    }
    return nullptr;
  }
  const BackendArgs& args() const { return args_; }

 private:
  struct Holder {
    virtual ~Holder() = default;
    std::string id;
    std::unique_ptr<AccessPlatformMmio> ap;  // grant=on: what the server calls
  };
  struct Service {
    // Adds the fds to poll; sets `timeout_ms` (>= 0) to be run after it.
    std::function<void(std::vector<pollfd>&, int& timeout_ms)> fill;
    std::function<void()> run;
  };
  struct Completion {
    int fd;
    uint16_t queue;
    void* ctx;
    void (*complete)(void*, uint16_t);
  };

  template <typename Traits, typename Dev, bool kPci>
  struct DeviceHolder : Holder {
    using Interrupt = typename Traits::Interrupt;
    std::conditional_t<kPci, XenPciSink<DM>, int> sink{};
    std::unique_ptr<Interrupt> irq;
    std::unique_ptr<UringDisk> disk;
    std::shared_ptr<void> backend;  // console / net backend
    // grant=on: one per queue; declared before `dev`, so they outlive its
    // rings.
    std::vector<std::unique_ptr<Observer>> observers;
    std::unique_ptr<Dev> dev;
    std::unique_ptr<typename internal::TransportOf<kPci, Dev>::type> transport;
    std::unique_ptr<IoDevice> io;
  };

  template <typename Traits, bool kPci>
  absl::StatusOr<std::unique_ptr<typename Traits::Interrupt>> MakeIrq(
      const DeviceSpec& spec, std::conditional_t<kPci, XenPciSink<DM>, int>& sink,
      uint16_t queues) {
    const DomId d = *args_.domid;
    if constexpr (kPci) {
      sink = XenPciSink<DM>{
          &dm_,  d, spec.pci_addr->seg, spec.pci_addr->bus, spec.pci_addr->dev,
          guest_};
      return std::make_unique<typename Traits::Interrupt>(sink, queues);
    } else {
      (void)queues;
      return std::make_unique<typename Traits::Interrupt>(XenIrqLine<DM>{
          &dm_, d,
          args_.arch == GuestArch::kArm ? IrqKind::kArmSpi : IrqKind::kX86Isa,
          *spec.irq, guest_});
    }
  }

  template <typename Traits, bool kPci>
  absl::Status AddTyped(const DeviceSpec& spec) {
    if (spec.type == DeviceType::kBlk) {
      using Dev = BlkDevice<Traits, UringDisk>;
      auto h = std::make_unique<DeviceHolder<Traits, Dev, kPci>>();
      auto disk = UringDisk::Open({.path = spec.path, .read_only = spec.readonly});
      if (!disk.ok()) {
        return absl::Status(disk.status().code(),
                            absl::StrFormat("%s: %s", spec.id, disk.status().message()));
      }
      h->disk = std::move(*disk);
      auto irq = MakeIrq<Traits, kPci>(spec, h->sink, 1);
      if (!irq.ok()) return irq.status();
      h->irq = std::move(*irq);
      BlkDeviceOptions options{.name = spec.id, .serial = spec.id};
      options.ring = Ring(spec);
      auto dev = Dev::Create(Mem(spec), *h->irq, *h->disk, options);
      if (!dev.ok()) return dev.status();
      h->dev = std::move(*dev);
      Dev* raw = h->dev.get();
      completions_.push_back({h->disk->queue(0).completion_fd(), 0, raw,
                              [](void* p, uint16_t q) {
                                static_cast<Dev*>(p)->CompleteRequests(q);
                              }});
      return Finish<Traits, Dev, kPci>(spec, std::move(h));
    }
    if (spec.type == DeviceType::kConsole) {
      if (spec.backend == "stdio") {
        return AddConsole<Traits, kPci>(spec, StdioConsoleBackend::Create({}));
      }
      if (spec.backend == "socket") {
        return AddConsole<Traits, kPci>(spec,
                                        SocketConsoleBackend::Create({.path = spec.path}));
      }
      if (spec.backend == "file") {
        return AddConsole<Traits, kPci>(spec, FileConsoleBackend::Create({.path = spec.path}));
      }
      return AddConsole<Traits, kPci>(spec, PtyConsoleBackend::Create({}));
    }
    if (spec.type == DeviceType::kNet) {
      if (spec.backend == "loopback") {
        return AddNet<Traits, kPci>(spec, LoopbackNet::Create({}), true);
      }
      return AddNet<Traits, kPci>(spec, TapNet::Open({.name = spec.ifname}), false);
    }
    using Dev = RngDevice<Traits>;
    auto h = std::make_unique<DeviceHolder<Traits, Dev, kPci>>();
    auto irq = MakeIrq<Traits, kPci>(spec, h->sink, 1);
    if (!irq.ok()) return irq.status();
    h->irq = std::move(*irq);
    RngOptions options{.name = spec.id};
    options.ring = Ring(spec);
    h->dev = std::make_unique<Dev>(Mem(spec), *h->irq, options);
    return Finish<Traits, Dev, kPci>(spec, std::move(h));
  }

  static RingFeatureOptions Ring(const DeviceSpec& spec) {
    RingFeatureOptions r;
    r.packed = spec.packed;
    return r;
  }

  const Memory& Mem(const DeviceSpec& spec) const {
    return spec.grant ? *granted_ : *plain_;
  }

  template <typename Traits, bool kPci, typename B>
  absl::Status AddConsole(const DeviceSpec& spec,
                          absl::StatusOr<std::unique_ptr<B>> backend) {
    if (!backend.ok()) {
      return absl::Status(backend.status().code(),
                          absl::StrFormat("%s: %s", spec.id, backend.status().message()));
    }
    using Dev = ConsoleDevice<Traits, B>;
    auto h = std::make_unique<DeviceHolder<Traits, Dev, kPci>>();
    B* b = backend->get();
    h->backend = std::shared_ptr<B>(std::move(*backend));
    // One port, no MULTIPORT: 2 queues (receiveq, transmitq).
    auto irq = MakeIrq<Traits, kPci>(spec, h->sink, 2);
    if (!irq.ok()) return irq.status();
    h->irq = std::move(*irq);
    B* const ports[] = {b};
    ConsoleOptions options{.name = spec.id};
    options.ring = Ring(spec);
    auto dev = Dev::Create(Mem(spec), *h->irq, ports, options);
    if (!dev.ok()) return dev.status();
    h->dev = std::move(*dev);
    Dev* raw = h->dev.get();
    services_.push_back(
        {[raw](std::vector<pollfd>& fds, int& timeout) {
           fds.push_back({raw->wakeup_fd(), POLLIN, 0});
           const ConsolePollSet ps = raw->BackendPoll(0);
           for (const ConsolePoll& p : ps.fds) {
             if (p.fd >= 0 && p.events != 0) fds.push_back({p.fd, p.events, 0});
           }
           timeout = ps.timeout_ms;
         },
         [raw] {
           uint64_t v;
           (void)!read(raw->wakeup_fd(), &v, sizeof v);
           raw->ServiceBackend(0);
         }});
    return Finish<Traits, Dev, kPci>(spec, std::move(h));
  }

  template <typename Traits, bool kPci, typename B>
  absl::Status AddNet(const DeviceSpec& spec, absl::StatusOr<std::unique_ptr<B>> backend,
                      bool drain) {
    if (!backend.ok()) {
      return absl::Status(backend.status().code(),
                          absl::StrFormat("%s: %s", spec.id, backend.status().message()));
    }
    using Dev = NetDevice<Traits, B>;
    auto h = std::make_unique<DeviceHolder<Traits, Dev, kPci>>();
    B* b = backend->get();
    h->backend = std::shared_ptr<B>(std::move(*backend));
    // receiveq, transmitq, controlq.
    auto irq = MakeIrq<Traits, kPci>(spec, h->sink, 3);
    if (!irq.ok()) return irq.status();
    h->irq = std::move(*irq);
    NetDeviceOptions options{.name = spec.id};
    options.ring.packed = spec.packed;
    auto dev = Dev::Create(Mem(spec), *h->irq, *b, options);
    if (!dev.ok()) return dev.status();
    h->dev = std::move(*dev);
    Dev* raw = h->dev.get();
    // A TAP stays readable while the guest has no receive buffers (before
    // its driver loads, or when it falls behind), and poll() is level
    // triggered: polling it for input then spins. Seen on real Xen: the
    // backend took a quarter of dom0's CPU while the guest booted. A pair
    // whose service left packets behind is not polled for input again
    // until the guest next reaches us through an ioreq (its rx kick is
    // one; the device reads the TAP itself then). guest_events_ counts them.
    auto starved_at =
        std::make_shared<std::vector<uint64_t>>(b->num_pairs(), ~uint64_t{0});
    services_.push_back(
        {[this, raw, b, starved_at, drain](std::vector<pollfd>& fds, int&) {
           for (uint16_t p = 0; p < b->num_pairs(); ++p) {
             const bool starved = !drain && (*starved_at)[p] == guest_events_;
             const short ev = static_cast<short>(
                 (starved ? 0 : POLLIN) | (raw->tx_blocked(p) ? POLLOUT : 0));
             if (b->pair(p).fd() >= 0) fds.push_back({b->pair(p).fd(), ev, 0});
           }
         },
         [this, raw, b, starved_at, drain] {
           for (uint16_t p = 0; p < b->num_pairs(); ++p) {
             const int fd = b->pair(p).fd();
             if (drain && fd >= 0) {
               uint64_t v;
               (void)!read(fd, &v, sizeof v);
             }
             raw->ServiceBackend(p);
             if (!drain && fd >= 0) {
               pollfd left{fd, POLLIN, 0};
               if (poll(&left, 1, 0) > 0 && (left.revents & POLLIN)) {
                 (*starved_at)[p] = guest_events_;
               }
             }
           }
         }});
    return Finish<Traits, Dev, kPci>(spec, std::move(h));
  }

  template <typename Traits, typename Dev, bool kPci>
  absl::Status Finish(const DeviceSpec& spec,
                      std::unique_ptr<DeviceHolder<Traits, Dev, kPci>> h) {
    absl::Status s;
    if (spec.grant) {
      for (uint16_t q = 0; q < h->dev->num_queues(); ++q) {
        h->observers.push_back(std::make_unique<Observer>(
            granted_.get(), h->dev->queue_max_size(q)));
        h->dev->SetQueueObserver(q, h->observers.back().get());
      }
    }
    if constexpr (kPci) {
      h->transport = std::make_unique<PciTransport<Dev>>(*h->dev);
      h->io = std::make_unique<PciTransportDevice<PciTransport<Dev>>>(
          *h->transport, spec.msix);
      s = server_->AddPci(spec.pci_addr->seg, spec.pci_addr->bus,
                          spec.pci_addr->dev, spec.pci_addr->fn, h->io.get(), spec.id);
    } else {
      h->transport = std::make_unique<MmioTransport<Dev>>(*h->dev);
      h->io = std::make_unique<MmioTransportDevice<MmioTransport<Dev>>>(*h->transport);
      IoDevice* io = h->io.get();
      if (spec.grant) {
        h->ap = std::make_unique<AccessPlatformMmio>(*io);
        io = h->ap.get();
      }
      s = server_->AddMmio(*spec.mmio_base, kVirtioMmioSize, io, spec.id);
    }
    h->id = spec.id;
    devices_.push_back(std::move(h));
    return s;
  }

  // x86: a device whose only interrupt is a level dm_op (virtio-mmio: an
  // ISA line; virtio-pci with msix=off: INTx) needs an HVM guest. A
  // virtio-pci device with MSI-X is allowed on any guest: its INTx
  // fallback (before the driver enables MSI-X) is never issued outside
  // HVM, and inject_msi returned 0 on PVH (delivery not observed).
  absl::Status CheckInterruptsSafe() const {
    if (args_.arch != GuestArch::kX86 || LevelIrqDmOpsSafe(guest_)) {
      return absl::OkStatus();
    }
    for (const DeviceSpec& spec : args_.devices) {
      if (!spec.pci) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s: virtio-mmio on x86 interrupts through ISA IRQ %u "
            "(set_isa_irq_level), refused: %s",
            spec.id, spec.irq.value_or(0), LevelIrqRefusal(guest_)));
      }
      if (!spec.msix) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s: msix=off interrupts through INTx (set_pci_intx_level), "
            "refused: %s",
            spec.id, LevelIrqRefusal(guest_)));
      }
    }
    if (guest_ == GuestType::kPvh) {
      Logf(LogLevel::kWarning,
           "xen: the guest is PVH: it has no PCI bus (Linux finds no config "
           "space access), so its kernel will not see the virtio-pci devices; "
           "INTx is never asserted for it");
    }
    return absl::OkStatus();
  }

  absl::Status AddDevice(const DeviceSpec& spec) {
    if (spec.pci) return AddTyped<PciTraits, true>(spec);
    return AddTyped<MmioTraits, false>(spec);
  }

  DM& dm_;
  FM& fm_;
  EV& ev_;
  GT* gt_;
  BackendArgs args_;
  GuestType guest_ = GuestType::kUnknown;
  std::unique_ptr<ClaimRegistry> claims_;
  std::unique_ptr<XenGuestMemory<FM>> memory_;
  std::unique_ptr<Memory> plain_;    // foreign mapping only
  std::unique_ptr<Memory> granted_;  // + grant references
  std::unique_ptr<IoreqServer<DM, FM, EV>> server_;
  std::vector<std::unique_ptr<Holder>> devices_;
  std::vector<Completion> completions_;
  std::vector<Service> services_;
  uint64_t guest_events_ = 0;  // rounds in which the guest sent ioreqs
  uint64_t busy_rounds_ = 0;   // rounds in which poll() returned > 0
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_BACKEND_H_
