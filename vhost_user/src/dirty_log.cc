#include "vhost_user/dirty_log.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/str_format.h"
#include "sigbus_guard.h"
#include "vhost_user/interrupt.h"
#include "vhost_user/memory_table.h"
#include "virtio/log.h"
#include "virtio/spec.h"

namespace vhost_user {
namespace {

// Sets `mask` in a byte the front-end reads and clears concurrently. The
// plain load first skips the locked RMW (and the cache-line transfer) for
// pages already marked; it is safe because Mark() fenced before it: a bit
// seen set is cleared by the front-end only after our data is visible.
void OrByte(uint8_t* b, uint8_t mask) {
  if ((__atomic_load_n(b, __ATOMIC_RELAXED) & mask) != mask) {
    __atomic_fetch_or(b, mask, __ATOMIC_RELAXED);
  }
}

}  // namespace

DirtyLog& DirtyLog::operator=(DirtyLog&& o) noexcept {
  if (this != &o) {
    Unmap();
    map_ = o.map_;
    map_len_ = o.map_len_;
    bits_ = o.bits_;
    size_ = o.size_;
    o.map_ = nullptr;
    o.map_len_ = 0;
    o.bits_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void DirtyLog::Unmap() {
  if (map_ != nullptr) {
    SigbusGuard::Unregister(map_);
    munmap(map_, map_len_);
  }
  map_ = nullptr;
  map_len_ = 0;
  bits_ = nullptr;
  size_ = 0;
}

absl::StatusOr<DirtyLog> DirtyLog::Map(int fd, uint64_t size, uint64_t offset,
                                       int fault_fd) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "dirty log of %u bytes at offset %u: %s", size, offset, why));
  };
  if (fd < 0) return bad("no fd");
  if (size == 0) return bad("empty");
  if (size > kMaxSize) {
    return bad(absl::StrFormat("larger than %u bytes", kMaxSize));
  }
  if (offset + size < offset) return bad("offset + size overflows");
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return bad(absl::StrFormat("fstat: %s", std::strerror(errno)));
  }
  // Only a file has a size to check against: mapping past its end would
  // SIGBUS on the first mark.
  if (!S_ISREG(st.st_mode)) {
    return bad(
        absl::StrFormat("the fd is not a regular file (mode 0%o)", st.st_mode));
  }
  if (static_cast<uint64_t>(st.st_size) < offset + size) {
    return bad(absl::StrFormat("the fd's file is only %u bytes", st.st_size));
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t map_offset = offset & ~(page - 1);
  const uint64_t delta = offset - map_offset;
  void* p = mmap(nullptr, size + delta, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                 static_cast<off_t>(map_offset));
  if (p == MAP_FAILED) {
    return bad(absl::StrFormat("mmap: %s", std::strerror(errno)));
  }
  SigbusGuard::Register(p, size + delta, fault_fd, "dirty log");
  DirtyLog log;
  log.map_ = p;
  log.map_len_ = size + delta;
  log.bits_ = static_cast<uint8_t*>(p) + delta;
  log.size_ = size;
  return log;
}

bool DirtyLog::Covers(uint64_t gpa, uint64_t len) const {
  const uint64_t end = covered_end();
  return gpa <= end && len <= end - gpa;
}

bool DirtyLog::IsDirty(uint64_t gpa) const {
  const uint64_t page = gpa / kLogPageSize;
  if (page / 8 >= size_) return false;
  return (__atomic_load_n(&bits_[page / 8], __ATOMIC_RELAXED) >> (page % 8)) &
         1;
}

bool DirtyLog::Mark(uint64_t gpa, uint64_t len) const {
  if (len == 0) return true;
  if (bits_ == nullptr) return false;
  uint64_t last = gpa + (len - 1);
  if (last < gpa) last = UINT64_MAX;  // wraps: everything to the top
  const uint64_t first_page = gpa / kLogPageSize;
  uint64_t last_page = last / kLogPageSize;
  const uint64_t pages = size_ * 8;
  if (first_page >= pages) return false;
  bool complete = true;
  if (last_page >= pages) {
    last_page = pages - 1;
    complete = false;
  }
  // The writes being logged must be visible before any bit is: the
  // front-end copies a page after clearing its bit.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint64_t fb = first_page / 8, lb = last_page / 8;
  const unsigned fbit = first_page % 8, lbit = last_page % 8;
  if (fb == lb) {
    OrByte(&bits_[fb],
           static_cast<uint8_t>((0xffu << fbit) & (0xffu >> (7 - lbit))));
    return complete;
  }
  OrByte(&bits_[fb], static_cast<uint8_t>(0xffu << fbit));
  for (uint64_t b = fb + 1; b < lb; ++b) OrByte(&bits_[b], 0xff);
  OrByte(&bits_[lb], static_cast<uint8_t>(0xffu >> (7 - lbit)));
  return complete;
}

