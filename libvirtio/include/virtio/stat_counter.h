// virtio/stat_counter.h — a statistics counter written by one thread and
// read by any: the writer's increment is a relaxed load and store (no
// read-modify-write, no lock, the cost of a plain increment on x86 and
// Arm), and a reader on another thread (a statistics endpoint) sees a
// value that was current at some recent point, never a torn one.
//
// Example:
//   struct QueueStats { StatCounter requests; };
//   ++stats.requests;                  // the queue's thread
//   uint64_t n = stats.requests;       // any thread
#ifndef VIRTIO_STAT_COUNTER_H_
#define VIRTIO_STAT_COUNTER_H_

#include <atomic>
#include <cstdint>

namespace virtio {

// A single-writer counter readable from any thread (see the top of this
// file). Copying takes a snapshot.
class StatCounter {
 public:
  StatCounter() = default;
  StatCounter(const StatCounter& other) : value_(other.load()) {}
  StatCounter& operator=(const StatCounter& other) {
    value_.store(other.load(), std::memory_order_relaxed);
    return *this;
  }

  // The writer's increment (single writer: no read-modify-write).
  StatCounter& operator++() {
    value_.store(load() + 1, std::memory_order_relaxed);
    return *this;
  }
  StatCounter& operator+=(uint64_t n) {
    value_.store(load() + n, std::memory_order_relaxed);
    return *this;
  }

  uint64_t load() const { return value_.load(std::memory_order_relaxed); }
  // Implicit, so that a counter reads like the integer it replaced.
  // NOLINTNEXTLINE(google-explicit-constructor)
  operator uint64_t() const { return load(); }

 private:
  std::atomic<uint64_t> value_{0};
};

}  // namespace virtio

#endif  // VIRTIO_STAT_COUNTER_H_
