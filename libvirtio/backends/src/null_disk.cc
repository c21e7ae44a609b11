#include "virtio/backends/null_disk.h"

#include <cstring>

#include "block_common.h"

namespace virtio {

absl::StatusOr<std::unique_ptr<NullDisk>> NullDisk::Create(
    const NullDiskOptions& options) {
  absl::Status s = internal::CheckBlockGeometry(
      "NullDisk", options.capacity, options.block_size, options.num_queues,
      options.queue_depth);
  if (!s.ok()) return s;
  return std::unique_ptr<NullDisk>(new NullDisk(options));
}

NullDisk::NullDisk(const NullDiskOptions& options) : options_(options) {
  queues_.reserve(options.num_queues);
  for (uint16_t i = 0; i < options.num_queues; ++i) {
    queues_.emplace_back(options.queue_depth);
  }
}

bool NullDisk::Queue::Read(uint64_t, const iovec* iov, uint32_t iovcnt,
                           uint64_t cookie) {
  if (done_.full()) return false;
  for (uint32_t i = 0; i < iovcnt; ++i) {
    std::memset(iov[i].iov_base, 0, iov[i].iov_len);
  }
  return done_.Push(cookie, 0);
}

}  // namespace virtio
