// vhost_user/frontend/packed_driver_ring.h — the driver's half of a packed
// virtqueue (VIRTIO 1.2 §2.8) in memory shared with a back-end.
//
// Add() writes a chain into the next free slots (buffer ID in every
// descriptor, the head's flags last with release ordering, so the chain is
// visible to the device at once); Publish() only decides whether to notify,
// from the device's event suppression structure. Reap() reads the used
// descriptor at the next used position; an ID that is not outstanding
// breaks the ring. Buffer IDs come from a private free list; each ID's
// chain length is remembered privately to step over its slots.
// Single-threaded: one thread per ring at a time.
#ifndef VHOST_USER_FRONTEND_PACKED_DRIVER_RING_H_
#define VHOST_USER_FRONTEND_PACKED_DRIVER_RING_H_

#include <cstdint>
#include <memory>

#include "vhost_user/frontend/driver_ring.h"
#include "virtio/ring_access.h"
#include "virtio/spec.h"

namespace vhost_user {

// The driver's half of one packed ring (see the top of this file).
class PackedDriverRing {
 public:
  // Bytes of shared memory the ring needs (16-byte aligned start).
  static uint64_t MemorySize(uint16_t size);

  // Lays the ring out at `mem` (zeroed, MemorySize(size) bytes). `size` is
  // 1..32768.
  void Init(uint8_t* mem, uint16_t size, bool event_idx);

  uint16_t size() const { return size_; }
  uint16_t num_free() const { return num_free_; }
  uint64_t desc_addr() const { return reinterpret_cast<uint64_t>(desc_); }
  // Driver event suppression (SET_VRING_ADDR's avail address).
  uint64_t driver_event_addr() const {
    return reinterpret_cast<uint64_t>(driver_event_);
  }
  // Device event suppression (SET_VRING_ADDR's used address).
  uint64_t device_event_addr() const {
    return reinterpret_cast<uint64_t>(device_event_);
  }
  const char* error() const { return error_; }

  // The ID the next Add() will return.
  uint16_t peek_id() const { return free_ids_[free_id_count_ - 1]; }
  // Adds a chain of `n` descriptors (1 <= n <= num_free()); returns its ID.
  uint16_t Add(const RingBuf* bufs, uint16_t n) {
    const uint16_t id = free_ids_[--free_id_count_];
    const uint16_t head = next_avail_;
    const uint16_t head_flags = AvailFlags(avail_wrap_);
    uint16_t pos = next_avail_;
    bool wrap = avail_wrap_;
    for (uint16_t k = 0; k < n; ++k) {
      const uint16_t more = k + 1 < n ? virtio::spec::kDescFlagNext : 0;
      virtio::spec::PackedDesc* d = &desc_[pos];
      d->addr = bufs[k].addr;
      d->len = bufs[k].len;
      d->id = id;
      if (k > 0) {
        virtio::StoreRelaxed(
            &d->flags,
            static_cast<uint16_t>(bufs[k].flags | more | AvailFlags(wrap)));
      }
      if (++pos == size_) {
        pos = 0;
        wrap = !wrap;
      }
    }
    next_avail_ = pos;
    avail_wrap_ = wrap;
    num_free_ = static_cast<uint16_t>(num_free_ - n);
    added_ += n;
    chain_len_[id] = n;
    const uint16_t more = n > 1 ? virtio::spec::kDescFlagNext : 0;
    virtio::StoreRelease(
        &desc_[head].flags,
        static_cast<uint16_t>(bufs[0].flags | more | head_flags));
    return id;
  }

  // Returns true if the device asked to be notified of what was added
  // since the last call.
  bool Publish() {
    if (added_ == 0) return false;
    const uint32_t added = added_;
    added_ = 0;
    virtio::FullFence();  // descriptor stores before the event load
    const auto ev =
        virtio::ReadOnce<virtio::spec::PackedEventSuppress>(device_event_);
    const uint16_t mode = ev.flags & virtio::spec::kRingEventFlagsMask;
    if (mode != virtio::spec::kRingEventFlagsDesc) {
      return mode != virtio::spec::kRingEventFlagsDisable;
    }
    if (added >= size_) return true;
    // vring_need_event() over positions counted across wraps (Linux's
    // virtqueue_kick_prepare_packed).
    const uint16_t now = next_avail_;
    const auto old = static_cast<uint16_t>(now - added);
    auto event =
        static_cast<uint16_t>(ev.off_wrap & ~virtio::spec::kEventWrapBit);
    const bool event_wrap = (ev.off_wrap & virtio::spec::kEventWrapBit) != 0;
    if (event_wrap != avail_wrap_) event = static_cast<uint16_t>(event - size_);
    return virtio::spec::NeedEvent(event, now, old);
  }

