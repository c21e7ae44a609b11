// glue/kvm/devices_net.cc — virtio-net on the loopback or TAP backend.
//
// Kicks come through the slot's ioeventfds like every device's; the one
// extra is the backend's fd (loopback: an eventfd bumped when packets were
// queued; TAP: the tap fd, readable when a packet arrived), watched on the
// I/O thread, which then calls NetDevice::ServiceBackend(0) under the
// slot's mutex — the same thread as the kicks, as net_device.h requires.
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_format.h"
#include "slots.h"
#include "virtio/backends/loopback_net.h"
#include "virtio/backends/tap_net.h"
#include "virtio/net_device.h"

namespace kvmglue {
namespace slots {
namespace {

template <typename Traits, typename Backend>
using Net = virtio::NetDevice<Traits, Backend>;

template <typename Traits, typename Backend>
Factory<typename Traits::Interrupt, Net<Traits, Backend>> NetFactory(
    const DeviceSpec& spec, Backend& backend) {
  return [&backend, name = spec.id, packed = spec.packed](
             const virtio::GuestMemoryMap& mem,
             typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<Net<Traits, Backend>>> {
    virtio::NetDeviceOptions options{.name = name, .queue_size = 256};
    options.ring.packed = packed;
    return Net<Traits, Backend>::Create(mem, irq, backend, options);
  };
}

// Watches the backend's fd of pair 0. The loopback fd is an eventfd (the
// I/O thread drains it); the TAP fd carries packets (left for Receive).
// TAP transmit stalls (tx_blocked) resume on the next kick or packet in;
// there is no EPOLLOUT watch.
template <typename Dev, typename Backend>
BackendStart<Dev> NetStart(Backend& backend, bool drain) {
  return [&backend, drain](Dev& dev, IoThread& io, std::mutex& mu)
             -> absl::StatusOr<std::unique_ptr<Worker>> {
    const int fd = backend.pair(0).fd();
    if (fd < 0) return std::unique_ptr<Worker>();
    absl::Status s = io.Watch(
        fd,
        [&dev, &mu] {
          std::lock_guard<std::mutex> lock(mu);
          dev.ServiceBackend(0);
        },
        drain, /*edge=*/!drain);
    if (!s.ok()) return s;
    return std::unique_ptr<Worker>();
  };
}

template <typename Backend>
absl::StatusOr<std::unique_ptr<VmmDevice>> MakeNet(
    const DeviceSpec& spec, const Placement& p, Vm& vm, MsiRouter& router,
    std::shared_ptr<Backend> backend, bool drain) {
  // rx, tx and the control queue (one pair).
  constexpr uint16_t kQueues = 3;
  Backend& b = *backend;
  if (p.transport == TransportKind::kMmio) {
    using Dev = Net<MmioTraits, Backend>;
    return Make<Dev>(spec, p, vm, router, backend, kQueues,
                     NetFactory<MmioTraits>(spec, b),
                     NetStart<Dev>(b, drain));
  }
  using Dev = Net<PciTraits, Backend>;
  return Make<Dev>(spec, p, vm, router, backend, kQueues,
                   NetFactory<PciTraits>(spec, b), NetStart<Dev>(b, drain));
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmmDevice>> CreateNet(const DeviceSpec& spec,
                                                     const Placement& p, Vm& vm,
                                                     MsiRouter& router) {
  if (spec.backend == "tap") {
    absl::StatusOr<std::unique_ptr<virtio::TapNet>> tap =
        virtio::TapNet::Open({.name = spec.ifname, .num_pairs = 1});
    if (!tap.ok()) return tap.status();
    return MakeNet<virtio::TapNet>(spec, p, vm, router,
                                   std::shared_ptr<virtio::TapNet>(*std::move(tap)),
                                   /*drain=*/false);
  }
  absl::StatusOr<std::unique_ptr<virtio::LoopbackNet>> lo =
      virtio::LoopbackNet::Create({.num_pairs = 1});
  if (!lo.ok()) return lo.status();
  return MakeNet<virtio::LoopbackNet>(
      spec, p, vm, router, std::shared_ptr<virtio::LoopbackNet>(*std::move(lo)),
      /*drain=*/true);
}

}  // namespace slots
}  // namespace kvmglue
