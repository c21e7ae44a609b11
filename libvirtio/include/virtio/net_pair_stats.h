// virtio/net_pair_stats.h — the counters a NetDevice (virtio/net_device.h)
// keeps per queue pair.
//
// Plain integers, not atomics: each is written only by its pair's thread
// (the threading rules in net_device.h), so the per-packet path pays for no
// atomic updates. NetDevice::total_stats() sums them over the pairs.
#ifndef VIRTIO_NET_PAIR_STATS_H_
#define VIRTIO_NET_PAIR_STATS_H_

#include <cstdint>

namespace virtio {

// Per-pair counters, maintained by the pair's thread.
struct NetPairStats {
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;  // frame bytes, headers excluded
  // Chains not ok(), with writable parts, too short, or failing header /
  // length validation: dropped, returned with length 0.
  uint64_t tx_malformed = 0;
  // Dropped by the backend, or while the link was down.
  uint64_t tx_dropped = 0;
  // Times transmit stalled on a busy backend.
  uint64_t tx_busy = 0;
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  // Too big for the guest's buffers, link down, bad length, or needing an
  // offload the guest did not accept.
  uint64_t rx_dropped = 0;
  // Rejected by the MAC / VLAN filter.
  uint64_t rx_filtered = 0;
  // Unusable rx chains returned with length 0.
  uint64_t rx_bad_buffers = 0;
  // Times receive waited for the guest to post buffers.
  uint64_t rx_stalls = 0;
};

}  // namespace virtio

#endif  // VIRTIO_NET_PAIR_STATS_H_
