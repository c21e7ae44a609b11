// vhost-user/inflight.h — inflight I/O tracking for split rings
// (INFLIGHT_SHMFD, GET/SET_INFLIGHT_FD), so that a back-end restarted after
// a crash resubmits exactly the requests that were in flight.
//
// The shared region is laid out as the vhost-user specification ("Inflight
// I/O tracking") and QEMU's libvhost-user have it: per queue, at
// q * InflightQueueRegionSize(queue_size),
//
//   u64 features; u16 version; u16 desc_num; u16 last_batch_head;
//   u16 used_idx; { u8 inflight; u8 padding[5]; u16 next; u64 counter; }
//   desc[desc_num];
//
// desc[head].inflight is 1 from the moment the device may take the chain
// until its used element is published; used_idx is the used index the
// region was last brought up to date with.
//
// How the device's pops are tracked without a hook in the ring code: the
// device does not read the front-end's avail ring but a shadow copy in
// back-end private memory (a region of the MemoryTable above anything a
// front-end maps). Before the device runs (Sync), new avail entries are
// marked inflight in the region and only then copied to the shadow ring and
// published there; after it runs (Reap), used elements the device published
// are cleared. A crash at any point leaves the region consistent: every
// entry the device could have taken is marked, and entries published to the
// used ring but not yet cleared are found by comparing used_idx with the
// ring's used index. On restart (Recover), the marked heads are put back in
// the shadow ring, oldest first, right at the used index, and the ring
// resumes there: each is processed again exactly once, then the front-end's
// later entries follow at the same positions as in its ring. The device's
// interrupt decisions read the shadow's copy of used_event / flags; Reap
// re-checks them against the front-end's ring and signals the call fd if
// needed (a spare interrupt is harmless, a lost one is not).
//
// Threads: one InflightSplit per queue, used by that queue's worker, or by
// the control thread while the worker is parked.
#ifndef VHOST_USER_INFLIGHT_H_
#define VHOST_USER_INFLIGHT_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "interrupt.h"

namespace vhost_user {

// GET_INFLIGHT_FD / SET_INFLIGHT_FD payload.
struct InflightInfo {
  uint64_t mmap_size;
  uint64_t mmap_offset;
  uint16_t num_queues;
  uint16_t queue_size;
};
static_assert(sizeof(InflightInfo) == 24);

// Bytes of the region per queue (QEMU's vu_inflight_queue_size()).
constexpr uint64_t InflightQueueRegionSize(uint16_t queue_size) {
  return (16ull * queue_size + 2 + 63) & ~uint64_t{63};
}
inline constexpr uint64_t kInflightHeaderSize = 16;

class InflightSplit {
 public:
  // `region`: this queue's part of the shared region, for `region_descs`
  // descriptors. `avail` / `used`: the front-end's rings (host pointers);
  // `shadow`: the shadow avail ring the device reads; all for a ring of
  // `size` entries.
  InflightSplit(uint8_t* region, uint16_t region_descs, uint16_t size,
                uint8_t* avail, uint8_t* used, uint8_t* shadow,
                bool event_idx, int call_fd);

  // Brings the region up to date with the used ring and fills the shadow
  // ring for a (re)start; returns the avail index to resume the device at.
  // A fresh region (version 0) is initialised and `base` (SET_VRING_BASE)
  // used. Sets *resubmitted to the number of heads put back. False if the
  // region is inconsistent with the ring (more in flight than fit).
  bool Recover(uint16_t base, uint32_t* resubmitted, uint16_t* next_avail);

  void set_call_fd(int fd) { call_fd_ = fd; }

  // Before the device processes the ring: marks and exposes new entries.
  void Sync();
  // After it ran (or completed requests): clears published completions and
  // interrupts the driver if its ring asks for it.
  void Reap();
  // True if the front-end published entries the device has not seen.
  bool More() const;

 private:
  uint16_t RealAvailIdx() const;
  uint16_t RealUsedIdx() const;
  uint8_t* Desc(uint16_t head) const { return region_ + kInflightHeaderSize + 16u * head; }
  uint16_t* hdr_u16(unsigned off) const {
    return reinterpret_cast<uint16_t*>(region_ + off);
  }

