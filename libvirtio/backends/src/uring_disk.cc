#include "virtio/backends/uring_disk.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "block_common.h"
#include "virtio/backends/image_lock.h"
#include "virtio/log.h"

namespace virtio {
namespace {

std::string ErrnoString(int err) { return std::strerror(err); }

void WakeEventFd(int fd) {
  if (fd < 0) return;
  const uint64_t one = 1;
  // Nonblocking; a full counter (never in practice) already means "readable".
  [[maybe_unused]] ssize_t r = write(fd, &one, sizeof one);
}

using Inline = UringDiskOptions::Inline;

// What kAuto means for this open file (see uring_disk.h).
Inline ResolveInline(int fd, const UringDiskOptions& options,
                     bool block_device) {
  if (options.direct || options.inline_io == Inline::kOff) return Inline::kOff;
  if (options.inline_io != Inline::kAuto) return options.inline_io;
  struct statfs sf;
  if (!block_device && fstatfs(fd, &sf) == 0 &&
      (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC)) {
    return Inline::kSync;
  }
  // EOPNOTSUPP: the file has no FMODE_NOWAIT; EINVAL: a kernel without
  // RWF_NOWAIT. EAGAIN (not cached) means it is supported.
  uint8_t probe[512];
  iovec v{probe, sizeof probe};
  if (preadv2(fd, &v, 1, 0, RWF_NOWAIT) < 0 &&
      (errno == EOPNOTSUPP || errno == EINVAL)) {
    return Inline::kOff;
  }
  return Inline::kNoWait;
}

}  // namespace

// --- UringDisk
// ----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<UringDisk>> UringDisk::Open(
    const UringDiskOptions& options) {
  if (options.num_queues == 0 || options.queue_depth == 0 ||
      options.queue_depth > internal::kMaxBlockQueueDepth) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "UringDisk %s: num_queues %u / queue_depth %u out of range",
        options.path, options.num_queues, options.queue_depth));
  }
  std::unique_ptr<UringDisk> disk(new UringDisk(options));
  int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (options.direct) flags |= O_DIRECT;
  disk->fd_ = open(options.path.c_str(), flags);
  if (disk->fd_ < 0) {
    const int err = errno;
    const std::string msg = absl::StrFormat(
        "UringDisk: cannot open %s%s: %s", options.path,
        options.read_only ? " read-only" : " read-write", ErrnoString(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES || err == EPERM || err == EROFS) {
      return absl::PermissionDeniedError(msg);
    }
    return absl::InvalidArgumentError(msg);
  }
  struct stat st;
  if (fstat(disk->fd_, &st) != 0) {
    return absl::InternalError(absl::StrFormat(
        "UringDisk: fstat(%s): %s", options.path, ErrnoString(errno)));
  }
  uint64_t size = 0;
  uint32_t logical = 512;
  if (S_ISBLK(st.st_mode)) {
    disk->block_device_ = true;
    if (ioctl(disk->fd_, BLKGETSIZE64, &size) != 0) {
      return absl::InternalError(absl::StrFormat(
          "UringDisk: BLKGETSIZE64(%s): %s", options.path, ErrnoString(errno)));
    }
    int ssz = 0;
    if (ioctl(disk->fd_, BLKSSZGET, &ssz) == 0 && ssz >= 512) {
      logical = static_cast<uint32_t>(ssz);
    }
    int ro = 0;
    if (!options.read_only && ioctl(disk->fd_, BLKROGET, &ro) == 0 && ro) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "UringDisk: block device %s is read-only; open it read-only",
          options.path));
    }
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "UringDisk: %s is neither a regular file nor a block device",
        options.path));
  }
  disk->block_size_ = options.block_size != 0 ? options.block_size : logical;
  if (disk->block_size_ < 512 ||
      (disk->block_size_ & (disk->block_size_ - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "UringDisk %s: block size %u is not a power of two >= 512",
        options.path, disk->block_size_));
  }
  // A trailing partial block is not exposed.
  disk->capacity_.store(size - size % disk->block_size_,
                        std::memory_order_release);
  if (disk->capacity() == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "UringDisk: %s is smaller than one %u-byte block (%u bytes)",
        options.path, disk->block_size_, size));
  }
  if (options.lock) {
    absl::Status locked =
        LockImageLikeQemu(disk->fd_, options.path, !options.read_only);
    if (absl::IsUnimplemented(locked)) {
      Logf(LogLevel::kWarning, "UringDisk: %s; serving it unlocked",
           locked.message());
    } else if (!locked.ok()) {
      return locked;
    }
  }
  disk->inline_ = ResolveInline(disk->fd_, options, disk->block_device_);
  disk->queues_.reserve(options.num_queues);
  for (uint16_t i = 0; i < options.num_queues; ++i) {
    disk->queues_.emplace_back(new Queue(disk.get(), options.queue_depth));
    absl::Status s = disk->queues_.back()->Init();
    if (!s.ok()) {
      return absl::Status(
          s.code(), absl::StrFormat("UringDisk %s queue %u: %s", options.path,
                                    i, s.message()));
    }
  }
  return disk;
}

