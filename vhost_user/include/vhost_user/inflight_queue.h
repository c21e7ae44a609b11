// vhost_user/inflight_queue.h — inflight tracking of one queue through the
// ring observer hooks (virtio/ring_observer.h), so that a back-end
// restarted after a crash resubmits exactly the requests it had in flight
// and resumes the ring where it stopped. Region layout: inflight.h.
//
// Split rings. OnPop marks desc[head] in flight (counter first, then the
// flag); OnPush remembers the head; OnPublish, once used->idx is stored,
// clears the flags of every element of the batch, then stores used_idx.
// Recovery (Start on a region that has been used):
//   * elements published after the region was last updated are the used
//     ring entries between region.used_idx and the ring's used->idx (a
//     batch may hold many): their heads are cleared. They cannot have been
//     popped again: no pop happens between a publish and its OnPublish.
//   * every head still marked was popped and never published: resubmitted,
//     oldest counter first. Pops happen in avail order, so every avail
//     entry below used + marked was taken and the one at that index, if a
//     crash hit between its pop and its mark, was not: the ring resumes
//     there (next_avail = used + marked), as libvhost-user does, whatever
//     SET_VRING_BASE said.
//
// Packed rings. A used element overwrites ring slots in completion order,
// so a chain in flight can lose its descriptors in the ring: OnPop saves
// them in the region's pool, fills the buffer ID's entry (slots, pool link,
// counter), marks it and only then commits the avail position together with
// the pop counter in one 64-bit store. Recovery only trusts entries whose
// counter is committed; an uncommitted pop is read again from the ring,
// whose slots from the committed avail position on cannot have been
// overwritten yet (used elements go to slots before it). OnPublish clears
// the batch's entries (keeping their slot counts), then stores used_pos.
// Recovery walks the ring from used_pos over descriptors marked used with
// the used wrap counter (the published rest of the last batch), stepping
// by each buffer's saved slot count (under IN_ORDER a used descriptor may
// stand for a run: the newest pops, in counter order, up to its buffer),
// clears them, and resumes with used and avail at the region's positions:
// a packed ring's SET_VRING_BASE is stale after a crash (QEMU cannot read it
// back from the dead back-end).
//
// Everything read from the region is validated: the front-end can write to
// it. A region that does not belong to this ring (fresh, other layout or
// size) is initialised from SET_VRING_BASE.
//
// Threads: OnPop/OnPush/OnPublish run on the queue's worker; Start() on the
// control thread while the queue is stopped. Start() allocates; the hooks
// never do.
#ifndef VHOST_USER_INFLIGHT_QUEUE_H_
#define VHOST_USER_INFLIGHT_QUEUE_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "vhost_user/inflight.h"
#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace vhost_user {

// Where a queue's rings are in the back-end's address space, as far as
// tracking needs them.
struct InflightRing {
  bool packed = false;
  uint16_t size = 0;
  // Split: the used ring. Packed: the descriptor ring.
  uint8_t* ring = nullptr;
  // VIRTIO_F_IN_ORDER negotiated: a packed ring's used descriptor may stand
  // for a run of buffers (PackedQueue::Push), which recovery must step
  // over as a whole.
  bool in_order = false;
};

// What Start() found in the region.
struct InflightRecovery {
  // Where the queue resumes.
  virtio::QueueState state;
  // Chains to hand to the queue's Resubmit(); packed descriptors point into
  // the InflightQueue, valid until its next Start().
  std::vector<virtio::ResubmitChain> resubmit;
  // The region was (re)initialised rather than recovered.
  bool fresh = false;
};

// One queue's inflight tracking (see the top of this file): a ring
// observer part that records pops and publishes in the shared region and
// recovers the ring's position and lost requests from it.
class InflightQueue {
 public:
  // Binds this queue's part of the region (`bytes` long) to `ring` and
  // recovers it; `base` is the position SET_VRING_BASE gave, used for a
  // fresh region. Fails if the region is inconsistent with the ring.
  absl::Status Start(uint8_t* region, uint64_t bytes, const InflightRing& ring,
                     const virtio::QueueState& base, InflightRecovery* out);

  // Chains popped that could not be tracked (a buffer ID out of range or
  // already in flight: a driver bug), since Start().
  uint64_t untracked() const { return untracked_; }

