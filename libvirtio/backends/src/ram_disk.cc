#include "virtio/backends/ram_disk.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "block_common.h"

namespace virtio {

absl::StatusOr<std::unique_ptr<RamDisk>> RamDisk::Create(
    const RamDiskOptions& options) {
  absl::Status s = internal::CheckBlockGeometry(
      "RamDisk", options.capacity, options.block_size, options.num_queues,
      options.queue_depth);
  if (!s.ok()) return s;
  void* p = mmap(nullptr, options.capacity, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("RamDisk: cannot map %u bytes: %s", options.capacity,
                        std::strerror(errno)));
  }
  return std::unique_ptr<RamDisk>(
      new RamDisk(options, static_cast<uint8_t*>(p)));
}

RamDisk::RamDisk(const RamDiskOptions& options, uint8_t* data)
    : options_(options), data_(data) {
  queues_.reserve(options.num_queues);
  for (uint16_t i = 0; i < options.num_queues; ++i) {
    queues_.emplace_back(this, options.queue_depth);
  }
}

RamDisk::~RamDisk() { munmap(data_, options_.capacity); }

bool RamDisk::Queue::InRange(uint64_t offset, uint64_t length) const {
  const uint64_t cap = disk_->options_.capacity;
  return offset <= cap && length <= cap - offset;
}

bool RamDisk::Queue::Read(uint64_t offset, const iovec* iov, uint32_t iovcnt,
                          uint64_t cookie) {
  if (done_.full()) return false;
  uint64_t total = 0;
  for (uint32_t i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  if (!InRange(offset, total)) return done_.Push(cookie, -EIO);
  const uint8_t* src = disk_->data_ + offset;
  for (uint32_t i = 0; i < iovcnt; ++i) {
    std::memcpy(iov[i].iov_base, src, iov[i].iov_len);
    src += iov[i].iov_len;
  }
  return done_.Push(cookie, 0);
}

bool RamDisk::Queue::Write(uint64_t offset, const iovec* iov, uint32_t iovcnt,
                           uint64_t cookie) {
  if (done_.full()) return false;
  uint64_t total = 0;
  for (uint32_t i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  if (disk_->options_.read_only || !InRange(offset, total)) {
    return done_.Push(cookie, -EIO);
  }
  uint8_t* dst = disk_->data_ + offset;
  for (uint32_t i = 0; i < iovcnt; ++i) {
    std::memcpy(dst, iov[i].iov_base, iov[i].iov_len);
    dst += iov[i].iov_len;
  }
  return done_.Push(cookie, 0);
}

bool RamDisk::Queue::Discard(uint64_t offset, uint64_t length,
                             uint64_t cookie) {
  // Deallocated contents are undefined; zeroing is the simplest choice.
  return WriteZeroes(offset, length, /*unmap=*/true, cookie);
}

bool RamDisk::Queue::WriteZeroes(uint64_t offset, uint64_t length, bool,
                                 uint64_t cookie) {
  if (done_.full()) return false;
  if (disk_->options_.read_only || !InRange(offset, length)) {
    return done_.Push(cookie, -EIO);
  }
  std::memset(disk_->data_ + offset, 0, length);
  return done_.Push(cookie, 0);
}

}  // namespace virtio
