// virtio/queue.h — what every device-side virtqueue provides, whatever its
// ring layout.
//
// SplitQueue (split_queue.h) and PackedQueue (packed_queue.h) share one API,
// captured by the `VirtQueue` concept, so a device written against it works
// on both layouts unchanged:
//
//   template <virtio::VirtQueue Q>
//   void Drain(Q& q, virtio::DescriptorChain& chain) {
//     do {
//       q.DisableNotification();
//       while (q.Pop(chain) == virtio::PopStatus::kChain) {
//         q.Push(chain.token(), Serve(chain));
//       }
//       if (q.Publish()) InterruptGuest();
//     } while (q.EnableNotification());
//     if (q.error() != virtio::RingError::kNone) SetNeedsReset();
//   }
//
// The usage cycle: Pop() chains (each validated in full), Push() their used
// lengths in any order, and Publish() once per batch; Publish() makes the
// whole batch visible with one index/flag store and says whether the driver
// asked to be interrupted.
#ifndef VIRTIO_QUEUE_H_
#define VIRTIO_QUEUE_H_

#include <concepts>
#include <cstdint>
#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/ring_error.h"
#include "virtio/spec.h"

namespace virtio {

// Where a queue's ring parts live in guest memory and which ring features the
// driver negotiated. Names follow the virtio-pci common config fields.
struct QueueConfig {
  // Number of descriptors; 1..32768 (split: a power of two).
  uint32_t size = 0;
  // Split: descriptor table. Packed: descriptor ring.
  uint64_t desc_addr = 0;
  // Split: available ring. Packed: driver event suppression structure.
  uint64_t driver_addr = 0;
  // Split: used ring. Packed: device event suppression structure.
  uint64_t device_addr = 0;
  // VIRTIO_F_EVENT_IDX negotiated.
  bool event_idx = false;
  // VIRTIO_F_INDIRECT_DESC negotiated.
  bool indirect = false;
  // VIRTIO_F_IN_ORDER negotiated. A packed queue then writes one used
  // descriptor per run of zero-length pushes (PackedQueue::Push).
  bool in_order = false;
};

// The device's position in a ring, for resuming a queue (vhost-user
// SET_VRING_BASE, migration, a restarted backend). Split queues use the
// free-running 16-bit indices and ignore the wrap flags; packed queues use a
// ring offset (< size) plus a wrap counter, which starts at true (§2.8.1).
struct QueueState {
  uint16_t next_avail = 0;
  uint16_t next_used = 0;
  bool avail_wrap = true;
  bool used_wrap = true;
};

// A chain an earlier incarnation of the device popped and never pushed,
// handed back to a new queue with Resubmit() so that Pop() delivers it again
// (vhost-user inflight recovery after a back-end crash). The queue state the
// new queue was created with must already count it as in flight.
struct ResubmitChain {
  // Split: the head descriptor index. Packed: the buffer ID.
  uint16_t id = 0;
  // Packed only: the chain's descriptors as the device read them from the
  // ring at the original Pop() (one INDIRECT descriptor, or the direct
  // chain); the ring slots may hold used elements by now. The queue copies
  // them and validates them again when it walks the chain.
  absl::Span<const spec::PackedDesc> descs;
};

// Result of Pop().
enum class PopStatus : uint8_t {
  // `chain` holds the next chain. Check chain.ok(): a chain error still
  // returns kChain, and the chain must still be pushed back.
  kChain,
  // No buffers available.
  kEmpty,
  // The ring is malformed; error() says how. Nothing more will be popped
  // until the queue is created anew (the device should signal NEEDS_RESET).
  kBroken,
};

template <typename Q>
concept VirtQueue = requires(Q& q, const Q& cq, DescriptorChain& chain,
                             UsedToken token, uint32_t len) {
  { q.Pop(chain) } -> std::same_as<PopStatus>;
  { q.Push(token, len) } -> std::same_as<void>;
  { q.Publish() } -> std::same_as<bool>;
  { q.EnableNotification() } -> std::same_as<bool>;
  { q.DisableNotification() } -> std::same_as<void>;
  { q.SetPolled(true) } -> std::same_as<bool>;
  { q.PrefetchAhead(true) } -> std::same_as<void>;
  { cq.polled() } -> std::same_as<bool>;
  { cq.error() } -> std::same_as<RingError>;
  { cq.state() } -> std::same_as<QueueState>;
  { cq.size() } -> std::same_as<uint32_t>;
  { cq.in_flight() } -> std::same_as<uint32_t>;
};

namespace internal {

// Translates one ring part, checking its alignment and that it lies inside a
// single guest memory region (rings are used in place, never copied).
template <GuestMemory Mem>
absl::StatusOr<uint8_t*> MapRingPart(const Mem& mem, const char* name,
                                     uint64_t gpa, uint64_t size,
                                     uint64_t align) {
  if (gpa % align != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s at 0x%x is not %u-byte aligned", name, gpa, align));
  }
  // A memory type may tell ring parts (used in place for the queue's whole
  // life) from request buffers: glue/xen keeps grant mappings of rings and
  // unmaps those of buffers when their request completes.
  uint8_t* host;
  if constexpr (requires { mem.TranslateRing(gpa, size); }) {
    host = mem.TranslateRing(gpa, size);
  } else {
    host = mem.TranslateContiguous(gpa, size);
  }
  if (host == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s at 0x%x (%u bytes) is not inside one guest memory region", name,
        gpa, size));
  }
  // Ring fields are accessed atomically in place, which needs natural
  // alignment of the host address too, not only of the guest address.
  if (reinterpret_cast<uintptr_t>(host) % align != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s at 0x%x is mapped at a host address that is not %u-byte aligned",
        name, gpa, align));
  }
  return host;
}

}  // namespace internal
}  // namespace virtio

#endif  // VIRTIO_QUEUE_H_