void DirtyLogQueue::Start(const DirtyLog& log, const MemoryTable& memory,
                          const DirtyLogRing& ring, int log_call_fd) {
  log_ = &log;
  memory_ = &memory;
  ring_ = ring;
  log_call_fd_ = log_call_fd;
  heads_.assign(ring.size, Head{});
  ranges_.assign(size_t{ring.size} * kRangesPerHead, Range{});
  batch_open_ = false;
  logged_ = false;
  warned_ = false;
  dropped_ = 0;
}

void DirtyLogQueue::Mark(uint64_t gpa, uint64_t len) {
  if (len == 0) return;
  logged_ = true;
  if (log_->Mark(gpa, len)) return;
  ++dropped_;
  if (!warned_) {
    warned_ = true;
    virtio::Logf(virtio::LogLevel::kWarning,
                 "vhost-user: dirty log of %u bytes (guest-physical below "
                 "0x%x) cannot record a write at 0x%x (+%u): the migration "
                 "may copy stale data",
                 log_->size(), log_->covered_end(), gpa, len);
  }
}

void DirtyLogQueue::Add(Head& h, Range* ranges, Range r) {
  if (h.ranges > 0) {
    Range& last = ranges[h.ranges - 1];
    // The next bytes in chain order continuing the previous run in guest
    // memory (e.g. one buffer split at a region boundary): still exact.
    if (last.exact && last.gpa + last.span == r.gpa &&
        last.offset + last.bytes == r.offset &&
        uint64_t{last.bytes} + r.bytes <= UINT32_MAX) {
      last.span += r.span;
      last.bytes += r.bytes;
      return;
    }
  }
  if (h.ranges < kRangesPerHead) {
    ranges[h.ranges++] = r;
    return;
  }
  // Full: merge the neighbours (in chain order, r last) whose hull grows
  // the least, keeping the ranges ordered by chain offset.
  auto hull = [](const Range& a, const Range& b) {
    const uint64_t lo = std::min(a.gpa, b.gpa);
    const uint64_t hi = std::max(a.gpa + a.span, b.gpa + b.span);
    return Range{lo, hi - lo, std::min(a.offset, b.offset),
                 static_cast<uint32_t>(std::min<uint64_t>(
                     uint64_t{a.bytes} + b.bytes, UINT32_MAX)),
                 false};
  };
  auto at = [&](uint32_t i) -> const Range& {
    return i < kRangesPerHead ? ranges[i] : r;
  };
  uint32_t best = 0;
  uint64_t best_cost = UINT64_MAX;
  for (uint32_t i = 0; i < kRangesPerHead; ++i) {
    const Range m = hull(at(i), at(i + 1));
    const uint64_t cost =
        m.span - std::min(m.span, at(i).span + at(i + 1).span);
    if (cost < best_cost) {
      best_cost = cost;
      best = i;
    }
  }
  const Range merged = hull(at(best), at(best + 1));
  if (best + 1 == kRangesPerHead) {
    ranges[best] = merged;
    return;
  }
  ranges[best] = merged;
  for (uint32_t i = best + 1; i + 1 < kRangesPerHead; ++i) {
    ranges[i] = ranges[i + 1];
  }
  ranges[kRangesPerHead - 1] = r;
}

void DirtyLogQueue::OnPop(const virtio::DescriptorChain& chain, uint16_t,
                          bool) {
  // Resubmitted chains are recorded like fresh ones: the device writes
  // them again.
  const uint32_t slot = chain.token().id % ring_.size;
  Head& h = heads_[slot];
  Range* ranges = &ranges_[size_t{slot} * kRangesPerHead];
  if (h.in_flight > 0) {
    // The driver reposted a head still in flight: which chain a push
    // completes is unknowable, so mark both entirely.
    h.whole = true;
  } else {
    h.ranges = 0;
    h.whole = false;
  }
  if (h.in_flight < UINT16_MAX) ++h.in_flight;
  uint64_t offset = 0;
  for (const iovec& v : chain.writable()) {
    if (v.iov_len == 0) continue;
    auto gpa = memory_->HostToGuest(v.iov_base, v.iov_len);
    if (!gpa) {
      ++dropped_;  // cannot happen: the chain was translated by `memory_`
      continue;
    }
    // Chain totals fit 32 bits (DescriptorChain enforces it).
    Add(h, ranges,
        {*gpa, v.iov_len, static_cast<uint32_t>(offset),
         static_cast<uint32_t>(v.iov_len), true});
    offset += v.iov_len;
  }
}

