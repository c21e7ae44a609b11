// virtio/backends/uring_disk.h — a block backend on a raw image file or a
// host block device, through io_uring.
//
// Each queue context owns an io_uring of `queue_depth` entries and an
// eventfd registered with it (completion_fd()), so every virtqueue has its
// own independent I/O path with many requests in flight:
//
//   * Read / Write are IORING_OP_READV / IORING_OP_WRITEV directly on the
//     caller's iovecs (guest memory: zero copy). With `direct` the image is
//     opened O_DIRECT; then the guest buffers and offsets must be aligned to
//     the logical block size or the request fails with EINVAL (-> IOERR).
//   * Flush is IORING_OP_FSYNC with IORING_FSYNC_DATASYNC.
//   * On image files, Discard is fallocate(PUNCH_HOLE | KEEP_SIZE) and
//     WriteZeroes is fallocate(ZERO_RANGE | KEEP_SIZE), or PUNCH_HOLE when
//     `unmap` is allowed or the file system lacks ZERO_RANGE (a punched range
//     reads as zeros), both as IORING_OP_FALLOCATE.
//   * On block devices, Discard is ioctl(BLKDISCARD) and WriteZeroes is
//     ioctl(BLKZEROOUT), executed synchronously when queued; the result is
//     reported by the next Reap() and the eventfd is signalled.
//   * Short reads and writes (a signal, a partial transfer) are *resubmitted*
//     for the remainder until the request is complete; a transfer that makes
//     no progress (0 bytes: end of file, e.g. the image was truncated under
//     us) fails the request with -EIO. -EAGAIN / -EINTR are retried. Any
//     other error (EIO, ENOSPC, EINVAL, ...) fails that request only.
//
// Submit() is one io_uring_submit() (one system call) per batch. Reap() only
// looks at the completion ring in shared memory (no system call) unless a
// short transfer had to be resubmitted.
//
// Inline I/O (UringDiskOptions::inline_io). io_uring serves a buffered read
// that may block by handing it to an io-wq kernel worker thread: on a file
// system without RWF_NOWAIT support (tmpfs, where even a page-cache hit is
// "may block" for io_uring) that is every read, a thread hop and wakeup per
// request that costs far more than the 4 KiB copy. So buffered reads (and,
// on memory-backed files, writes) are first tried synchronously in the
// calling thread, inside Read() / Write():
//   * kNoWait: preadv2(RWF_NOWAIT), served only from the page cache; on
//     EAGAIN (not cached), a short or empty transfer, or EINTR the request
//     (or its remainder) goes through io_uring as usual. Writes always use
//     io_uring.
//   * kSync: plain preadv2 / pwritev2. Only sensible where the "disk" is
//     memory (tmpfs, ramfs): a copy that can wait only for
//     memory (allocation, swap-in), never for a device.
// kAuto picks kSync for memory-backed files, else kNoWait if the kernel
// supports it on the file, else kOff. O_DIRECT (`direct`) always uses
// io_uring. A request finished inline is reported by the next Reap(), like
// any other, but it does NOT signal completion_fd(): the caller must Reap()
// after Submit() (BlkDevice does: every Submit() is followed by a Reap()
// in the same pump), which is what the concept requires of backends whose
// completion_fd() is -1 as well.
//
// Setup errors are reported by Open(): a missing or unopenable image, a file
// smaller than one block, an image locked by another process, or
// io_uring_queue_init() failing (e.g. io_uring disabled by
// /proc/sys/kernel/io_uring_disabled, seccomp or a container sandbox).
//
// Example:
//   auto disk = virtio::UringDisk::Open({.path = "disk.img", .num_queues = 4});
//   if (!disk.ok()) { LOG(ERROR) << disk.status(); return 1; }
//   // poll (*disk)->queue(i).completion_fd(); when readable, read it and
//   // call blk.CompleteRequests(i).
#ifndef VIRTIO_BACKENDS_URING_DISK_H_
#define VIRTIO_BACKENDS_URING_DISK_H_

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/backends/completion_ring.h"
#include "virtio/block_backend.h"

struct io_uring;  // liburing

namespace virtio {

struct UringDiskOptions {
  // Image file or block device.
  std::string path = {};
  // Open read-only (the device then offers VIRTIO_BLK_F_RO).
  bool read_only = false;
  // Open with O_DIRECT (bypass the host page cache).
  bool direct = false;
  uint16_t num_queues = 1;
  // io_uring entries per queue and requests each queue may hold outstanding.
  uint32_t queue_depth = 128;
  // Logical block size; 0 = the device's (BLKSSZGET) or 512 for files.
  uint32_t block_size = 0;
  // Offer discard / write-zeroes.
  bool discard = true;
  bool write_zeroes = true;
  // Lock the image the way QEMU does (image_lock.h): QEMU, qemu-img and a
  // second daemon see it in use, and an image they write is refused. On a
  // file system without OFD locks the disk opens unlocked, with a warning.
  bool lock = true;
  // Try buffered I/O synchronously before io_uring (see the file comment).
  enum class Inline : uint8_t { kAuto, kOff, kNoWait, kSync };
  Inline inline_io = Inline::kAuto;
};

class UringDisk {
 public:
  class Queue {
   public:
    ~Queue();
    Queue(const Queue&) = delete;
    Queue& operator=(const Queue&) = delete;

