// virtio/ring_error.h — what was wrong with a ring or a descriptor chain.
//
// The device side of a virtqueue never trusts the guest. When a value read
// from the ring is malformed, the queue reports one of these codes instead of
// crashing, reading outside guest memory or looping. There are two severities:
//
//  * Ring errors (IsRingError() true) mean the ring itself can no longer be
//    walked: a descriptor index out of range, a loop, an index that ran ahead.
//    The queue stops (PopStatus::kBroken) and stays stopped until it is set up
//    again; a device answers by setting DEVICE_NEEDS_RESET.
//  * Chain errors mean one request is unusable but the ring is intact: a
//    buffer outside guest memory, a readable descriptor after a writable one,
//    more segments than the device accepts. The chain is still returned
//    (with its UsedToken) so the device can fail that request and go on.
//
// Example:
//   if (!chain.ok()) LOG(WARNING) << virtio::RingErrorName(chain.error());
#ifndef VIRTIO_RING_ERROR_H_
#define VIRTIO_RING_ERROR_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

namespace virtio {

enum class RingError : uint8_t {
  kNone = 0,

  // --- Ring errors: the queue stops. ---
  // The available index ran more than a queue size ahead of the device.
  kAvailIndexTooFarAhead,
  // A head or `next` index, or an indirect table index, is >= its table size.
  kDescriptorIndexOutOfRange,
  // The chain has more descriptors than the queue (or table) can hold: a loop.
  kChainTooLong,
  // INDIRECT was set but VIRTIO_F_INDIRECT_DESC was not negotiated.
  kIndirectNotNegotiated,
  // An indirect table's length is zero, not a multiple of 16, or too long.
  kIndirectTableBadLength,
  // The indirect table does not lie inside guest memory.
  kIndirectTableOutOfRange,
  // A descriptor inside an indirect table has INDIRECT set.
  kNestedIndirect,
  // A descriptor has both INDIRECT and NEXT set.
  kIndirectWithNext,
  // INDIRECT on a descriptor that is not the first of its chain.
  kIndirectNotAtHead,
  // The device pushed more used buffers than it popped (a device bug).
  kUsedOverflow,

  // --- Chain errors: only this request fails. ---
  // A buffer does not lie inside guest memory.
  kBufferOutOfRange,
  // addr + len overflows 64 bits.
  kBufferAddressOverflow,
  // A device-readable descriptor follows a device-writable one.
  kReadableAfterWritable,
  // The chain's total length exceeds 4 GiB - 1 (used lengths are 32-bit).
  kChainTooLarge,
  // The chain has more memory segments than the DescriptorChain can hold.
  kTooManySegments,
};

// True for errors after which the ring cannot be walked any further.
constexpr bool IsRingError(RingError e) {
  return e != RingError::kNone && e < RingError::kBufferOutOfRange;
}

// A short, stable, human-readable name, e.g. "descriptor index out of range".
std::string_view RingErrorName(RingError e);

// Converts to absl::Status (kDataLoss for ring errors, kInvalidArgument for
// chain errors, OK for kNone) for logging and setup-time APIs.
absl::Status RingErrorToStatus(RingError e);

}  // namespace virtio

#endif  // VIRTIO_RING_ERROR_H_