  // --- RingObserver ---
  void OnPop(const virtio::DescriptorChain& chain, uint16_t position,
             bool resubmitted) {
    if (resubmitted) return;  // still marked from before the restart
    if (packed_) {
      PackedPop(chain.token(), position);
    } else {
      SplitPop(chain.token().id);
    }
  }
  void OnPush(virtio::UsedToken token, uint32_t, uint16_t) {
    if (pending_n_ < pending_.size()) pending_[pending_n_++] = token.id;
  }
  void OnPublish(const virtio::QueueState& state) {
    if (packed_) {
      PackedPublish(state);
    } else {
      SplitPublish(state);
    }
  }

 private:
  template <typename T>
  T* At(uint64_t off) const {
    return reinterpret_cast<T*>(region_ + off);
  }
  template <typename T>
  static void Put(T* p, T v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
  }
  template <typename T>
  static T Get(const T* p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
  }

  // Split.
  uint8_t* SplitDesc(uint16_t head) const {
    return region_ + inflight_layout::kSplitHeaderSize +
           uint64_t{inflight_layout::kSplitDescSize} * head;
  }
  void SplitPop(uint16_t head);
  void SplitPublish(const virtio::QueueState& state);
  absl::Status SplitStart(const virtio::QueueState& base,
                          InflightRecovery* out);

  // Packed.
  struct Entry {
    uint8_t inflight;
    uint8_t pad;
    uint16_t slots;
    uint16_t first;
    uint16_t pad2;
    uint64_t counter;
  };
  static_assert(sizeof(Entry) == inflight_layout::kEntrySize);
  Entry* PackedEntry(uint16_t id) const {
    return At<Entry>(inflight_layout::kPackedHeaderSize +
                     uint64_t{inflight_layout::kEntrySize} * id);
  }
  virtio::spec::PackedDesc* Pool(uint16_t i) const {
    return At<virtio::spec::PackedDesc>(
        inflight_layout::kPackedHeaderSize +
        uint64_t{inflight_layout::kEntrySize} * size_ +
        uint64_t{inflight_layout::kPoolDescSize} * i);
  }
  uint16_t* Next(uint16_t i) const {
    return At<uint16_t>(
        inflight_layout::kPackedHeaderSize +
        uint64_t{inflight_layout::kEntrySize + inflight_layout::kPoolDescSize} *
            size_ +
        size_t{2} * i);
  }
  static uint16_t Encode(uint16_t off, bool wrap) {
    return static_cast<uint16_t>(off | (wrap ? 0x8000u : 0u));
  }
  void Advance(uint16_t* off, bool* wrap, uint32_t by) const {
    uint32_t n = *off + by;
    if (n >= size_) {
      n -= size_;
      *wrap = !*wrap;
    }
    *off = static_cast<uint16_t>(n);
  }
  void CommitAvail() {
    Put(At<uint64_t>(inflight_layout::kAvailCommitOff),
        (counter_ << 16) | Encode(avail_off_, avail_wrap_));
  }
  void PackedPop(virtio::UsedToken token, uint16_t first);
  void PackedPublish(const virtio::QueueState& state);
  absl::Status PackedStart(const virtio::QueueState& base,
                           InflightRecovery* out);

  uint8_t* region_ = nullptr;
  bool packed_ = false;
  bool in_order_ = false;
  uint16_t size_ = 0;
  uint8_t* ring_ = nullptr;
  uint64_t counter_ = 0;
  uint64_t untracked_ = 0;
  // Buffer IDs / heads pushed since the last publish.
  std::vector<uint16_t> pending_;
  size_t pending_n_ = 0;
  // Packed: the avail position as last committed, and the free pool slots.
  uint16_t avail_off_ = 0;
  bool avail_wrap_ = true;
  std::vector<uint16_t> free_;
  size_t free_n_ = 0;
  // Packed: descriptors handed out in InflightRecovery::resubmit.
  std::vector<virtio::spec::PackedDesc> saved_;
};

// --- Implementation
// ------------------------------------------------------------

inline absl::Status InflightQueue::Start(uint8_t* region, uint64_t bytes,
                                         const InflightRing& ring,
                                         const virtio::QueueState& base,
                                         InflightRecovery* out) {
  if (ring.size == 0 || ring.ring == nullptr ||
      bytes < InflightQueueRegionSize(ring.size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "inflight region of %u bytes too small for a ring of %u", bytes,
        ring.size));
  }
  region_ = region;
  packed_ = ring.packed;
  in_order_ = ring.in_order;
  size_ = ring.size;
  ring_ = ring.ring;
  counter_ = 0;
  untracked_ = 0;
  pending_.assign(size_, 0);
  pending_n_ = 0;
  saved_.clear();
  *out = InflightRecovery{};
  return packed_ ? PackedStart(base, out) : SplitStart(base, out);
}