  // Takes the next used descriptor.
  ReapStatus Reap(uint16_t* id, uint32_t* len) {
    if (error_ != nullptr) return ReapStatus::kBroken;
    virtio::spec::PackedDesc* d = &desc_[next_used_];
    const uint16_t flags = virtio::LoadAcquire(&d->flags);
    const bool avail = (flags & virtio::spec::kDescFlagAvail) != 0;
    const bool used = (flags & virtio::spec::kDescFlagUsed) != 0;
    if (avail != used || used != used_wrap_) return ReapStatus::kEmpty;
    if (num_free_ == size_) {
      error_ = "used descriptor while nothing is outstanding";
      return ReapStatus::kBroken;
    }
    const uint16_t i = virtio::LoadRelaxed(&d->id);
    if (i >= size_ || chain_len_[i] == 0) {
      error_ = "used descriptor with an ID that is not outstanding";
      return ReapStatus::kBroken;
    }
    *len = virtio::LoadRelaxed(&d->len);
    *id = i;
    const uint16_t n = chain_len_[i];
    chain_len_[i] = 0;
    free_ids_[free_id_count_++] = i;
    num_free_ = static_cast<uint16_t>(num_free_ + n);
    uint32_t pos = next_used_ + uint32_t{n};
    if (pos >= size_) {
      pos -= size_;
      used_wrap_ = !used_wrap_;
    }
    next_used_ = static_cast<uint16_t>(pos);
    return ReapStatus::kUsed;
  }

  // Asks for a call when the next descriptor is used. Returns true if one
  // is already waiting.
  bool EnableInterrupts() {
    virtio::spec::PackedEventSuppress ev;
    if (event_idx_) {
      ev.off_wrap = static_cast<uint16_t>(
          next_used_ | (used_wrap_ ? virtio::spec::kEventWrapBit : 0));
      ev.flags = virtio::spec::kRingEventFlagsDesc;
      virtio::StoreRelaxed(&driver_event_->off_wrap, ev.off_wrap);
    } else {
      ev.flags = virtio::spec::kRingEventFlagsEnable;
    }
    virtio::StoreRelease(&driver_event_->flags, ev.flags);
    virtio::FullFence();
    const uint16_t flags = virtio::LoadAcquire(&desc_[next_used_].flags);
    const bool a = (flags & virtio::spec::kDescFlagAvail) != 0;
    const bool u = (flags & virtio::spec::kDescFlagUsed) != 0;
    return a == u && u == used_wrap_;
  }
  void DisableInterrupts() {
    virtio::StoreRelaxed(&driver_event_->flags,
                         virtio::spec::kRingEventFlagsDisable);
  }

 private:
  uint16_t AvailFlags(bool wrap) const {
    return wrap ? virtio::spec::kDescFlagAvail : virtio::spec::kDescFlagUsed;
  }

  virtio::spec::PackedDesc* desc_ = nullptr;
  virtio::spec::PackedEventSuppress* driver_event_ = nullptr;
  virtio::spec::PackedEventSuppress* device_event_ = nullptr;
  uint16_t size_ = 0;
  bool event_idx_ = false;
  std::unique_ptr<uint16_t[]> free_ids_;
  std::unique_ptr<uint16_t[]> chain_len_;  // per ID, 0 = not outstanding
  uint16_t free_id_count_ = 0;
  uint16_t num_free_ = 0;
  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  uint32_t added_ = 0;
  uint16_t next_used_ = 0;
  bool used_wrap_ = true;
  const char* error_ = nullptr;
};

}  // namespace vhost_user

#endif  // VHOST_USER_FRONTEND_PACKED_DRIVER_RING_H_
