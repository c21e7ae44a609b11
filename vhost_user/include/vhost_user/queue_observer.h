// vhost_user/queue_observer.h — the ring observer (virtio/ring_observer.h)
// vhost-user attaches to every queue it runs: it forwards each pop, push and
// publish to the features that need them, each present only while enabled:
//
//   * inflight tracking (INFLIGHT_SHMFD; inflight_queue.h), so that a
//     restarted back-end resubmits exactly the requests it had in flight;
//   * dirty-page logging (LOG_SHMFD / VHOST_F_LOG_ALL; dirty_log.h), so that
//     a live migration copies every page the device wrote;
//   * the queue's statistics (queue_counters.h: requests, bytes, chains
//     refused by kind), when the device keeps them.
//
// One QueueObserver per queue, owned by the Backend at a fixed address for
// its lifetime; its parts are attached and detached only while the queue
// is stopped, so the data path reads them without synchronisation.
#ifndef VHOST_USER_QUEUE_OBSERVER_H_
#define VHOST_USER_QUEUE_OBSERVER_H_

#include <cstdint>

#include "vhost_user/dirty_log.h"
#include "vhost_user/inflight_queue.h"
#include "vhost_user/queue_activity.h"
#include "vhost_user/queue_counters.h"
#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"

namespace vhost_user {

// The ring observer of one queue: forwards ring events to the parts that
// are attached (see the top of this file).
class QueueObserver {
 public:
  // Attached parts (null: off). Change only while the queue is stopped.
  InflightQueue* inflight = nullptr;
  DirtyLogQueue* dirty_log = nullptr;
  // The device's statistics for this queue (VhostDevice::queue_counters);
  // set once when the Backend is made.
  QueueCounters* counters = nullptr;
  // Always counted (stall diagnosis).
  QueueActivity activity;

  void OnPop(const virtio::DescriptorChain& chain, uint16_t position,
             bool resubmitted) {
    QueueActivity::Bump(activity.pops);
    if (counters != nullptr) Count(chain);
    if (inflight != nullptr) inflight->OnPop(chain, position, resubmitted);
    if (dirty_log != nullptr) dirty_log->OnPop(chain, position, resubmitted);
  }
  void OnPush(virtio::UsedToken token, uint32_t len, uint16_t position) {
    QueueActivity::Bump(activity.pushes);
    if (counters != nullptr) {
      QueueCounters::Bump(counters->completions);
      QueueCounters::Add(counters->bytes_to_driver, len);
      const uint64_t n = QueueCounters::Read(counters->in_flight);
      if (n > 0) counters->in_flight.store(n - 1, std::memory_order_relaxed);
    }
    if (inflight != nullptr) inflight->OnPush(token, len, position);
    if (dirty_log != nullptr) dirty_log->OnPush(token, len, position);
  }
  void OnPublish(const virtio::QueueState& state) {
    if (counters != nullptr) QueueCounters::Bump(counters->publishes);
    if (inflight != nullptr) inflight->OnPublish(state);
    if (dirty_log != nullptr) dirty_log->OnPublish(state);
  }

 private:
  void Count(const virtio::DescriptorChain& chain) {
    QueueCounters::Bump(counters->requests);
    QueueCounters::Bump(counters->in_flight);
    switch (chain.error()) {
      case virtio::RingError::kNone:
        QueueCounters::Add(counters->bytes_from_driver, chain.readable_bytes());
        break;
      case virtio::RingError::kBufferOutOfRange:
      case virtio::RingError::kBufferAddressOverflow:
        QueueCounters::Bump(counters->bad_address_chains);
        break;
      default:
        QueueCounters::Bump(counters->malformed_chains);
        break;
    }
  }
};

}  // namespace vhost_user

#endif  // VHOST_USER_QUEUE_OBSERVER_H_
