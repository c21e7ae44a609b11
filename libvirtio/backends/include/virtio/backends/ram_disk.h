// virtio/backends/ram_disk.h — a block backend held in host memory.
//
// RamDisk keeps the whole disk in one anonymous mapping (zero pages are not
// allocated until written). Requests execute synchronously when queued; their
// completions wait in a per-queue CompletionRing until Reap(), so
// completion_fd() is -1. Useful for tests, fuzzing and benchmarks; data()
// exposes the image.
//
// Concurrent requests from different queues to overlapping ranges race on the
// image the way they would on real hardware (the guest's problem), which a
// thread sanitizer will report.
//
// Example:
//   auto disk = virtio::RamDisk::Create({.capacity = 64 << 20});
//   if (!disk.ok()) return disk.status();
//   virtio::BlkDevice<Traits, virtio::RamDisk> blk(mem, irq, **disk, {});
#ifndef VIRTIO_BACKENDS_RAM_DISK_H_
#define VIRTIO_BACKENDS_RAM_DISK_H_

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "virtio/backends/completion_ring.h"
#include "virtio/block_backend.h"

namespace virtio {

struct RamDiskOptions {
  // Size in bytes; a non-zero multiple of 512.
  uint64_t capacity = 0;
  // Logical block size reported to the device: a power of two >= 512
  // dividing `capacity`.
  uint32_t block_size = 512;
  bool read_only = false;
  uint16_t num_queues = 1;
  uint32_t queue_depth = 256;
};

class RamDisk {
 public:
  class Queue {
   public:
    bool Read(uint64_t offset, const iovec* iov, uint32_t iovcnt,
              uint64_t cookie);
    bool Write(uint64_t offset, const iovec* iov, uint32_t iovcnt,
               uint64_t cookie);
    bool Flush(uint64_t cookie) { return done_.Push(cookie, 0); }
    bool Discard(uint64_t offset, uint64_t length, uint64_t cookie);
    bool WriteZeroes(uint64_t offset, uint64_t length, bool unmap,
                     uint64_t cookie);
    void Submit() {}
    template <typename F>
    uint32_t Reap(F&& fn) {
      return done_.PopAll(fn);
    }
    void Drain() { done_.Clear(); }
    int completion_fd() const { return -1; }

    explicit Queue(RamDisk* disk, uint32_t depth) : disk_(disk), done_(depth) {}

   private:
    // Checks the range (a backend-side guard; the device validates first).
    bool InRange(uint64_t offset, uint64_t length) const;

    RamDisk* disk_;
    CompletionRing done_;
  };

  static absl::StatusOr<std::unique_ptr<RamDisk>> Create(
      const RamDiskOptions& options);
  ~RamDisk();
  RamDisk(const RamDisk&) = delete;
  RamDisk& operator=(const RamDisk&) = delete;

  uint64_t capacity() const { return options_.capacity; }
  uint32_t block_size() const { return options_.block_size; }
  bool read_only() const { return options_.read_only; }
  bool supports_discard() const { return true; }
  bool supports_write_zeroes() const { return true; }
  uint16_t num_queues() const { return options_.num_queues; }
  uint32_t queue_depth() const { return options_.queue_depth; }
  Queue& queue(uint16_t index) { return queues_[index]; }

  // The disk image.
  absl::Span<uint8_t> data() { return {data_, options_.capacity}; }
  absl::Span<const uint8_t> data() const { return {data_, options_.capacity}; }

 private:
  RamDisk(const RamDiskOptions& options, uint8_t* data);

  RamDiskOptions options_;
  uint8_t* data_;
  std::vector<Queue> queues_;
};

static_assert(BlockBackend<RamDisk>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_RAM_DISK_H_