// --- split

inline void InflightQueue::SplitPop(uint16_t head) {
  if (head >= size_) return;  // the queue refuses such a head anyway
  uint8_t* d = SplitDesc(head);
  Put(reinterpret_cast<uint64_t*>(d + 8), ++counter_);
  Put(d, uint8_t{1});
}

inline void InflightQueue::SplitPublish(const virtio::QueueState& state) {
  for (size_t i = 0; i < pending_n_; ++i) {
    if (pending_[i] < size_) Put(SplitDesc(pending_[i]), uint8_t{0});
  }
  if (pending_n_ > 0) {
    Put(At<uint16_t>(inflight_layout::kLastBatchOff), pending_[pending_n_ - 1]);
  }
  pending_n_ = 0;
  Put(At<uint16_t>(inflight_layout::kUsedIdxOff), state.next_used);
}

inline absl::Status InflightQueue::SplitStart(const virtio::QueueState& base,
                                              InflightRecovery* out) {
  namespace L = inflight_layout;
  const uint16_t used = Get(reinterpret_cast<const uint16_t*>(ring_ + 2));
  if (Get(At<uint16_t>(L::kVersionOff)) != L::kSplitVersion ||
      Get(At<uint16_t>(L::kDescNumOff)) != size_) {
    std::memset(region_, 0, L::SplitSize(size_));
    Put(At<uint16_t>(L::kDescNumOff), size_);
    Put(At<uint16_t>(L::kUsedIdxOff), used);
    Put(At<uint16_t>(L::kVersionOff), L::kSplitVersion);
    out->fresh = true;
    out->state = {base.next_avail, used, true, true};
    return absl::OkStatus();
  }
  // Completions published after the region was last brought up to date.
  const uint16_t from = Get(At<uint16_t>(L::kUsedIdxOff));
  if (static_cast<uint16_t>(used - from) > size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "inflight region used_idx %u is more than a ring behind used->idx %u",
        from, used));
  }
  for (uint16_t p = from; p != used; ++p) {
    uint32_t id;
    std::memcpy(&id, ring_ + 4 + size_t{8} * (p % size_), 4);
    if (id < size_) Put(SplitDesc(static_cast<uint16_t>(id)), uint8_t{0});
  }
  Put(At<uint16_t>(L::kUsedIdxOff), used);
  std::vector<std::pair<uint64_t, uint16_t>> heads;
  for (uint16_t h = 0; h < size_; ++h) {
    if (Get(SplitDesc(h)) != 0) {
      uint64_t c;
      std::memcpy(&c, SplitDesc(h) + 8, 8);
      heads.emplace_back(c, h);
      counter_ = std::max(counter_, c);
    }
  }
  std::sort(heads.begin(), heads.end());
  for (const auto& [c, h] : heads) out->resubmit.push_back({h, {}});
  out->state = {static_cast<uint16_t>(used + heads.size()), used, true, true};
  return absl::OkStatus();
}

// --- packed

inline void InflightQueue::PackedPop(virtio::UsedToken token, uint16_t first) {
  const uint16_t id = token.id;
  const uint16_t slots = token.ring_slots;
  Entry* e = id < size_ ? PackedEntry(id) : nullptr;
  if (e == nullptr || Get(&e->inflight) != 0 || slots == 0 || slots > free_n_) {
    ++untracked_;
  } else {
    // Save the descriptors (the queue validated them; the copy is validated
    // again if it is ever resubmitted).
    uint16_t head = 0, prev = 0;
    uint16_t pos = first;
    for (uint16_t i = 0; i < slots; ++i) {
      const uint16_t p = free_[--free_n_];
      std::memcpy(Pool(p), ring_ + size_t{16} * pos, 16);
      if (i == 0) {
        head = p;
      } else {
        Put(Next(prev), p);
      }
      prev = p;
      if (++pos == size_) pos = 0;
    }
    e->slots = slots;
    e->first = head;
    Put(&e->counter, ++counter_);
    Put(&e->inflight, uint8_t{1});
  }
  Advance(&avail_off_, &avail_wrap_, slots);
  CommitAvail();
}

