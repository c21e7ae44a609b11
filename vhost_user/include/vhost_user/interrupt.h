// vhost_user/interrupt.h — the InterruptSink of vhost-user devices: a
// used-buffer notification is a write to the queue's call eventfd; a
// configuration change is a CONFIG_CHANGE_MSG on the back-end request
// channel (SET_BACKEND_REQ_FD), when the front-end gave one.
//
// Fds are borrowed (the Backend owns them) and stored atomically, so queue
// threads may signal while the control thread swaps them; the Backend only
// closes an fd after clearing it here and stopping the queue. The
// configuration channel is also used from threads that are never parked (a
// resize from vhost-user-device's control socket): it is held under a
// mutex while a message is sent, so that once SetConfigChannel(-1) returns
// no sender still uses the old fd and the Backend may close it.
#ifndef VHOST_USER_INTERRUPT_H_
#define VHOST_USER_INTERRUPT_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

#include "vhost_user/memory_table.h"
#include "vhost_user/queue_observer.h"
#include "virtio/hypervisor.h"

namespace vhost_user {

// The interrupt sink of devices served over vhost-user (see the top of
// this file); thread-safe.
class CallInterrupt {
 public:
  // Queue indices in vhost-user messages are 8 bits.
  static constexpr uint16_t kMaxQueues = 256;

  CallInterrupt() {
    for (auto& fd : call_) fd.store(-1, std::memory_order_relaxed);
  }

  void SignalQueue(uint16_t queue);
  void SignalConfig();

  void SetCallFd(uint16_t queue, int fd) {
    if (queue < kMaxQueues) call_[queue].store(fd, std::memory_order_release);
  }
  void SetConfigChannel(int fd) {
    std::lock_guard<std::mutex> lock(config_mu_);
    config_fd_ = fd;
  }

  // Counters (tests, statistics).
  uint64_t queue_signals() const {
    return queue_signals_.load(std::memory_order_relaxed);
  }
  // Per queue: interrupts sent, and those that could not be (no call fd
  // yet or any more, or the write failed): a lost notification.
  uint64_t queue_signals(uint16_t q) const {
    return q < kMaxQueues ? per_queue_[q].sent.load(std::memory_order_relaxed)
                          : 0;
  }
  uint64_t queue_signals_lost(uint16_t q) const {
    return q < kMaxQueues ? per_queue_[q].lost.load(std::memory_order_relaxed)
                          : 0;
  }
  uint64_t config_signals() const {
    return config_signals_.load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<int>, kMaxQueues> call_;
  // Configuration changes are rare (a resize, a link change): a lock is fine.
  std::mutex config_mu_;
  int config_fd_ = -1;
  std::atomic<uint64_t> queue_signals_{0};
  std::atomic<uint64_t> config_signals_{0};
  // Written by the queue's worker only; a cache line each.
  struct alignas(64) PerQueue {
    std::atomic<uint64_t> sent{0};
    std::atomic<uint64_t> lost{0};
  };
  std::array<PerQueue, kMaxQueues> per_queue_;
};

// Hypervisor traits for devices served over vhost-user.
struct VhostTraits {
  using Memory = MemoryTable;
  using Interrupt = CallInterrupt;
  using RingObserver = QueueObserver;
};
static_assert(virtio::HypervisorTraits<VhostTraits>);

// Writes 1 to an eventfd (or any fd a front-end uses as one), never
// blocking. False if it could not.
bool SignalFd(int fd);

}  // namespace vhost_user

#endif  // VHOST_USER_INTERRUPT_H_
