// virtio/guest_memory.h — guest-physical to host translation, bounds-checked.
//
// Every address a guest hands the device (ring addresses, buffer addresses)
// is a guest-physical address (GPA). A glue supplies guest memory as a type
// that satisfies the `GuestMemory` concept; the ring and device code call
// only these two operations:
//
//   * TranslateContiguous(gpa, len): the host pointer for [gpa, gpa+len) if the
//     whole range lies inside one region, else nullptr. Used for rings and
//     small structures that must be contiguous.
//   * TranslateScatter(gpa, len, out, capacity): the host segments covering
//     [gpa, gpa+len), which may span adjacent regions, as iovecs.
//
// A type may also provide TranslateRing(gpa, len), with TranslateContiguous's
// contract: the queues then use it for their ring parts, which they keep for
// their whole life, and TranslateContiguous/TranslateScatter only for what a
// request uses (glue/xen's grant mappings: rings stay mapped, request
// buffers are unmapped when the request completes).
//
// GuestMemoryMap is the implementation every glue can use: a sorted table of
// regions (any number; vhost-user needs 509) with binary search plus a
// last-hit cache, and overflow-safe bounds checks. It does not own the host
// mappings; the glue maps and unmaps them.
//
// Example:
//   std::vector<virtio::GuestRegion> regions = {
//       {.gpa = 0, .size = 1 << 30, .host = base}};
//   absl::StatusOr<virtio::GuestMemoryMap> mem =
//       virtio::GuestMemoryMap::Create(regions);
//   uint8_t* p = mem->TranslateContiguous(gpa, 16);
//   if (p == nullptr) { /* outside guest memory */ }
#ifndef VIRTIO_GUEST_MEMORY_H_
#define VIRTIO_GUEST_MEMORY_H_

#include <sys/uio.h>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace virtio {

// Outcome of a scatter translation.
enum class TranslateStatus : uint8_t {
  kOk,
  // Some byte of the range is not backed by any region (or gpa+len wraps).
  kOutOfRange,
  // The range needs more segments than the caller provided room for.
  kTooManySegments,
};

struct ScatterResult {
  TranslateStatus status;
  // Number of iovecs written to `out` (valid when status == kOk).
  uint32_t segments;
};

// What a glue's guest memory type must provide. Implementations must be
// safe to call concurrently from several queue threads.
template <typename M>
concept GuestMemory =
    requires(const M& mem, uint64_t gpa, uint64_t len, iovec* out,
             uint32_t capacity) {
      { mem.TranslateContiguous(gpa, len) } -> std::same_as<uint8_t*>;
      {
        mem.TranslateScatter(gpa, len, out, capacity)
      } -> std::same_as<ScatterResult>;
    };

// One contiguous range of guest-physical memory mapped at `host`.
struct GuestRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;
};

// A table of non-overlapping guest memory regions. Immutable once created,
// so it can be shared by every queue thread; to change the memory layout,
// build a new map and hand it to the queues while they are stopped.
class GuestMemoryMap {
 public:
  // Validates and sorts `regions`: each must have a non-zero size, a non-null
  // host pointer, must not wrap the 64-bit address space, and must not
  // overlap another region.
  static absl::StatusOr<GuestMemoryMap> Create(
      absl::Span<const GuestRegion> regions);

  GuestMemoryMap() = default;
  GuestMemoryMap(const GuestMemoryMap& other);
  GuestMemoryMap& operator=(const GuestMemoryMap& other);
  GuestMemoryMap(GuestMemoryMap&& other) noexcept;
  GuestMemoryMap& operator=(GuestMemoryMap&& other) noexcept;

  // Host pointer for [gpa, gpa+len) if it lies inside one region; nullptr
  // otherwise. A zero `len` still requires `gpa` to be inside a region.
  uint8_t* TranslateContiguous(uint64_t gpa, uint64_t len) const {
    const GuestRegion* r = Find(gpa);
    if (r == nullptr) return nullptr;
    const uint64_t offset = gpa - r->gpa;
    if (len > r->size - offset) return nullptr;
    return r->host + offset;
  }

  // Host segments for [gpa, gpa+len), splitting at region boundaries. A
  // zero `len` yields zero segments and kOk.
  ScatterResult TranslateScatter(uint64_t gpa, uint64_t len, iovec* out,
                                 uint32_t capacity) const {
    uint32_t n = 0;
    while (len > 0) {
      const GuestRegion* r = Find(gpa);
      if (r == nullptr) return {TranslateStatus::kOutOfRange, 0};
      if (n == capacity) return {TranslateStatus::kTooManySegments, 0};
      const uint64_t offset = gpa - r->gpa;
      const uint64_t avail = r->size - offset;
      const uint64_t take = len < avail ? len : avail;
      out[n].iov_base = r->host + offset;
      out[n].iov_len = take;
      ++n;
      len -= take;
      // Regions never wrap, so gpa + take <= r->gpa + r->size - 1 + 1 can
      // only be 2^64 at the very top; then len is 0 or the next Find fails.
      gpa += take;
      if (gpa == 0 && len > 0) return {TranslateStatus::kOutOfRange, 0};
    }
    return {TranslateStatus::kOk, n};
  }

  // The region containing `gpa`, or nullptr.
  const GuestRegion* Find(uint64_t gpa) const {
    const uint32_t hint = last_hit_.load(std::memory_order_relaxed);
    if (hint < regions_.size()) {
      const GuestRegion& r = regions_[hint];
      if (gpa - r.gpa < r.size) return &r;
    }
    return FindSlow(gpa);
  }

  absl::Span<const GuestRegion> regions() const { return regions_; }
  // Sum of all region sizes.
  uint64_t total_size() const;

 private:
  explicit GuestMemoryMap(std::vector<GuestRegion> sorted)
      : regions_(std::move(sorted)) {}
  const GuestRegion* FindSlow(uint64_t gpa) const;

  std::vector<GuestRegion> regions_;  // sorted by gpa, non-overlapping
  // Index of the region that answered the last lookup. Relaxed atomic: a
  // stale hint is only a cache miss, and queue threads may race on it.
  // On its own cache line so hint updates do not bounce the line holding
  // regions_, which every lookup reads.
  alignas(64) mutable std::atomic<uint32_t> last_hit_{0};
};

static_assert(GuestMemory<GuestMemoryMap>);

}  // namespace virtio

#endif  // VIRTIO_GUEST_MEMORY_H_