absl::StatusOr<uint64_t> UringDisk::RereadSize() {
  uint64_t size = 0;
  if (block_device_) {
    if (ioctl(fd_, BLKGETSIZE64, &size) != 0) {
      return absl::InternalError(
          absl::StrFormat("UringDisk: BLKGETSIZE64(%s): %s", options_.path,
                          ErrnoString(errno)));
    }
  } else {
    struct stat st;
    if (fstat(fd_, &st) != 0) {
      return absl::InternalError(absl::StrFormat(
          "UringDisk: fstat(%s): %s", options_.path, ErrnoString(errno)));
    }
    size = static_cast<uint64_t>(st.st_size);
  }
  size -= size % block_size_;
  if (size > capacity()) capacity_.store(size, std::memory_order_release);
  return size;
}

UringDisk::~UringDisk() {
  queues_.clear();  // each drains and tears down its ring first
  if (fd_ >= 0) close(fd_);
}

// --- UringDisk::Queue
// ---------------------------------------------------------

UringDisk::Queue::Queue(UringDisk* disk, uint32_t depth)
    : disk_(disk),
      depth_(depth),
      ops_(depth),
      ready_(depth),
      inline_(disk->inline_) {
  free_.reserve(depth);
  for (uint32_t i = depth; i > 0; --i) free_.push_back(i - 1);
}

absl::Status UringDisk::Queue::Init() {
  auto* ring = new io_uring;
  const int r = io_uring_queue_init(depth_, ring, 0);
  if (r < 0) {
    delete ring;
    if (r == -ENOSYS || r == -EPERM) {
      return absl::UnavailableError(absl::StrFormat(
          "io_uring_queue_init(%u) failed: %s; io_uring is unavailable here "
          "(kernel without io_uring, /proc/sys/kernel/io_uring_disabled, "
          "seccomp or a container sandbox)",
          depth_, ErrnoString(-r)));
    }
    return absl::ResourceExhaustedError(
        absl::StrFormat("io_uring_queue_init(%u) failed: %s (RLIMIT_MEMLOCK?)",
                        depth_, ErrnoString(-r)));
  }
  ring_ = ring;
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("eventfd: %s", ErrnoString(errno)));
  }
  const int e = io_uring_register_eventfd(ring_, event_fd_);
  if (e < 0) {
    return absl::InternalError(
        absl::StrFormat("io_uring_register_eventfd: %s", ErrnoString(-e)));
  }
  return absl::OkStatus();
}

UringDisk::Queue::~Queue() {
  if (ring_ != nullptr) {
    Drain();
    io_uring_queue_exit(ring_);
    delete ring_;
  }
  if (event_fd_ >= 0) close(event_fd_);
}

