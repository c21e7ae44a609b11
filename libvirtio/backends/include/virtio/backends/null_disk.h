// virtio/backends/null_disk.h — a block backend with no storage.
//
// Reads return zeros, writes, discards and write-zeroes succeed and are
// dropped, flushes succeed. Completion is synchronous (completion_fd() is
// -1). For benchmarks of the device model and for guests that need a disk
// of some size and nothing else.
//
// Example:
//   auto disk = virtio::NullDisk::Create({.capacity = uint64_t{1} << 40});
#ifndef VIRTIO_BACKENDS_NULL_DISK_H_
#define VIRTIO_BACKENDS_NULL_DISK_H_

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/backends/completion_ring.h"
#include "virtio/block_backend.h"

namespace virtio {

struct NullDiskOptions {
  // Size in bytes; a non-zero multiple of 512.
  uint64_t capacity = 0;
  uint32_t block_size = 512;
  bool read_only = false;
  uint16_t num_queues = 1;
  uint32_t queue_depth = 256;
};

class NullDisk {
 public:
  class Queue {
   public:
    explicit Queue(uint32_t depth) : done_(depth) {}

    bool Read(uint64_t offset, const iovec* iov, uint32_t iovcnt,
              uint64_t cookie);
    bool Write(uint64_t, const iovec*, uint32_t, uint64_t cookie) {
      return done_.Push(cookie, 0);
    }
    bool Flush(uint64_t cookie) { return done_.Push(cookie, 0); }
    bool Discard(uint64_t, uint64_t, uint64_t cookie) {
      return done_.Push(cookie, 0);
    }
    bool WriteZeroes(uint64_t, uint64_t, bool, uint64_t cookie) {
      return done_.Push(cookie, 0);
    }
    void Submit() {}
    template <typename F>
    uint32_t Reap(F&& fn) {
      return done_.PopAll(fn);
    }
    void Drain() { done_.Clear(); }
    int completion_fd() const { return -1; }

   private:
    CompletionRing done_;
  };

  static absl::StatusOr<std::unique_ptr<NullDisk>> Create(
      const NullDiskOptions& options);
  NullDisk(const NullDisk&) = delete;
  NullDisk& operator=(const NullDisk&) = delete;

  uint64_t capacity() const { return options_.capacity; }
  uint32_t block_size() const { return options_.block_size; }
  bool read_only() const { return options_.read_only; }
  bool supports_discard() const { return true; }
  bool supports_write_zeroes() const { return true; }
  uint16_t num_queues() const { return options_.num_queues; }
  uint32_t queue_depth() const { return options_.queue_depth; }
  Queue& queue(uint16_t index) { return queues_[index]; }

 private:
  explicit NullDisk(const NullDiskOptions& options);

  NullDiskOptions options_;
  std::vector<Queue> queues_;
};

static_assert(BlockBackend<NullDisk>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_NULL_DISK_H_
