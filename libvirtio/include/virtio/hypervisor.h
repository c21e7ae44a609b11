// virtio/hypervisor.h — what a glue supplies to the device layer.
//
// Devices (virtio/blk_device.h, ...) and the transport-independent device
// model (virtio/device_core.h) are templates over a *hypervisor traits* type
// that names two things, checked at compile time by `HypervisorTraits`:
//
//   * `Memory`: guest memory, satisfying `GuestMemory` (guest_memory.h).
//   * `Interrupt`: how the device tells the driver that a queue has used
//     buffers, or that the configuration changed. Each transport provides
//     one: virtio-mmio sets InterruptStatus and raises its line
//     (MmioInterrupt), virtio-pci sends the MSI-X vector bound to the queue
//     or raises INTx (PciInterrupt), vhost-user writes the queue's call
//     eventfd. Tests use a recording sink.
//
// and may name a third:
//
//   * `RingObserver` (optional): a type satisfying `RingObserver`
//     (ring_observer.h) whose hooks see every chain popped, pushed and
//     published on a queue; DeviceCore::EnableQueue attaches one per queue.
//     vhost-user uses it for inflight tracking and dirty-page logging.
//     Without it, the queues carry no hook code at all.
//
// No virtual calls: every call is resolved at compile time.
//
// Example (a glue for some hypervisor):
//   struct MyTraits {
//     using Memory = virtio::GuestMemoryMap;
//     using Interrupt = virtio::MmioInterrupt<MyIrqLine>;
//   };
//   static_assert(virtio::HypervisorTraits<MyTraits>);
//   virtio::RngDevice<MyTraits> rng(memory, interrupt, {});
#ifndef VIRTIO_HYPERVISOR_H_
#define VIRTIO_HYPERVISOR_H_

#include <concepts>
#include <cstdint>

#include "virtio/guest_memory.h"

namespace virtio {

// Delivers used-buffer and configuration-change notifications to the driver.
// Called from queue threads (SignalQueue, one thread per queue at a time)
// and from the transport thread (SignalConfig).
template <typename I>
concept InterruptSink = requires(I& irq, uint16_t queue) {
  { irq.SignalQueue(queue) } -> std::same_as<void>;
  { irq.SignalConfig() } -> std::same_as<void>;
};

template <typename T>
concept HypervisorTraits = GuestMemory<typename T::Memory> &&
                           InterruptSink<typename T::Interrupt>;
// (The RingObserver member, when present, is checked where DeviceCore
// instantiates its queues: ring_observer.h depends on the queue headers.)

}  // namespace virtio

#endif  // VIRTIO_HYPERVISOR_H_
