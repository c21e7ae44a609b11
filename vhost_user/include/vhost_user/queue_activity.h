// vhost_user/queue_activity.h — what a queue did lately, for diagnosing a
// stalled queue: kicks received, chains popped and used elements pushed.
// Counted by the queue's own worker (plain relaxed stores on the queue's
// own cache line: no read-modify-write, nothing shared with other queues)
// and read by the control thread, which watches for queues with requests
// in flight and no progress (Backend::WatchStalls) and dumps queue state
// on request (SIGUSR1 in vhost-user-device).
#ifndef VHOST_USER_QUEUE_ACTIVITY_H_
#define VHOST_USER_QUEUE_ACTIVITY_H_

#include <atomic>
#include <cstdint>

namespace vhost_user {

// One queue's activity counters (see the top of this file).
struct alignas(64) QueueActivity {
  std::atomic<uint64_t> kicks{0};
  // Since the queue last started.
  std::atomic<uint64_t> pops{0};
  std::atomic<uint64_t> pushes{0};

  // Single writer: no atomic read-modify-write needed.
  static void Bump(std::atomic<uint64_t>& c) {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

}  // namespace vhost_user

#endif  // VHOST_USER_QUEUE_ACTIVITY_H_
