// virtio/ring_observer.h — optional hooks that see every chain a queue hands
// to the device and every used element it returns.
//
// A back-end that must remember what the device is doing outside the ring
// itself attaches an observer to a queue:
//
//   * vhost-user inflight tracking (INFLIGHT_SHMFD): mark a chain in flight
//     in a region that survives a back-end crash when it is popped, clear it
//     once its used element is published, and after a restart hand the
//     chains still marked back to the queue (SplitQueue/PackedQueue
//     ::Resubmit, see queue.h).
//   * vhost-user dirty-page logging (LOG_ALL during live migration): note the
//     device-writable buffers of each popped chain and log them, together
//     with the used element, when the chain is pushed.
//
// The observer type is a compile-time parameter of the queue (and of
// DeviceCore, through the hypervisor traits' optional `RingObserver` member
// type, see hypervisor.h), so a queue without one (NoRingObserver, the
// default) carries no cost at all, and one with it pays a null check and a
// direct, inlinable call per event: no virtual calls.
//
// The hooks run on the queue's thread, inside Pop()/Push()/Publish():
//
//   OnPop(chain, position, resubmitted)
//       after the chain was walked and validated, before Pop() returns it.
//       Split: `position` is the free-running available-ring index the head
//       was read from; chain.token().id is the head. Packed: `position` is
//       the ring offset of the chain's first descriptor; chain.token() holds
//       the buffer ID and the number of ring slots. `resubmitted` is true for
//       a chain handed back by Resubmit() (then `position` is meaningless):
//       the observer already knows it is in flight.
//   OnPush(token, len, position)
//       before the used element for `token` is written. Split: `position` is
//       the free-running used-ring index of the element; packed: the ring
//       offset of the descriptor that will hold it.
//   OnPublish(state)
//       right after the batch became visible to the driver (split: used->idx
//       stored; packed: the batch head's flags stored), with the queue's
//       position afterwards.
//
// Observers must not call back into the queue.
#ifndef VIRTIO_RING_OBSERVER_H_
#define VIRTIO_RING_OBSERVER_H_

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"

namespace virtio {

// The default: no hooks, and no code for them.
struct NoRingObserver {};

template <typename O>
concept RingObserver = requires(O& o, const DescriptorChain& chain,
                                UsedToken token, uint16_t position,
                                uint32_t len, bool resubmitted,
                                const QueueState& state) {
  { o.OnPop(chain, position, resubmitted) } -> std::same_as<void>;
  { o.OnPush(token, len, position) } -> std::same_as<void>;
  { o.OnPublish(state) } -> std::same_as<void>;
};

// What a queue's Observer parameter may be.
template <typename O>
concept RingObserverOrNone = std::same_as<O, NoRingObserver> || RingObserver<O>;

namespace internal {

// The traits' RingObserver member type, or NoRingObserver.
template <typename T>
struct RingObserverOfTraits {
  using type = NoRingObserver;
};
template <typename T>
requires requires { typename T::RingObserver; }
struct RingObserverOfTraits<T> {
  using type = typename T::RingObserver;
};

}  // namespace internal

template <typename T>
using RingObserverOf = typename internal::RingObserverOfTraits<T>::type;

}  // namespace virtio

#endif  // VIRTIO_RING_OBSERVER_H_