void DirtyLogQueue::OnPush(virtio::UsedToken token, uint32_t len,
                           uint16_t position) {
  if (!batch_open_) {
    batch_open_ = true;
    batch_first_ = position;
  }
  const uint32_t slot = token.id % ring_.size;
  Head& h = heads_[slot];
  if (h.in_flight == 0) {
    // Never popped while attached: the device wrote nothing we know of.
    if (len != 0) ++dropped_;
    return;
  }
  const Range* ranges = &ranges_[size_t{slot} * kRangesPerHead];
  if (len != 0 && h.ranges > 0) {
    for (uint16_t i = 0; i < h.ranges; ++i) {
      const Range& r = ranges[i];
      if (h.whole || !r.exact) {
        if (h.whole || r.offset < len) Mark(r.gpa, r.span);
      } else if (r.offset < len) {
        Mark(r.gpa, std::min<uint64_t>(r.bytes, len - r.offset));
      }
    }
    // A status byte at the end of the chain (virtio-blk errors: len 1).
    const Range& last = ranges[h.ranges - 1];
    if (len < uint64_t{last.offset} + last.bytes) {
      if (last.exact) {
        Mark(last.gpa + last.span - 1, 1);
      } else {
        Mark(last.gpa, last.span);
      }
    }
  }
  if (--h.in_flight == 0) {
    h.ranges = 0;
    h.whole = false;
  }
}

void DirtyLogQueue::MarkUsed(uint16_t first, uint32_t count) {
  const uint32_t n = ring_.size;
  count = std::min(count, n);
  if (count == 0) return;
  uint64_t base, elem;
  if (ring_.packed) {
    base = ring_.desc_gpa;
    elem = sizeof(virtio::spec::PackedDesc);
  } else {
    if (!ring_.log_used) return;
    base = ring_.used_log_gpa + 4;
    elem = sizeof(virtio::spec::SplitUsedElem);
  }
  // Split indices are free-running (the ring size is a power of two);
  // packed ones are ring offsets already.
  const uint32_t start = first % n;
  const uint32_t run = std::min(count, n - start);
  Mark(base + elem * start, elem * run);
  if (run < count) Mark(base, elem * (count - run));
}

void DirtyLogQueue::OnPublish(const virtio::QueueState& state) {
  if (batch_open_) {
    batch_open_ = false;
    uint32_t count;
    if (ring_.packed) {
      count =
          (uint32_t{state.next_used} + ring_.size - batch_first_) % ring_.size;
      if (count == 0) count = ring_.size;  // a whole lap
    } else {
      count = static_cast<uint16_t>(state.next_used - batch_first_);
    }
    MarkUsed(batch_first_, count);
  }
  if (ring_.log_used) {
    // Split: flags and idx, and avail_event; packed: the device event
    // suppression area. Rewritten by notification changes too.
    Mark(ring_.used_log_gpa, 4);
    if (!ring_.packed) {
      Mark(ring_.used_log_gpa + virtio::spec::SplitAvailEventOffset(ring_.size),
           2);
    }
  }
  if (logged_ && log_call_fd_ >= 0) {
    logged_ = false;
    SignalFd(log_call_fd_);
  }
}

void DirtyLogQueue::MarkRing() {
  if (log_ == nullptr) return;
  if (ring_.packed) {
    Mark(ring_.desc_gpa,
         uint64_t{sizeof(virtio::spec::PackedDesc)} * ring_.size);
    if (ring_.log_used) {
      Mark(ring_.used_log_gpa, sizeof(virtio::spec::PackedEventSuppress));
    }
  } else if (ring_.log_used) {
    Mark(ring_.used_log_gpa, virtio::spec::SplitUsedRingSize(ring_.size));
  }
  if (logged_ && log_call_fd_ >= 0) {
    logged_ = false;
    SignalFd(log_call_fd_);
  }
}

}  // namespace vhost_user