inline void InflightQueue::PackedPublish(const virtio::QueueState& state) {
  for (size_t i = 0; i < pending_n_; ++i) {
    const uint16_t id = pending_[i];
    if (id >= size_) continue;
    Entry* e = PackedEntry(id);
    if (Get(&e->inflight) == 0) continue;
    Put(&e->inflight, uint8_t{0});
    // Give its pool slots back (our own links, but in shared memory: bound
    // the walk and the indices).
    uint16_t p = e->first;
    for (uint16_t k = 0; k < e->slots && free_n_ < free_.size(); ++k) {
      if (p >= size_) break;
      free_[free_n_++] = p;
      p = *Next(p);
    }
  }
  pending_n_ = 0;
  Put(At<uint16_t>(inflight_layout::kUsedPosOff),
      Encode(state.next_used, state.used_wrap));
}

inline absl::Status InflightQueue::PackedStart(const virtio::QueueState& base,
                                               InflightRecovery* out) {
  namespace L = inflight_layout;
  namespace spec = virtio::spec;
  free_.assign(size_, 0);
  if (Get(At<uint16_t>(L::kVersionOff)) != L::kPackedVersion ||
      Get(At<uint16_t>(L::kDescNumOff)) != size_) {
    std::memset(region_, 0, L::PackedSize(size_));
    for (uint16_t i = 0; i < size_; ++i)
      free_[i] = static_cast<uint16_t>(size_ - 1 - i);
    free_n_ = size_;
    avail_off_ = base.next_avail;
    avail_wrap_ = base.avail_wrap;
    Put(At<uint16_t>(L::kDescNumOff), size_);
    Put(At<uint16_t>(L::kUsedPosOff), Encode(base.next_used, base.used_wrap));
    CommitAvail();
    Put(At<uint16_t>(L::kVersionOff), L::kPackedVersion);
    out->fresh = true;
    out->state = base;
    return absl::OkStatus();
  }
  const uint64_t commit = Get(At<uint64_t>(L::kAvailCommitOff));
  const uint64_t committed = commit >> 16;
  const uint16_t a = static_cast<uint16_t>(commit);
  const uint16_t u = Get(At<uint16_t>(L::kUsedPosOff));
  uint16_t a_off = a & 0x7fff, u_off = u & 0x7fff;
  bool a_wrap = (a & 0x8000) != 0, u_wrap = (u & 0x8000) != 0;
  if (a_off >= size_ || u_off >= size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "inflight region positions avail 0x%x used 0x%x outside a ring of %u",
        a, u, size_));
  }
  auto linear = [&](uint16_t off, bool wrap) -> uint32_t {
    return off + (wrap ? 0u : size_);
  };
  auto distance = [&](uint32_t from, uint32_t to) -> uint32_t {
    return to >= from ? to - from : to + 2u * size_ - from;
  };
  uint32_t span = distance(linear(u_off, u_wrap), linear(a_off, a_wrap));
  if (span > size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "inflight region avail 0x%x is more than a ring ahead of used 0x%x", a,
        u));
  }
  // Under IN_ORDER a used descriptor stands for every buffer from the one
  // at its position up to its own, in pop order. Those are the newest
  // pops: consecutive counters up to the committed one whose slots fill the
  // span between the used and avail positions exactly (their entries are
  // intact: none was popped again, though a publish may have cleared their
  // marks before the crash kept it from committing used_pos).
  std::vector<std::pair<uint64_t, uint16_t>> pop_order;
  if (in_order_) {
    for (uint16_t id = 0; id < size_; ++id) {
      const uint64_t c = Get(&PackedEntry(id)->counter);
      if (c != 0 && c <= committed) pop_order.emplace_back(c, id);
    }
    std::sort(pop_order.begin(), pop_order.end());
    size_t first = pop_order.size();
    uint32_t covered = 0;
    while (covered < span) {
      const uint64_t want = committed - (pop_order.size() - first);
      const uint16_t slots =
          first == 0 ? 0 : PackedEntry(pop_order[first - 1].second)->slots;
      if (first == 0 || pop_order[first - 1].first != want || slots == 0 ||
          slots > span - covered) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "inflight region does not account for the %u ring slots "
            "between used 0x%x and avail 0x%x (in order)",
            span, u, a));
      }
      --first;
      covered += slots;
    }
    pop_order.erase(pop_order.begin(),
                    pop_order.begin() + static_cast<ptrdiff_t>(first));
  }
  size_t run_next = 0;  // first entry of pop_order not yet found used
  // The published rest of a batch whose entries may not all be cleared.
  while (span > 0) {
    spec::PackedDesc d;
    std::memcpy(&d, ring_ + size_t{16} * u_off, 16);
    const bool av = (d.flags & spec::kDescFlagAvail) != 0;
    const bool us = (d.flags & spec::kDescFlagUsed) != 0;
    if (av != u_wrap || us != u_wrap) break;
    if (in_order_) {
      bool found = false;
      while (!found && run_next < pop_order.size()) {
        const uint16_t id = pop_order[run_next++].second;
        Entry* e = PackedEntry(id);
        const uint16_t slots = e->slots;  // read once: the front-end can write
        if (slots == 0 || slots > span) break;
        Put(&e->inflight, uint8_t{0});
        Advance(&u_off, &u_wrap, slots);
        span -= slots;
        found = id == d.id;
      }
      if (!found) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "used element for buffer %u does not end a run of buffers in "
            "flight (in order)",
            d.id));
      }
      continue;
    }
    Entry* e = d.id < size_ ? PackedEntry(d.id) : nullptr;
    const uint16_t slots = e != nullptr ? e->slots : 0;
    if (slots == 0 || slots > span) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "used element for buffer %u at %u does not match the inflight "
          "region",
          d.id, u_off));
    }
    Put(&e->inflight, uint8_t{0});
    Advance(&u_off, &u_wrap, slots);
    span -= slots;
  }
  Put(At<uint16_t>(L::kUsedPosOff), Encode(u_off, u_wrap));
  // Entries still in flight: committed ones are resubmitted, the rest (a pop
  // cut short before its commit) forgotten, to be read from the ring again.
  std::vector<bool> used_pool(size_);
  std::vector<std::pair<uint64_t, uint16_t>> live;
  uint32_t slots_total = 0;
  for (uint16_t id = 0; id < size_; ++id) {
    Entry* e = PackedEntry(id);
    if (Get(&e->inflight) == 0) continue;
    const uint64_t c = Get(&e->counter);
    if (c == 0 || c > committed) {
      Put(&e->inflight, uint8_t{0});
      continue;
    }
    const uint16_t slots = e->slots;
    if (slots == 0 || slots > size_ - slots_total) {
      return absl::InvalidArgumentError(
          absl::StrFormat("inflight entry %u claims %u ring slots", id, slots));
    }
    slots_total += slots;
    uint16_t p = e->first;
    for (uint16_t k = 0; k < slots; ++k) {
      if (p >= size_ || used_pool[p]) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "inflight entry %u has a bad descriptor link %u", id, p));
      }
      used_pool[p] = true;
      if (k + 1 < slots) p = *Next(p);
    }
    live.emplace_back(c, id);
  }
  if (slots_total > span) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "inflight entries occupy %u ring slots, but only %u are between the "
        "used and avail positions",
        slots_total, span));
  }
  std::sort(live.begin(), live.end());
  saved_.reserve(slots_total);
  std::vector<std::pair<uint16_t, uint32_t>> where;  // id, first saved index
  for (const auto& [c, id] : live) {
    const Entry* e = PackedEntry(id);
    where.emplace_back(id, static_cast<uint32_t>(saved_.size()));
    uint16_t p = e->first;
    for (uint16_t k = 0; k < e->slots; ++k) {
      spec::PackedDesc d;
      std::memcpy(&d, Pool(p), 16);
      saved_.push_back(d);
      if (k + 1 < e->slots) p = *Next(p);
    }
  }
  for (size_t i = 0; i < where.size(); ++i) {
    const uint32_t begin = where[i].second;
    const uint32_t end = i + 1 < where.size()
                             ? where[i + 1].second
                             : static_cast<uint32_t>(saved_.size());
    out->resubmit.push_back(
        {where[i].first, absl::Span<const spec::PackedDesc>(
                             saved_.data() + begin, end - begin)});
  }
  free_n_ = 0;
  for (uint16_t i = size_; i-- > 0;) {
    if (!used_pool[i]) free_[free_n_++] = i;
  }
  counter_ = committed;
  avail_off_ = a_off;
  avail_wrap_ = a_wrap;
  out->state = {a_off, u_off, a_wrap, u_wrap};
  return absl::OkStatus();
}

}  // namespace vhost_user

#endif  // VHOST_USER_INFLIGHT_QUEUE_H_
