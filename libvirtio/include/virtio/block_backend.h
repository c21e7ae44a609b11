// virtio/block_backend.h — where a block device's data goes.
//
// BlkDevice (virtio/blk_device.h) is a template over a backend type checked
// at compile time by the `BlockBackend` concept below: every call on the data
// path is resolved statically (no virtual calls) and allocates nothing.
// Bundled backends: UringDisk (raw file or block device through io_uring,
// virtio/backends/uring_disk.h), RamDisk (in memory, ram_disk.h) and NullDisk
// (reads zeros, discards writes, null_disk.h). Users can bring their own: a
// type that satisfies `BlockBackend` works unchanged.
//
// Model. A backend has global properties (capacity, logical block size,
// read-only, discard / write-zeroes support) and `num_queues()` independent
// per-queue contexts, `queue(i)`, one per virtqueue. A queue context is used
// by one thread at a time (the thread servicing that virtqueue) and needs no
// locking; different contexts may be used concurrently from different threads.
//
// A queue context is asynchronous:
//
//   * Read / Write / Flush / Discard / WriteZeroes *queue* one request tagged
//     with a caller-chosen 64-bit cookie. They return false (and queue
//     nothing) only if `queue_depth()` requests are already outstanding
//     (queued, in flight, or completed but not yet reaped); every other
//     outcome, including immediate failures, is reported through Reap().
//     Offsets and lengths are in bytes; the caller guarantees that
//     [offset, offset + length) lies inside `capacity()` and that the
//     backend is writable for writes, discards and write-zeroes (BlkDevice
//     validates every guest request before it reaches a backend).
//   * The iovec array and the memory it describes passed to Read/Write must
//     stay valid, unchanged, until the request's completion has been reaped
//     or Drain() has returned. Backends may do I/O on it directly (zero copy).
//   * Submit() hands everything queued since the last call to the kernel (or
//     executes it): one system call per batch, not per request.
//   * Reap(fn) calls fn(cookie, result) for every finished request and
//     returns how many. `result` is 0 on success or a negative errno (-EIO,
//     -ENOSPC, ...) for that request only. A read or write succeeds only if
//     it transferred every byte: short transfers are the backend's business
//     (retry the remainder or fail with a negative errno). fn may queue new
//     requests (the caller then calls Submit() again).
//   * completion_fd() is an fd (an eventfd) that becomes readable when
//     completions may be pending, for an event loop; the loop read(2)s it to
//     reset it and then calls Reap(). -1 means the backend completes every
//     request by the time Submit() returns (Reap() right after Submit() sees
//     them all), so there is nothing to poll.
//   * Drain() blocks until no request is in flight: every queued request is
//     submitted and waited for (or cancelled), and every completion not yet
//     reaped is discarded. Afterwards the backend no longer touches any
//     memory handed to it. Used at device reset and destruction.
//
// Example (a backend that fails everything):
//   class BrokenDisk {
//    public:
//     class Queue {
//      public:
//       bool Read(uint64_t, const iovec*, uint32_t, uint64_t c) { return Fail(c); }
//       ... Write / Flush / Discard / WriteZeroes likewise ...
//       void Submit() {}
//       template <typename F> uint32_t Reap(F&& fn) { ... fn(cookie, -EIO) ... }
//       void Drain() { pending_.clear(); }
//       int completion_fd() const { return -1; }
//     };
//     uint64_t capacity() const { return 1 << 20; }
//     ... block_size, read_only, supports_discard, supports_write_zeroes,
//     ... num_queues, queue_depth, queue(i) ...
//   };
//   static_assert(virtio::BlockBackend<BrokenDisk>);
#ifndef VIRTIO_BLOCK_BACKEND_H_
#define VIRTIO_BLOCK_BACKEND_H_

#include <sys/uio.h>

#include <concepts>
#include <cstdint>

namespace virtio {

// The callable shape Reap() must accept: fn(cookie, result). Used only to
// state the concept; any callable with this signature can be passed.
struct BlockCompletionArchetype {
  void operator()(uint64_t cookie, int32_t result) const;
};

// One per-queue context of a block backend.
template <typename Q>
concept BlockQueue = requires(Q& q, const Q& cq, uint64_t offset,
                              uint64_t length, const iovec* iov,
                              uint32_t iovcnt, uint64_t cookie, bool unmap,
                              BlockCompletionArchetype& fn) {
  // Reads [offset, offset + total iov length) into iov.
  { q.Read(offset, iov, iovcnt, cookie) } -> std::same_as<bool>;
  // Writes iov to [offset, offset + total iov length).
  { q.Write(offset, iov, iovcnt, cookie) } -> std::same_as<bool>;
  // Makes every write completed before it stable (fsync).
  { q.Flush(cookie) } -> std::same_as<bool>;
  // Deallocates [offset, offset + length) (contents afterwards undefined).
  { q.Discard(offset, length, cookie) } -> std::same_as<bool>;
  // Zeroes [offset, offset + length); `unmap` allows deallocating it.
  { q.WriteZeroes(offset, length, unmap, cookie) } -> std::same_as<bool>;
  { q.Submit() } -> std::same_as<void>;
  { q.Reap(fn) } -> std::same_as<uint32_t>;
  { q.Drain() } -> std::same_as<void>;
  { cq.completion_fd() } -> std::same_as<int>;
};

template <typename B>
concept BlockBackend = requires(B& b, const B& cb, uint16_t index) {
  typename B::Queue;
  requires BlockQueue<typename B::Queue>;
  // Size in bytes (BlkDevice exposes capacity() / 512 sectors).
  { cb.capacity() } -> std::same_as<uint64_t>;
  // Logical block size in bytes: 512, 4096, ... (a power of two >= 512).
  { cb.block_size() } -> std::same_as<uint32_t>;
  { cb.read_only() } -> std::same_as<bool>;
  { cb.supports_discard() } -> std::same_as<bool>;
  { cb.supports_write_zeroes() } -> std::same_as<bool>;
  // Number of per-queue contexts and requests each can hold outstanding.
  { cb.num_queues() } -> std::same_as<uint16_t>;
  { cb.queue_depth() } -> std::same_as<uint32_t>;
  // Context `index` (< num_queues()).
  { b.queue(index) } -> std::same_as<typename B::Queue&>;
};

}  // namespace virtio

#endif  // VIRTIO_BLOCK_BACKEND_H_
