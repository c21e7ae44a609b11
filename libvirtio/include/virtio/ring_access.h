// virtio/ring_access.h — single-fetch loads and ordered stores on memory
// shared with a running guest.
//
// A guest can rewrite any ring field while the device reads it. Reading a
// field twice (once to validate, once to use) would let the guest change it
// in between, so every value that crosses the guest boundary is read exactly
// once, into a local, through these helpers:
//
//   uint16_t idx = virtio::LoadAcquire(&avail->idx);      // index publish
//   spec::SplitDesc d = virtio::ReadOnce<spec::SplitDesc>(desc_ptr);
//   virtio::StoreRelease(&used->idx, new_idx);            // index publish
//
// Acquire/release pair with the driver's memory barriers (§2.7.13: the
// driver writes descriptors, then publishes the index; the device reads the
// index, then the descriptors). FullFence() is the store→load barrier the
// event-index protocol needs between publishing and reading the peer's event
// field.
#ifndef VIRTIO_RING_ACCESS_H_
#define VIRTIO_RING_ACCESS_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace virtio {

// Loads a naturally aligned 16- or 32-bit ring field with acquire ordering.
template <typename T>
  requires std::is_integral_v<T>
inline T LoadAcquire(const T* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

// Loads a naturally aligned ring field once, without ordering.
template <typename T>
  requires std::is_integral_v<T>
inline T LoadRelaxed(const T* p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

// Stores a naturally aligned ring field, making every earlier write visible
// to a peer that loads it with acquire ordering.
template <typename T>
  requires std::is_integral_v<T>
inline void StoreRelease(T* p, T value) {
  __atomic_store_n(p, value, __ATOMIC_RELEASE);
}

// Stores a naturally aligned ring field without ordering.
template <typename T>
  requires std::is_integral_v<T>
inline void StoreRelaxed(T* p, T value) {
  __atomic_store_n(p, value, __ATOMIC_RELAXED);
}

// Copies a (possibly unaligned) structure out of guest memory exactly once.
// The compiler barrier stops the compiler from discarding the local copy and
// re-reading guest memory later, which would reopen the double-fetch hole.
template <typename T>
  requires std::is_trivially_copyable_v<T>
inline T ReadOnce(const void* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return value;
}

// Starts fetching the cache line at `p` for reading, or (`for_write`) in
// the exclusive state a store needs: the buffer a device is about to fill
// was last touched by the other side, so a read prefetch would still leave
// the store an ownership request to wait for. PREFETCHW where the compiler
// is not allowed to emit it itself (x86 without -mprfchw); CPUs without it
// execute that encoding as a NOP. A prefetch never faults.
inline void Prefetch(const void* p, bool for_write) {
#if defined(__x86_64__) && !defined(__PRFCHW__)
  if (for_write) {
    asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
    return;
  }
  __builtin_prefetch(p, 0);
#else
  if (for_write) {
    __builtin_prefetch(p, 1);
  } else {
    __builtin_prefetch(p, 0);
  }
#endif
}

// Full store→load barrier (mb() in the spec's pseudo code).
inline void FullFence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

}  // namespace virtio

#endif  // VIRTIO_RING_ACCESS_H_