uint32_t UringDisk::Queue::outstanding() const {
  return depth_ - static_cast<uint32_t>(free_.size());
}

UringDisk::Queue::Op* UringDisk::Queue::Alloc(uint64_t cookie,
                                              uint32_t* index) {
  if (free_.empty()) return nullptr;
  *index = free_.back();
  free_.pop_back();
  Op& op = ops_[*index];
  op.cookie = cookie;
  op.iov = nullptr;
  op.iovcnt = 0;
  op.offset = op.length = op.done = 0;
  return &op;
}

void UringDisk::Queue::Free(uint32_t index) { free_.push_back(index); }

void UringDisk::Queue::Complete(uint32_t index, int32_t result) {
  // ready_ has room for every op, so this cannot fail; the op stays
  // allocated until reaped so outstanding() stays truthful.
  ready_.Push(index, result);
  WakeEventFd(event_fd_);
}

bool UringDisk::Queue::Issue(uint32_t index) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_);
  if (sqe == nullptr) {
    Submit();
    sqe = io_uring_get_sqe(ring_);
  }
  if (sqe == nullptr) {
    Complete(index, -EBUSY);
    return false;
  }
  Op& op = ops_[index];
  const int fd = disk_->fd_;
  switch (op.kind) {
    case Kind::kRead:
      io_uring_prep_readv(sqe, fd, op.iov, op.iovcnt, op.offset + op.done);
      break;
    case Kind::kWrite:
      io_uring_prep_writev(sqe, fd, op.iov, op.iovcnt, op.offset + op.done);
      break;
    case Kind::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case Kind::kPunch:
      io_uring_prep_fallocate(
          sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
          static_cast<off_t>(op.offset), static_cast<off_t>(op.length));
      break;
    case Kind::kZeroRange:
      io_uring_prep_fallocate(
          sqe, fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
          static_cast<off_t>(op.offset), static_cast<off_t>(op.length));
      break;
  }
  io_uring_sqe_set_data64(sqe, index);
  ++in_kernel_;
  ++unsubmitted_;
  return true;
}

void UringDisk::Queue::Start(uint32_t index) {
  Op& op = ops_[index];
  const bool write = op.kind == Kind::kWrite;
  if (inline_ == Inline::kSync || (inline_ == Inline::kNoWait && !write)) {
    const int flags = inline_ == Inline::kNoWait ? RWF_NOWAIT : 0;
    const auto offset = static_cast<off_t>(op.offset);
    const int cnt = static_cast<int>(op.iovcnt);
    const ssize_t r = write ? pwritev2(disk_->fd_, op.iov, cnt, offset, flags)
                            : preadv2(disk_->fd_, op.iov, cnt, offset, flags);
    if (r >= 0 && static_cast<uint64_t>(r) == op.length) {
      // No eventfd wake-up: the Reap() that follows Submit() finds it.
      ready_.Push(index, 0);
      ++inline_done_;
      return;
    }
    ++inline_fallbacks_;
    if (r < 0 && errno == EOPNOTSUPP && inline_ == Inline::kNoWait) {
      inline_ = Inline::kOff;
    }
    // Anything but a full transfer (not cached, short, end of file, an
    // error) goes through io_uring, which then decides the outcome exactly
    // as if inline I/O were off: one code path for retries and errors.
    if (r > 0) {
      op.done = static_cast<uint64_t>(r);
      IssueRemainder(index);
      return;
    }
  }
  Issue(index);
}

