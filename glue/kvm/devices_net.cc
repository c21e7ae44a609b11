// glue/kvm/devices_net.cc — virtio-net on the loopback or TAP backend.
//
// Kicks come through the slot's ioeventfds like every device's; the one
// extra is the backend's fd, watched on the I/O thread as the backend's
// wake-up rule says (virtio/catalog/net_wakeup.h: the loopback eventfd
// level-triggered and drained, the TAP fd edge-triggered), which then calls
// NetDevice::ServiceBackend(0) under the slot's mutex — the same thread as
// the kicks, as net_device.h requires.
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_format.h"
#include "slots.h"
#include <variant>

#include "virtio/catalog/backend_opener.h"
#include "virtio/catalog/net_wakeup.h"
#include "virtio/net_device.h"

namespace kvmglue {
namespace slots {
namespace {

template <typename Traits, typename Backend>
using Net = virtio::NetDevice<Traits, Backend>;

template <typename Traits, typename Backend>
Factory<typename Traits::Interrupt, Net<Traits, Backend>> NetFactory(
    const DeviceSpec& spec, Backend& backend) {
  virtio::NetDeviceOptions options{
      .name = spec.id, .queue_size = spec.device.queue_size.value_or(256)};
  options.ring.packed = spec.device.packed;
  options.ctrl_vq = spec.device.net.ctrl_vq;
  options.mtu = spec.device.net.mtu;
  if (spec.device.net.mac) options.mac = *spec.device.net.mac;
  return [&backend, options](const virtio::GuestMemoryMap& mem,
                             typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<Net<Traits, Backend>>> {
    return Net<Traits, Backend>::Create(mem, irq, backend, options);
  };
}

// Watches the backend's fd of pair 0 by its wake-up rule. The I/O thread
// has no EPOLLOUT watch nor timer: a stalled transmit (tx_blocked) resumes
// on the next kick or packet in.
template <typename Dev, typename Backend>
BackendStart<Dev> NetStart(Backend& backend) {
  static constexpr virtio::catalog::NetWakeup kWakeup =
      virtio::catalog::NetWakeupOf<Backend>();
  return [&backend](Dev& dev, IoThread& io, std::mutex& mu)
             -> absl::StatusOr<std::unique_ptr<Worker>> {
    const int fd = backend.pair(0).fd();
    if (fd < 0) return std::unique_ptr<Worker>();
    absl::Status s = io.Watch(
        fd,
        [&dev, &mu] {
          std::lock_guard<std::mutex> lock(mu);
          dev.ServiceBackend(0);
        },
        kWakeup.drain_eventfd, kWakeup.edge_triggered);
    if (!s.ok()) return s;
    return std::unique_ptr<Worker>();
  };
}

template <typename Backend>
absl::StatusOr<std::unique_ptr<VmmDevice>> MakeNet(
    const DeviceSpec& spec, const Placement& p, Vm& vm, MsiRouter& router,
    std::shared_ptr<Backend> backend) {
  // rx and tx of the one pair, and the control queue unless ctrl-vq=off.
  const uint16_t queues = spec.device.net.ctrl_vq ? 3 : 2;
  Backend& b = *backend;
  if (p.transport == TransportKind::kMmio) {
    using Dev = Net<MmioTraits, Backend>;
    return Make<Dev>(spec, p, vm, router, backend, queues,
                     NetFactory<MmioTraits>(spec, b), NetStart<Dev>(b));
  }
  using Dev = Net<PciTraits, Backend>;
  return Make<Dev>(spec, p, vm, router, backend, queues,
                   NetFactory<PciTraits>(spec, b), NetStart<Dev>(b));
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmmDevice>> CreateNet(const DeviceSpec& spec,
                                                     const Placement& p, Vm& vm,
                                                     MsiRouter& router) {
  absl::StatusOr<virtio::catalog::NetBackend> backend =
      virtio::catalog::OpenNetBackend(spec.device.net, spec.id);
  if (!backend.ok()) return backend.status();
  // ParseDeviceSpec admits loopback and TAP only; only they are built.
  if (auto* tap = std::get_if<std::shared_ptr<virtio::TapNet>>(&*backend)) {
    return MakeNet(spec, p, vm, router, *tap);
  }
  if (auto* lo = std::get_if<std::shared_ptr<virtio::LoopbackNet>>(&*backend)) {
    return MakeNet(spec, p, vm, router, *lo);
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: virtio-kvm has no net backend=%s", spec.id,
                      virtio::catalog::BackendName(spec.device.net.backend)));
}

}  // namespace slots
}  // namespace kvmglue
