// vhost_user/frontend/split_driver_ring.h — the driver's half of a split
// virtqueue (VIRTIO 1.2 §2.7) in memory shared with a back-end.
//
// Add() writes a chain's descriptors and its avail slot; Publish() makes
// everything added visible with one avail->idx store and says whether the
// device wants a notification (EVENT_IDX or NO_NOTIFY). Reap() takes used
// elements one at a time, validating each ID against the chains
// outstanding; a bad ID or an index that runs ahead of what was submitted
// breaks the ring. Single-threaded: one thread per ring at a time.
#ifndef VHOST_USER_FRONTEND_SPLIT_DRIVER_RING_H_
#define VHOST_USER_FRONTEND_SPLIT_DRIVER_RING_H_

#include <cstdint>
#include <memory>

#include "vhost_user/frontend/driver_ring.h"
#include "virtio/ring_access.h"
#include "virtio/spec.h"

namespace vhost_user {

// The driver's half of one split ring (see the top of this file).
class SplitDriverRing {
 public:
  // Bytes of shared memory the ring needs (16-byte aligned start).
  static uint64_t MemorySize(uint16_t size);

  // Lays the ring out at `mem` (zeroed, MemorySize(size) bytes, 16-byte
  // aligned). `size` is a power of two.
  void Init(uint8_t* mem, uint16_t size, bool event_idx);

  uint16_t size() const { return size_; }
  uint16_t num_free() const { return num_free_; }
  // Addresses for SET_VRING_ADDR.
  uint64_t desc_addr() const { return reinterpret_cast<uint64_t>(desc_); }
  uint64_t avail_addr() const { return reinterpret_cast<uint64_t>(avail_); }
  uint64_t used_addr() const { return reinterpret_cast<uint64_t>(used_); }
  const char* error() const { return error_; }

  // The ID the next Add() will return.
  uint16_t peek_id() const { return free_head_; }
  // Adds a chain of `n` descriptors (1 <= n <= num_free()); returns its ID.
  uint16_t Add(const RingBuf* bufs, uint16_t n) {
    const uint16_t head = free_head_;
    uint16_t i = head, last = head;
    for (uint16_t k = 0; k < n; ++k) {
      virtio::spec::SplitDesc d;
      d.addr = bufs[k].addr;
      d.len = bufs[k].len;
      d.flags = static_cast<uint16_t>(
          bufs[k].flags | (k + 1 < n ? virtio::spec::kDescFlagNext : 0));
      d.next = next_[i];
      desc_[i] = d;
      last = i;
      i = next_[i];
    }
    free_head_ = i;
    num_free_ = static_cast<uint16_t>(num_free_ - n);
    chain_len_[head] = n;
    chain_last_[head] = last;
    ring_[avail_idx_ & mask_] = head;
    ++avail_idx_;
    return head;
  }

  // Publishes what was added since the last call. Returns true if the
  // device asked to be notified.
  bool Publish() {
    const uint16_t old = published_;
    const uint16_t now = avail_idx_;
    if (old == now) return false;
    virtio::StoreRelease(&avail_->idx, now);
    published_ = now;
    virtio::FullFence();  // idx store before the event / flags load
    if (event_idx_) {
      const uint16_t ev = virtio::LoadRelaxed(avail_event_);
      return virtio::spec::NeedEvent(ev, now, old);
    }
    return (virtio::LoadRelaxed(&used_->flags) &
            virtio::spec::kUsedFlagNoNotify) == 0;
  }

  // Takes the next used element.
  ReapStatus Reap(uint16_t* id, uint32_t* len) {
    if (error_ != nullptr) return ReapStatus::kBroken;
    if (last_used_ == used_idx_cache_) {
      used_idx_cache_ = virtio::LoadAcquire(&used_->idx);
      if (last_used_ == used_idx_cache_) return ReapStatus::kEmpty;
      if (static_cast<uint16_t>(used_idx_cache_ - last_used_) >
          static_cast<uint16_t>(published_ - last_used_)) {
        error_ = "used index ahead of the chains made available";
        return ReapStatus::kBroken;
      }
    }
    const auto e = virtio::ReadOnce<virtio::spec::SplitUsedElem>(
        &used_ring_[last_used_ & mask_]);
    if (e.id >= size_ || chain_len_[e.id] == 0) {
      error_ = "used element with an ID that is not outstanding";
      return ReapStatus::kBroken;
    }
    ++last_used_;
    const auto head = static_cast<uint16_t>(e.id);
    next_[chain_last_[head]] = free_head_;
    free_head_ = head;
    num_free_ = static_cast<uint16_t>(num_free_ + chain_len_[head]);
    chain_len_[head] = 0;
    *id = head;
    *len = e.len;
    return ReapStatus::kUsed;
  }

  // Asks for a call when the next element is used. Returns true if used
  // elements are already waiting (then no call may come for them).
  bool EnableInterrupts() {
    if (event_idx_) {
      virtio::StoreRelaxed(used_event_, last_used_);
    } else {
      virtio::StoreRelaxed(&avail_->flags, uint16_t{0});
    }
    virtio::FullFence();
    return virtio::LoadAcquire(&used_->idx) != last_used_;
  }
  // Asks for no calls (a hint the device may ignore).
  void DisableInterrupts() {
    if (event_idx_) {
      // Far behind: the device's need_event check fails for ~2^15 uses.
      virtio::StoreRelaxed(used_event_,
                           static_cast<uint16_t>(last_used_ - 0x8000));
    } else {
      virtio::StoreRelaxed(&avail_->flags, virtio::spec::kAvailFlagNoInterrupt);
    }
  }

 private:
  virtio::spec::SplitDesc* desc_ = nullptr;
  virtio::spec::SplitAvailHeader* avail_ = nullptr;
  uint16_t* ring_ = nullptr;
  uint16_t* used_event_ = nullptr;
  virtio::spec::SplitUsedHeader* used_ = nullptr;
  virtio::spec::SplitUsedElem* used_ring_ = nullptr;
  uint16_t* avail_event_ = nullptr;
  uint16_t size_ = 0, mask_ = 0;
  bool event_idx_ = false;
  // Private copies: the device never sees or changes these.
  std::unique_ptr<uint16_t[]> next_;        // free list / chain links
  std::unique_ptr<uint16_t[]> chain_len_;   // per head, 0 = not outstanding
  std::unique_ptr<uint16_t[]> chain_last_;  // per head
  uint16_t free_head_ = 0, num_free_ = 0;
  uint16_t avail_idx_ = 0, published_ = 0;
  uint16_t last_used_ = 0, used_idx_cache_ = 0;
  const char* error_ = nullptr;
};

}  // namespace vhost_user

#endif  // VHOST_USER_FRONTEND_SPLIT_DRIVER_RING_H_
