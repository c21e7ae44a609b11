// xen_glue/backend.h — what xen-virtio-backend does, over any ports.
//
// Backend<DM, FM, EV> turns BackendArgs into running devices: resolves
// placement, claims it against the domain's other backends
// (placement.h), builds foreign-mapped guest memory, creates each device
// (blk on io_uring, rng) behind virtio-mmio (Xen SPI / ISA line) or
// virtio-pci (MSI-X via inject_msi, INTx), registers them with one
// IoreqServer and runs one dispatch loop: the event channel fd, each
// disk queue's completion fd and a stop fd (SIGTERM). The production
// binary instantiates it with the libxen ports, the tests with the
// simulator's.
#ifndef XEN_GLUE_BACKEND_H_
#define XEN_GLUE_BACKEND_H_

#include <poll.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/backends/uring_disk.h"
#include "virtio/blk_device.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/rng_device.h"
#include "xen_glue/device_spec.h"
#include "xen_glue/devices.h"
#include "xen_glue/foreign_memory.h"
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

template <DeviceModelPort DM, ForeignMemoryPort FM, EventChannelPort EV>
class Backend {
 public:
  struct MmioTraits {
    using Memory = XenGuestMemory<FM>;
    using Interrupt = MmioInterrupt<XenIrqLine<DM>>;
  };
  struct PciTraits {
    using Memory = XenGuestMemory<FM>;
    using Interrupt = PciInterrupt<XenPciSink<DM>>;
  };

  Backend(DM& dm, FM& fm, EV& ev, BackendArgs args)
      : dm_(dm), fm_(fm), ev_(ev), args_(std::move(args)) {}
  ~Backend() { Stop(); }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  absl::Status Start() {
    if (!args_.domid) return absl::InvalidArgumentError("no domid");
    const DomId d = *args_.domid;
    if (absl::Status s = ResolvePlacement(args_.arch, args_.devices); !s.ok()) return s;
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
    const int r = poll(fds.data(), fds.size(), timeout_ms);
    if (r < 0) return errno == EINTR;
    if (stop_fd >= 0 && fds[1].revents) return false;
    if (fds[0].revents && !server_->HandleEvents()) return false;
    for (size_t i = first_completion; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      uint64_t v;
      (void)!read(fds[i].fd, &v, sizeof v);
      const Completion& c = completions_[i - first_completion];
      c.complete(c.ctx, c.queue);
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
    devices_.clear();
    server_.reset();
    memory_.reset();
    if (claims_) claims_->Release();
    claims_.reset();
  }

  std::string Placement() const { return PlacementString(args_.devices); }
  IoreqServer<DM, FM, EV>* server() { return server_.get(); }
  XenGuestMemory<FM>* memory() { return memory_.get(); }
  const BackendArgs& args() const { return args_; }

 private:
  struct Holder {
    virtual ~Holder() = default;
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
      sink = XenPciSink<DM>{&dm_, d, spec.pci_addr->seg, spec.pci_addr->bus,
                            spec.pci_addr->dev};
      return std::make_unique<typename Traits::Interrupt>(sink, queues);
    } else {
      (void)queues;
      return std::make_unique<typename Traits::Interrupt>(XenIrqLine<DM>{
          &dm_, d, args_.arch == GuestArch::kArm ? IrqKind::kArmSpi : IrqKind::kX86Isa,
          *spec.irq});
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
      auto dev = Dev::Create(*memory_, *h->irq, *h->disk,
                             {.name = spec.id, .serial = spec.id});
      if (!dev.ok()) return dev.status();
      h->dev = std::move(*dev);
      Dev* raw = h->dev.get();
      completions_.push_back({h->disk->queue(0).completion_fd(), 0, raw,
                              [](void* p, uint16_t q) {
                                static_cast<Dev*>(p)->CompleteRequests(q);
                              }});
      return Finish<Traits, Dev, kPci>(spec, std::move(h));
    }
    using Dev = RngDevice<Traits>;
    auto h = std::make_unique<DeviceHolder<Traits, Dev, kPci>>();
    auto irq = MakeIrq<Traits, kPci>(spec, h->sink, 1);
    if (!irq.ok()) return irq.status();
    h->irq = std::move(*irq);
    h->dev = std::make_unique<Dev>(*memory_, *h->irq, RngOptions{.name = spec.id});
    return Finish<Traits, Dev, kPci>(spec, std::move(h));
  }

  template <typename Traits, typename Dev, bool kPci>
  absl::Status Finish(const DeviceSpec& spec,
                      std::unique_ptr<DeviceHolder<Traits, Dev, kPci>> h) {
    absl::Status s;
    if constexpr (kPci) {
      h->transport = std::make_unique<PciTransport<Dev>>(*h->dev);
      h->io = std::make_unique<PciTransportDevice<PciTransport<Dev>>>(*h->transport);
      s = server_->AddPci(spec.pci_addr->seg, spec.pci_addr->bus,
                          spec.pci_addr->dev, spec.pci_addr->fn, h->io.get(), spec.id);
    } else {
      h->transport = std::make_unique<MmioTransport<Dev>>(*h->dev);
      h->io = std::make_unique<MmioTransportDevice<MmioTransport<Dev>>>(*h->transport);
      s = server_->AddMmio(*spec.mmio_base, kVirtioMmioSize, h->io.get(), spec.id);
    }
    devices_.push_back(std::move(h));
    return s;
  }

  absl::Status AddDevice(const DeviceSpec& spec) {
    if (spec.pci) return AddTyped<PciTraits, true>(spec);
    return AddTyped<MmioTraits, false>(spec);
  }

  DM& dm_;
  FM& fm_;
  EV& ev_;
  BackendArgs args_;
  std::unique_ptr<ClaimRegistry> claims_;
  std::unique_ptr<XenGuestMemory<FM>> memory_;
  std::unique_ptr<IoreqServer<DM, FM, EV>> server_;
  std::vector<std::unique_ptr<Holder>> devices_;
  std::vector<Completion> completions_;
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_BACKEND_H_