// After a short transfer of `op.done` bytes, points op.iov at the rest.
bool UringDisk::Queue::IssueRemainder(uint32_t index) {
  Op& op = ops_[index];
  uint64_t skip = op.done;
  uint32_t i = 0;
  // op.iov may already point into op.rest: copy before rebuilding.
  std::vector<iovec> cur(op.iov, op.iov + op.iovcnt);
  // Bytes already transferred relative to the current iov array.
  uint64_t cur_total = 0;
  for (const iovec& v : cur) cur_total += v.iov_len;
  skip = cur_total - (op.length - op.done);
  while (i < cur.size() && skip >= cur[i].iov_len) {
    skip -= cur[i].iov_len;
    ++i;
  }
  op.rest.assign(cur.begin() + i, cur.end());
  if (!op.rest.empty()) {
    op.rest[0].iov_base = static_cast<uint8_t*>(op.rest[0].iov_base) + skip;
    op.rest[0].iov_len -= skip;
  }
  op.iov = op.rest.data();
  op.iovcnt = static_cast<uint32_t>(op.rest.size());
  return Issue(index);
}

bool UringDisk::Queue::Read(uint64_t offset, const iovec* iov, uint32_t iovcnt,
                            uint64_t cookie) {
  uint32_t index;
  Op* op = Alloc(cookie, &index);
  if (op == nullptr) return false;
  op->kind = Kind::kRead;
  op->iov = iov;
  op->iovcnt = iovcnt;
  op->offset = offset;
  for (uint32_t i = 0; i < iovcnt; ++i) op->length += iov[i].iov_len;
  if (op->length == 0) {
    Complete(index, 0);
    return true;
  }
  Start(index);
  return true;
}

bool UringDisk::Queue::Write(uint64_t offset, const iovec* iov, uint32_t iovcnt,
                             uint64_t cookie) {
  uint32_t index;
  Op* op = Alloc(cookie, &index);
  if (op == nullptr) return false;
  op->kind = Kind::kWrite;
  op->iov = iov;
  op->iovcnt = iovcnt;
  op->offset = offset;
  for (uint32_t i = 0; i < iovcnt; ++i) op->length += iov[i].iov_len;
  if (disk_->read_only()) {
    Complete(index, -EROFS);
    return true;
  }
  if (op->length == 0) {
    Complete(index, 0);
    return true;
  }
  Start(index);
  return true;
}

bool UringDisk::Queue::Flush(uint64_t cookie) {
  uint32_t index;
  Op* op = Alloc(cookie, &index);
  if (op == nullptr) return false;
  op->kind = Kind::kFlush;
  Issue(index);
  return true;
}

bool UringDisk::Queue::Discard(uint64_t offset, uint64_t length,
                               uint64_t cookie) {
  uint32_t index;
  Op* op = Alloc(cookie, &index);
  if (op == nullptr) return false;
  if (disk_->read_only() || !disk_->supports_discard()) {
    Complete(index, disk_->read_only() ? -EROFS : -EOPNOTSUPP);
    return true;
  }
  if (length == 0) {
    Complete(index, 0);
    return true;
  }
  if (disk_->block_device_) {
    uint64_t range[2] = {offset, length};
    Complete(index, ioctl(disk_->fd_, BLKDISCARD, range) == 0 ? 0 : -errno);
    return true;
  }
  op->kind = Kind::kPunch;
  op->offset = offset;
  op->length = length;
  Issue(index);
  return true;
}

bool UringDisk::Queue::WriteZeroes(uint64_t offset, uint64_t length, bool unmap,
                                   uint64_t cookie) {
  uint32_t index;
  Op* op = Alloc(cookie, &index);
  if (op == nullptr) return false;
  if (disk_->read_only() || !disk_->supports_write_zeroes()) {
    Complete(index, disk_->read_only() ? -EROFS : -EOPNOTSUPP);
    return true;
  }
  if (length == 0) {
    Complete(index, 0);
    return true;
  }
  if (disk_->block_device_) {
    uint64_t range[2] = {offset, length};
    Complete(index, ioctl(disk_->fd_, BLKZEROOUT, range) == 0 ? 0 : -errno);
    return true;
  }
  op->kind = unmap ? Kind::kPunch : Kind::kZeroRange;
  op->offset = offset;
  op->length = length;
  Issue(index);
  return true;
}