    bool Read(uint64_t offset, const iovec* iov, uint32_t iovcnt,
              uint64_t cookie);
    bool Write(uint64_t offset, const iovec* iov, uint32_t iovcnt,
               uint64_t cookie);
    bool Flush(uint64_t cookie);
    bool Discard(uint64_t offset, uint64_t length, uint64_t cookie);
    bool WriteZeroes(uint64_t offset, uint64_t length, bool unmap,
                     uint64_t cookie);
    void Submit();
    template <typename F>
    uint32_t Reap(F&& fn) {
      uint32_t n = 0;
      uint64_t cookie;
      int32_t result;
      while (NextCompletion(&cookie, &result)) {
        fn(cookie, result);
        ++n;
      }
      return n;
    }
    void Drain();
    int completion_fd() const { return event_fd_; }

    // Requests queued, in flight or awaiting Reap().
    uint32_t outstanding() const;
    // Requests the kernel has not completed yet.
    uint32_t in_kernel() const { return in_kernel_; }
    // Reads / writes finished inline (without io_uring), and those that
    // tried inline and fell back to io_uring (not cached, short, EOF).
    uint64_t inline_done() const { return inline_done_; }
    uint64_t inline_fallbacks() const { return inline_fallbacks_; }

   private:
    friend class UringDisk;
    enum class Kind : uint8_t { kRead, kWrite, kFlush, kPunch, kZeroRange };
    struct Op {
      uint64_t cookie = 0;
      const iovec* iov = nullptr;
      uint32_t iovcnt = 0;
      Kind kind = Kind::kRead;
      uint64_t offset = 0;
      uint64_t length = 0;
      uint64_t done = 0;
      // The rest of the iovecs after a short transfer (rare path only).
      std::vector<iovec> rest;
    };

    Queue(UringDisk* disk, uint32_t depth);
    absl::Status Init();
    // Takes a free op, or nullptr if the queue is full.
    Op* Alloc(uint64_t cookie, uint32_t* index);
    void Free(uint32_t index);
    // Prepares the SQE for ops_[index] in its current state. False if no
    // SQE could be had (the op then fails with -EBUSY via ready_).
    bool Issue(uint32_t index);
    bool IssueRemainder(uint32_t index);
    // Finishes ops_[index] without the kernel.
    void Complete(uint32_t index, int32_t result);
    // Read / Write after Alloc: inline if the mode allows, else (or for
    // the rest) Issue().
    void Start(uint32_t index);
    bool NextCompletion(uint64_t* cookie, int32_t* result);

    UringDisk* disk_;
    uint32_t depth_;
    io_uring* ring_ = nullptr;
    int event_fd_ = -1;
    std::vector<Op> ops_;
    std::vector<uint32_t> free_;
    CompletionRing ready_;  // finished without a CQE
    uint32_t in_kernel_ = 0;
    uint32_t unsubmitted_ = 0;
    // Copied from the disk; kNoWait drops to kOff if the kernel says
    // EOPNOTSUPP after all.
    UringDiskOptions::Inline inline_ = UringDiskOptions::Inline::kOff;
    uint64_t inline_done_ = 0;
    uint64_t inline_fallbacks_ = 0;
  };

  static absl::StatusOr<std::unique_ptr<UringDisk>> Open(
      const UringDiskOptions& options);
  ~UringDisk();
  UringDisk(const UringDisk&) = delete;
  UringDisk& operator=(const UringDisk&) = delete;

  uint64_t capacity() const {
    return capacity_.load(std::memory_order_acquire);
  }
  // Online resize: re-reads the image's size (fstat, or BLKGETSIZE64 for a
  // block device), rounded down to whole blocks, and returns it. A larger
  // size becomes capacity(); a smaller one is returned but not adopted
  // (the device refuses to shrink). Any thread.
  absl::StatusOr<uint64_t> RereadSize();
  uint32_t block_size() const { return block_size_; }
  bool read_only() const { return options_.read_only; }
  bool supports_discard() const { return options_.discard; }
  bool supports_write_zeroes() const { return options_.write_zeroes; }
  uint16_t num_queues() const { return options_.num_queues; }
  uint32_t queue_depth() const { return options_.queue_depth; }
  Queue& queue(uint16_t index) { return *queues_[index]; }

  bool is_block_device() const { return block_device_; }
  // What kAuto resolved to (never kAuto).
  UringDiskOptions::Inline inline_io() const { return inline_; }
  int fd() const { return fd_; }

 private:
  explicit UringDisk(const UringDiskOptions& options) : options_(options) {}

  UringDiskOptions options_;
  int fd_ = -1;
  bool block_device_ = false;
  // Grows on RereadSize() while queues run.
  std::atomic<uint64_t> capacity_{0};
  uint32_t block_size_ = 512;
  UringDiskOptions::Inline inline_ = UringDiskOptions::Inline::kOff;
  std::vector<std::unique_ptr<Queue>> queues_;
};

static_assert(BlockBackend<UringDisk>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_URING_DISK_H_
