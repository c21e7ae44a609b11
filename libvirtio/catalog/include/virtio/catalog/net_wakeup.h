// virtio/catalog/net_wakeup.h — how an event loop must watch each bundled
// net backend's per-pair fd (NetBackend::Pair::fd()) so that
// NetDevice::ServiceBackend runs when there is work, and never spins.
//
//   TapNet        the fd carries packets: watch it edge-triggered (a stalled
//                 receive waits for the guest's rx kick, not for the fd),
//                 and for writability while transmit is blocked (the tap
//                 queue was full). Never read it outside the backend.
//   LoopbackNet   an eventfd bumped when frames were queued: level, drained
//                 before servicing. A transmit held because the loopback
//                 ring was full is retried on a timer (receiving makes room
//                 without any event).
//   GeneratorNet  an eventfd that stays readable (never drained): its pair
//                 is serviced on every round; blocked transmit as loopback.
//   NullNet       no fd (transmit never blocks, nothing to receive).
//
// Glues read the rule with NetWakeupOf<Backend>() rather than testing the
// backend type themselves.
#ifndef VIRTIO_CATALOG_NET_WAKEUP_H_
#define VIRTIO_CATALOG_NET_WAKEUP_H_

#include "virtio/backends/generator_net.h"
#include "virtio/backends/loopback_net.h"
#include "virtio/backends/null_net.h"
#include "virtio/backends/tap_net.h"

namespace virtio::catalog {

struct NetWakeup {
  // Watch the fd edge-triggered (else level-triggered).
  bool edge_triggered = false;
  // The fd is an eventfd to read (reset) before servicing the pair.
  bool drain_eventfd = false;
  // While NetDevice::tx_blocked(pair), also wait for the fd to be writable.
  bool writable_unblocks_tx = false;
  // While NetDevice::tx_blocked(pair), service the pair again after this
  // many milliseconds (nothing signals the room); -1: no timer needed.
  int blocked_tx_retry_ms = -1;
};

// The rule for one of the bundled backends (a compile error for others).
template <typename Backend>
constexpr NetWakeup NetWakeupOf() = delete;
template <>
constexpr NetWakeup NetWakeupOf<TapNet>() {
  return {.edge_triggered = true, .writable_unblocks_tx = true};
}
template <>
constexpr NetWakeup NetWakeupOf<LoopbackNet>() {
  return {.drain_eventfd = true, .blocked_tx_retry_ms = 1};
}
template <>
constexpr NetWakeup NetWakeupOf<GeneratorNet>() {
  return {.blocked_tx_retry_ms = 1};
}
template <>
constexpr NetWakeup NetWakeupOf<NullNet>() {
  return {.blocked_tx_retry_ms = 1};
}

// Reads (resets) an eventfd; a no-op when nothing was signalled.
void DrainEventFd(int fd);

}  // namespace virtio::catalog

#endif  // VIRTIO_CATALOG_NET_WAKEUP_H_