void UringDisk::Queue::Submit() {
  while (unsubmitted_ > 0) {
    const int r = io_uring_submit(ring_);
    if (r > 0) {
      unsubmitted_ -= static_cast<uint32_t>(r) < unsubmitted_
                          ? static_cast<uint32_t>(r)
                          : unsubmitted_;
      continue;
    }
    if (r == -EINTR) continue;
    // -EAGAIN / -EBUSY: the kernel is short of resources or the CQ is
    // backed up; the entries stay queued and go with the next Submit(),
    // which NextCompletion() tries when it finds nothing to reap. Only
    // something must call it: if every request of the queue is among those
    // left behind, no completion will ever wake the glue, and a guest
    // waiting for them (a full queue depth) never kicks again: a stall
    // with nothing logged. The eventfd brings the glue back to retry.
    if (unsubmitted_ > 0) WakeEventFd(event_fd_);
    break;
  }
}

bool UringDisk::Queue::NextCompletion(uint64_t* cookie, int32_t* result) {
  for (;;) {
    CompletionRing::Entry e;
    if (ready_.Pop(&e)) {
      const uint32_t index = static_cast<uint32_t>(e.cookie);
      *cookie = ops_[index].cookie;
      *result = e.result;
      Free(index);
      return true;
    }
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(ring_, &cqe) != 0 || cqe == nullptr) {
      if (unsubmitted_ > 0) Submit();  // resubmitted remainders
      return false;
    }
    const uint32_t index = static_cast<uint32_t>(cqe->user_data);
    const int32_t res = cqe->res;
    io_uring_cqe_seen(ring_, cqe);
    --in_kernel_;
    if (index >= ops_.size()) continue;  // cannot happen: we set user_data
    Op& op = ops_[index];
    int32_t final_result = 0;
    if (op.kind == Kind::kRead || op.kind == Kind::kWrite) {
      if (res == -EAGAIN || res == -EINTR) {
        Issue(index);
        continue;
      }
      if (res < 0) {
        final_result = res;
      } else if (res == 0) {
        final_result = -EIO;  // no progress: end of file
      } else {
        op.done += static_cast<uint64_t>(res);
        if (op.done < op.length) {
          IssueRemainder(index);
          continue;
        }
      }
    } else if (op.kind == Kind::kZeroRange &&
               (res == -EOPNOTSUPP || res == -EINVAL)) {
      // No ZERO_RANGE on this file system: a punched hole reads as zeros.
      op.kind = Kind::kPunch;
      Issue(index);
      continue;
    } else {
      final_result = res < 0 ? res : 0;
    }
    *cookie = op.cookie;
    *result = final_result;
    Free(index);
    return true;
  }
}

void UringDisk::Queue::Drain() {
  Submit();
  while (in_kernel_ > 0) {
    if (unsubmitted_ > 0) {
      // Could not submit (resource shortage): hand them over now, waiting.
      const int r = io_uring_submit_and_wait(ring_, 1);
      if (r > 0) {
        unsubmitted_ -= static_cast<uint32_t>(r) < unsubmitted_
                            ? static_cast<uint32_t>(r)
                            : unsubmitted_;
      }
    }
    io_uring_cqe* cqe = nullptr;
    const int r = io_uring_wait_cqe(ring_, &cqe);
    if (r == -EINTR || r == -EAGAIN) continue;
    if (r < 0 || cqe == nullptr) break;  // ring unusable; nothing to wait for
    io_uring_cqe_seen(ring_, cqe);
    --in_kernel_;
  }
  unsubmitted_ = 0;
  ready_.Clear();
  free_.clear();
  for (uint32_t i = depth_; i > 0; --i) free_.push_back(i - 1);
  for (Op& op : ops_) op.rest.clear();
  // Reset the eventfd: nothing is pending any more.
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(event_fd_, &v, sizeof v);
}

}  // namespace virtio
