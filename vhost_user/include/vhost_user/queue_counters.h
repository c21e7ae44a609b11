// vhost_user/queue_counters.h — one queue's statistics for the life of the
// device (across front-end connections): requests, bytes, chains refused
// by kind, ring errors, kicks and publishes. Counted on the data path by
// the queue's own worker (QueueObserver, the event loop, DeviceAdapter) as
// relaxed single-writer stores on the queue's own cache line, and read by
// any thread (vhost-user-device's control socket) without a lock.
#ifndef VHOST_USER_QUEUE_COUNTERS_H_
#define VHOST_USER_QUEUE_COUNTERS_H_

#include <atomic>
#include <cstdint>

#include "virtio/ring_error.h"

namespace vhost_user {

// One queue's counters (see the top of this file).
struct alignas(64) QueueCounters {
  // Chains popped (resubmitted ones included) and used elements pushed.
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> completions{0};
  // Chains popped and not yet pushed since the queue last started.
  std::atomic<uint64_t> in_flight{0};
  // Device-readable bytes of the chains popped (what the driver offered the
  // device: data to write, packets to send, headers), and the used lengths
  // pushed (what the device wrote into guest memory).
  std::atomic<uint64_t> bytes_from_driver{0};
  std::atomic<uint64_t> bytes_to_driver{0};
  // Kick eventfd reads.
  std::atomic<uint64_t> kicks{0};
  // Used-ring publishes (each may or may not notify the driver: the
  // notifications sent are the interrupt sink's count).
  std::atomic<uint64_t> publishes{0};
  // Chains refused because a buffer lies outside guest memory (or its
  // address overflows).
  std::atomic<uint64_t> bad_address_chains{0};
  // Chains refused for any other defect the ring layer found (a readable
  // descriptor after a writable one, too large, too many segments).
  std::atomic<uint64_t> malformed_chains{0};
  // Ring errors (the ring cannot be walked: a descriptor loop, an index out
  // of range, ...; the device then needs a reset), and the last one's kind.
  std::atomic<uint64_t> ring_errors{0};
  std::atomic<virtio::RingError> last_ring_error{virtio::RingError::kNone};

  // Single writer: no atomic read-modify-write needed.
  static void Add(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  static void Bump(std::atomic<uint64_t>& c) { Add(c, 1); }
  static uint64_t Read(const std::atomic<uint64_t>& c) {
    return c.load(std::memory_order_relaxed);
  }
};

}  // namespace vhost_user

#endif  // VHOST_USER_QUEUE_COUNTERS_H_
