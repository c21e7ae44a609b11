// Internal helpers shared by the bundled block backends.
#ifndef LIBVIRTIO_BACKENDS_SRC_BLOCK_COMMON_H_
#define LIBVIRTIO_BACKENDS_SRC_BLOCK_COMMON_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace virtio::internal {

// Largest per-queue depth a bundled backend accepts (the largest virtqueue).
inline constexpr uint32_t kMaxBlockQueueDepth = 32768;

inline absl::Status CheckBlockGeometry(const char* what, uint64_t capacity,
                                       uint32_t block_size,
                                       uint16_t num_queues,
                                       uint32_t queue_depth) {
  if (block_size < 512 || (block_size & (block_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: block size %u is not a power of two >= 512", what, block_size));
  }
  if (capacity == 0 || capacity % block_size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: capacity %u is not a non-zero multiple of the block size %u",
        what, capacity, block_size));
  }
  if (num_queues == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: needs at least one queue", what));
  }
  if (queue_depth == 0 || queue_depth > kMaxBlockQueueDepth) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: queue depth %u not in 1..%u", what, queue_depth,
        kMaxBlockQueueDepth));
  }
  return absl::OkStatus();
}

}  // namespace virtio::internal

#endif  // LIBVIRTIO_BACKENDS_SRC_BLOCK_COMMON_H_