  uint8_t* region_;
  uint16_t region_descs_;
  uint16_t size_;
  uint8_t* avail_;
  uint8_t* used_;
  uint8_t* shadow_;
  bool event_idx_;
  int call_fd_;
  uint16_t exposed_ = 0;      // shadow avail idx
  uint16_t signalled_used_ = 0;  // used idx at the last interrupt check
  uint64_t counter_ = 0;
};

// --- Implementation ------------------------------------------------------------

namespace inflight_internal {

// Header field offsets.
inline constexpr unsigned kVersionOff = 8;
inline constexpr unsigned kDescNumOff = 10;
inline constexpr unsigned kLastBatchOff = 12;
inline constexpr unsigned kUsedIdxOff = 14;

inline uint16_t Load16(const void* p) {
  return __atomic_load_n(static_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);
}
inline void Store16(void* p, uint16_t v) {
  __atomic_store_n(static_cast<uint16_t*>(p), v, __ATOMIC_RELEASE);
}

inline bool NeedEvent(uint16_t event, uint16_t now, uint16_t old) {
  return static_cast<uint16_t>(now - event - 1) <
         static_cast<uint16_t>(now - old);
}

}  // namespace inflight_internal


inline InflightSplit::InflightSplit(uint8_t* region, uint16_t region_descs,
                             uint16_t size, uint8_t* avail, uint8_t* used,
                             uint8_t* shadow, bool event_idx, int call_fd)
    : region_(region),
      region_descs_(region_descs),
      size_(size),
      avail_(avail),
      used_(used),
      shadow_(shadow),
      event_idx_(event_idx),
      call_fd_(call_fd) {}

inline uint16_t InflightSplit::RealAvailIdx() const { return inflight_internal::Load16(avail_ + 2); }
inline uint16_t InflightSplit::RealUsedIdx() const { return inflight_internal::Load16(used_ + 2); }

inline bool InflightSplit::Recover(uint16_t base, uint32_t* resubmitted,
                            uint16_t* next_avail) {
  *resubmitted = 0;
  const uint16_t used = RealUsedIdx();
  signalled_used_ = used;
  uint8_t* const flags_and_event_src = avail_;
  auto publish_shadow = [&](uint16_t idx) {
    std::memcpy(shadow_, flags_and_event_src, 2);  // flags
    std::memcpy(shadow_ + 4 + 2u * size_, avail_ + 4 + 2u * size_, 2);
    inflight_internal::Store16(shadow_ + 2, idx);
    exposed_ = idx;
  };
  if (*hdr_u16(inflight_internal::kVersionOff) == 0) {
    std::memset(region_ + kInflightHeaderSize, 0, 16u * region_descs_);
    std::memset(region_, 0, 8);  // features
    *hdr_u16(inflight_internal::kDescNumOff) = region_descs_;
    *hdr_u16(inflight_internal::kLastBatchOff) = 0;
    inflight_internal::Store16(hdr_u16(inflight_internal::kUsedIdxOff), used);
    inflight_internal::Store16(hdr_u16(inflight_internal::kVersionOff), 1);
    publish_shadow(base);
    *next_avail = base;
    return true;
  }
  const uint16_t descs = std::min(*hdr_u16(inflight_internal::kDescNumOff), region_descs_);
  // Completions published after the region was last updated.
  Reap();
  inflight_internal::Store16(hdr_u16(inflight_internal::kUsedIdxOff), used);
  std::vector<std::pair<uint64_t, uint16_t>> heads;
  for (uint16_t h = 0; h < descs; ++h) {
    if (Desc(h)[0] == 1) {
      uint64_t counter;
      std::memcpy(&counter, Desc(h) + 8, 8);
      heads.emplace_back(counter, h);
      counter_ = std::max(counter_, counter);
    }
  }
  if (heads.size() > size_) return false;
  std::sort(heads.begin(), heads.end());
  for (size_t i = 0; i < heads.size(); ++i) {
    const auto pos = static_cast<uint16_t>(used + i);
    std::memcpy(shadow_ + 4 + 2u * (pos % size_), &heads[i].second, 2);
  }
  *resubmitted = static_cast<uint32_t>(heads.size());
  publish_shadow(static_cast<uint16_t>(used + heads.size()));
  *next_avail = used;
  return true;
}

inline void InflightSplit::Sync() {
  const uint16_t real = RealAvailIdx();
  const auto n = static_cast<uint16_t>(real - exposed_);
  if (n > size_) {
    // A driver bug: let the device see the bad index and fail the ring.
    inflight_internal::Store16(shadow_ + 2, real);
    exposed_ = real;
    return;
  }
  for (uint16_t i = 0; i < n; ++i) {
    const auto pos = static_cast<uint16_t>(exposed_ + i);
    uint16_t head;
    std::memcpy(&head, avail_ + 4 + 2u * (pos % size_), 2);
    if (head < region_descs_) {
      uint8_t* d = Desc(head);
      const uint64_t c = ++counter_;
      std::memcpy(d + 8, &c, 8);
      __atomic_store_n(d, uint8_t{1}, __ATOMIC_RELEASE);
    }
    std::memcpy(shadow_ + 4 + 2u * (pos % size_), &head, 2);
  }
  std::memcpy(shadow_, avail_, 2);
  std::memcpy(shadow_ + 4 + 2u * size_, avail_ + 4 + 2u * size_, 2);
  inflight_internal::Store16(shadow_ + 2, real);
  exposed_ = real;
}

inline void InflightSplit::Reap() {
  const uint16_t used = RealUsedIdx();
  uint16_t from = inflight_internal::Load16(hdr_u16(inflight_internal::kUsedIdxOff));
  if (static_cast<uint16_t>(used - from) > size_) from = used;  // corrupt
  for (uint16_t p = from; p != used; ++p) {
    uint32_t id;
    std::memcpy(&id, used_ + 4 + 8u * (p % size_), 4);
    if (id < region_descs_) {
      __atomic_store_n(Desc(static_cast<uint16_t>(id)), uint8_t{0},
                       __ATOMIC_RELEASE);
      *hdr_u16(inflight_internal::kLastBatchOff) = static_cast<uint16_t>(id);
    }
  }
  inflight_internal::Store16(hdr_u16(inflight_internal::kUsedIdxOff), used);
  if (used != signalled_used_) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    bool need;
    if (event_idx_) {
      need = inflight_internal::NeedEvent(inflight_internal::Load16(avail_ + 4 + 2u * size_), used, signalled_used_);
    } else {
      need = (inflight_internal::Load16(avail_) & 1) == 0;
    }
    signalled_used_ = used;
    if (need) SignalFd(call_fd_);
  }
}

inline bool InflightSplit::More() const { return RealAvailIdx() != exposed_; }

}  // namespace vhost_user

#endif  // VHOST_USER_INFLIGHT_H_
