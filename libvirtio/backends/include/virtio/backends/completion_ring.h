// virtio/backends/completion_ring.h — a fixed-capacity FIFO of finished
// block requests, for backends that complete synchronously (RamDisk,
// NullDisk, test backends) or that finish some requests without the kernel
// (UringDisk's ioctl path).
//
// Capacity is fixed at construction; Push() fails when full, so a backend
// that admits at most queue_depth() outstanding requests never loses one.
//
// Example:
//   virtio::CompletionRing done(128);
//   done.Push(cookie, 0);
//   done.PopAll([](uint64_t cookie, int32_t result) { ... });
#ifndef VIRTIO_BACKENDS_COMPLETION_RING_H_
#define VIRTIO_BACKENDS_COMPLETION_RING_H_

#include <cstdint>
#include <memory>

namespace virtio {

class CompletionRing {
 public:
  struct Entry {
    uint64_t cookie;
    int32_t result;
  };

  explicit CompletionRing(uint32_t capacity)
      : entries_(new Entry[capacity == 0 ? 1 : capacity]),
        capacity_(capacity == 0 ? 1 : capacity) {}

  uint32_t size() const { return count_; }
  uint32_t capacity() const { return capacity_; }
  bool full() const { return count_ == capacity_; }

  bool Push(uint64_t cookie, int32_t result) {
    if (count_ == capacity_) return false;
    uint32_t tail = head_ + count_;
    if (tail >= capacity_) tail -= capacity_;
    entries_[tail] = {cookie, result};
    ++count_;
    return true;
  }

  bool Pop(Entry* out) {
    if (count_ == 0) return false;
    *out = entries_[head_];
    if (++head_ == capacity_) head_ = 0;
    --count_;
    return true;
  }

  // Calls fn(cookie, result) for every entry, including entries fn pushes
  // while running. Returns the number of calls.
  template <typename F>
  uint32_t PopAll(F&& fn) {
    uint32_t n = 0;
    Entry e;
    while (Pop(&e)) {
      fn(e.cookie, e.result);
      ++n;
    }
    return n;
  }

  void Clear() { head_ = count_ = 0; }

 private:
  std::unique_ptr<Entry[]> entries_;
  uint32_t capacity_;
  uint32_t head_ = 0;
  uint32_t count_ = 0;
};

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_COMPLETION_RING_H_
