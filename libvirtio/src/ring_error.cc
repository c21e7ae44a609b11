#include "virtio/ring_error.h"

#include <string>

namespace virtio {

std::string_view RingErrorName(RingError e) {
  switch (e) {
    case RingError::kNone:
      return "no error";
    case RingError::kAvailIndexTooFarAhead:
      return "available index more than a queue size ahead";
    case RingError::kDescriptorIndexOutOfRange:
      return "descriptor index out of range";
    case RingError::kChainTooLong:
      return "descriptor chain longer than the queue (loop?)";
    case RingError::kIndirectNotNegotiated:
      return "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
    case RingError::kIndirectTableBadLength:
      return "indirect table length zero, not a multiple of 16, or too long";
    case RingError::kIndirectTableOutOfRange:
      return "indirect table outside guest memory";
    case RingError::kNestedIndirect:
      return "nested indirect descriptor";
    case RingError::kIndirectWithNext:
      return "descriptor with both INDIRECT and NEXT";
    case RingError::kIndirectNotAtHead:
      return "indirect descriptor not at the head of its chain";
    case RingError::kUsedOverflow:
      return "more used buffers pushed than popped";
    case RingError::kBufferOutOfRange:
      return "buffer outside guest memory";
    case RingError::kBufferAddressOverflow:
      return "buffer address + length overflows";
    case RingError::kReadableAfterWritable:
      return "device-readable descriptor after a device-writable one";
    case RingError::kChainTooLarge:
      return "descriptor chain larger than 4 GiB";
    case RingError::kTooManySegments:
      return "descriptor chain has more segments than the device accepts";
  }
  return "unknown ring error";
}

absl::Status RingErrorToStatus(RingError e) {
  if (e == RingError::kNone) return absl::OkStatus();
  std::string message(RingErrorName(e));
  if (IsRingError(e)) return absl::DataLossError(message);
  return absl::InvalidArgumentError(message);
}

}  // namespace virtio
