// virtio/net_control_queue.h — the virtio-net control queue (VIRTIO 1.2
// §5.1.6.5) of a NetDevice (virtio/net_device.h).
//
// Commands are [class, command, data...][ack], acked kCtrlOk / kCtrlErr:
//   - RX, MAC, VLAN: the receive filter's (virtio/net_rx_filter.h);
//   - ANNOUNCE ACK: clears the ANNOUNCE bit of the config status;
//   - MQ VQ_PAIRS_SET (1..max_pairs), passed on to
//     backend.SetActivePairs();
//   - GUEST_OFFLOADS SET (a subset of the negotiated guest offloads),
//     passed on to backend.SetOffloads().
// Commands of features not negotiated, wrong data lengths and unknown
// commands get kCtrlErr.
//
// NetControlQueue keeps what those commands set beyond the filter: the
// active pairs and the guest offloads in force, both atomics because the
// pairs' threads read them while the control queue may run on another
// thread. The filter and the config status belong to the device, which
// lends them here.
//
// Example (inside the device):
//   NetControlQueue<Backend> ctrl(backend, filter, status, max_pairs);
//   ctrl.Run(ring, negotiated, [&] { interrupt.SignalQueue(q); },
//            [&](std::string_view why) { GuestError(why); });
#ifndef VIRTIO_NET_CONTROL_QUEUE_H_
#define VIRTIO_NET_CONTROL_QUEUE_H_

#include <atomic>
#include <cstdint>

#include "virtio/descriptor_chain.h"
#include "virtio/net_backend.h"
#include "virtio/net_rx_filter.h"
#include "virtio/net_spec.h"
#include "virtio/queue.h"
#include "virtio/ring_error.h"
#include "virtio/spec.h"

namespace virtio {

template <NetBackend Backend>
class NetControlQueue {
 public:
  // `backend`, `filter` and `status` (the config status word) must outlive
  // the queue.
  NetControlQueue(Backend& backend, NetRxFilter& filter,
                  std::atomic<uint16_t>& status, uint16_t max_pairs)
      : backend_(&backend),
        filter_(&filter),
        status_(&status),
        max_pairs_(max_pairs) {}

  // Pairs in use (VQ_PAIRS_SET; 1 until then).
  uint16_t active_pairs() const {
    return active_pairs_.load(std::memory_order_relaxed);
  }
  // Guest offloads (GUEST_* feature bits) currently in force.
  uint64_t guest_offloads() const {
    return guest_offloads_.load(std::memory_order_relaxed);
  }
  uint64_t commands() const { return commands_; }
  uint64_t errors() const { return errors_; }

  // DRIVER_OK: the negotiated guest offloads are in force and one pair is
  // active, as the spec says until the driver changes them. False if the
  // backend refused the offloads (they are recorded all the same).
  bool Start(uint64_t guest_offloads) {
    const bool accepted = backend_->SetOffloads(guest_offloads);
    guest_offloads_.store(guest_offloads, std::memory_order_relaxed);
    active_pairs_.store(1, std::memory_order_relaxed);
    backend_->SetActivePairs(1);
    return accepted;
  }

  // Device reset: no guest offloads, one pair; the backend is told only
  // what changed.
  void Reset() {
    if (guest_offloads_.exchange(0, std::memory_order_relaxed) != 0) {
      backend_->SetOffloads(0);
    }
    if (active_pairs_.exchange(1, std::memory_order_relaxed) != 1) {
      backend_->SetActivePairs(1);
    }
  }

  // Serves every command the ring holds, until it is empty with
  // notifications on. `signal()` interrupts the driver for this queue;
  // `guest_error(why)` reports a driver error.
  template <VirtQueue Q, typename Signal, typename GuestErrorFn>
  void Run(Q& ring, uint64_t negotiated, Signal&& signal,
           GuestErrorFn&& guest_error) {
    do {
      ring.DisableNotification();
      while (ring.Pop(chain_) == PopStatus::kChain) {
        const uint8_t ack = Handle(chain_, negotiated, guest_error);
        ++commands_;
        if (ack != net::kCtrlOk) ++errors_;
        uint32_t len = 0;
        if (chain_.ok() && chain_.writable_bytes() >= 1) {
          len = static_cast<uint32_t>(chain_.CopyToWritable(0, &ack, 1));
        }
        ring.Push(chain_.token(), len);
      }
      if (ring.Publish()) signal();
    } while (ring.error() == RingError::kNone && ring.EnableNotification());
  }

 private:
  template <typename GuestErrorFn>
  uint8_t Handle(const DescriptorChain& c, uint64_t negotiated,
                 GuestErrorFn& guest_error) {
    net::CtrlHeader h;
    if (!c.ok() || c.writable_bytes() < 1 ||
        c.CopyFromReadable(0, &h, sizeof h) != sizeof h) {
      guest_error("malformed control command");
      return net::kCtrlErr;
    }
    const uint64_t data_len = c.readable_bytes() - sizeof h;
    auto has = [&](unsigned bit) { return (negotiated & spec::Bit(bit)) != 0; };
    // Reads a fixed-size command argument; false unless exactly that long.
    auto arg = [&](void* out, size_t n) {
      return data_len == n && c.CopyFromReadable(sizeof h, out, n) == n;
    };
    if (NetRxFilter::IsFilterCommand(h.cls)) {
      return filter_->HandleCtrl(h, c, negotiated);
    }
    switch (h.cls) {
      case net::kCtrlAnnounce:
        if (!has(net::kFeatureGuestAnnounce) ||
            h.command != net::kCtrlAnnounceAck || data_len != 0) {
          break;
        }
        status_->fetch_and(static_cast<uint16_t>(~net::kStatusAnnounce),
                           std::memory_order_acq_rel);
        return net::kCtrlOk;
      case net::kCtrlMq: {
        uint16_t n;
        if (!has(net::kFeatureMq) || h.command != net::kCtrlMqVqPairsSet ||
            !arg(&n, 2) || n < net::kMinVqPairs || n > max_pairs_) {
          break;
        }
        if (!backend_->SetActivePairs(n)) break;
        active_pairs_.store(n, std::memory_order_relaxed);
        return net::kCtrlOk;
      }
      case net::kCtrlGuestOffloads: {
        uint64_t g;
        if (!has(net::kFeatureCtrlGuestOffloads) ||
            h.command != net::kCtrlGuestOffloadsSet || !arg(&g, 8) ||
            (g & ~(negotiated & net::kGuestOffloadFeatures)) != 0) {
          break;
        }
        if (!backend_->SetOffloads(g)) break;
        guest_offloads_.store(g, std::memory_order_relaxed);
        return net::kCtrlOk;
      }
      default:
        break;
    }
    return net::kCtrlErr;
  }

  Backend* backend_;
  NetRxFilter* filter_;
  std::atomic<uint16_t>* status_;
  uint16_t max_pairs_;
  // One chain for every command: they are served one at a time.
  DescriptorChain chain_{64};
  std::atomic<uint16_t> active_pairs_{1};
  std::atomic<uint64_t> guest_offloads_{0};
  uint64_t commands_ = 0;
  uint64_t errors_ = 0;
};

}  // namespace virtio

#endif  // VIRTIO_NET_CONTROL_QUEUE_H_
