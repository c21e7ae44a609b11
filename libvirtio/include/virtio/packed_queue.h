// virtio/packed_queue.h — the device side of a packed virtqueue (VIRTIO 1.2
// §2.8): one descriptor ring shared by driver and device, wrap counters, and
// two event suppression structures.
//
// PackedQueue has the same API as SplitQueue (see virtio/queue.h). Pop()
// consumes the chain starting at the device's avail position once that
// descriptor's AVAIL/USED bits say it is available in the current wrap
// round, follows NEXT through consecutive ring slots (or one indirect table),
// and validates everything it reads. Push() writes used descriptors in
// completion order; Publish() flips the flags of the first used descriptor of
// the batch last, with release ordering, so the driver never sees a partial
// batch, then consults the driver event suppression structure
// (ENABLE / DISABLE / DESC with EVENT_IDX).
//
// Example: identical to SplitQueue, with PackedQueue in its place.
#ifndef VIRTIO_PACKED_QUEUE_H_
#define VIRTIO_PACKED_QUEUE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/queue.h"
#include "virtio/ring_access.h"
#include "virtio/ring_error.h"
#include "virtio/ring_observer.h"
#include "virtio/spec.h"

namespace virtio {

// `Observer` (ring_observer.h) sees every pop, push and publish; the
// default, NoRingObserver, compiles the hooks away.
template <GuestMemory Mem, RingObserverOrNone Observer = NoRingObserver>
class PackedQueue {
 public:
  // Validates `config` (size 1..32768, alignment, every ring part inside one
  // guest memory region) and binds the queue to `mem`, which must outlive it.
  // `state` resumes at a known ring position (offsets < size); the default
  // is a fresh ring (offset 0, both wrap counters 1). `observer` (may be
  // null) must outlive the queue.
  static absl::StatusOr<PackedQueue> Create(const Mem& mem,
                                            const QueueConfig& config,
                                            const QueueState& state = {},
                                            Observer* observer = nullptr) {
    const uint32_t n = config.size;
    if (n == 0 || n > spec::kMaxQueueSize) {
      return absl::InvalidArgumentError(
          absl::StrFormat("packed queue size %u is not in 1..32768", n));
    }
    auto ring = internal::MapRingPart(mem, "descriptor ring", config.desc_addr,
                                      spec::PackedDescRingSize(n),
                                      spec::kPackedDescAlign);
    if (!ring.ok()) return ring.status();
    auto driver = internal::MapRingPart(
        mem, "driver event suppression", config.driver_addr,
        sizeof(spec::PackedEventSuppress), spec::kPackedEventAlign);
    if (!driver.ok()) return driver.status();
    auto device = internal::MapRingPart(
        mem, "device event suppression", config.device_addr,
        sizeof(spec::PackedEventSuppress), spec::kPackedEventAlign);
    if (!device.ok()) return device.status();
    if (state.next_avail >= n || state.next_used >= n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "queue state avail %u / used %u outside a ring of %u", state.next_avail,
          state.next_used, n));
    }
    const uint32_t in_flight =
        Distance(Linear(state.next_used, state.used_wrap, n),
                 Linear(state.next_avail, state.avail_wrap, n), n);
    if (in_flight > n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "queue state avail %u/%d is more than a ring ahead of used %u/%d",
          state.next_avail, state.avail_wrap, state.next_used,
          state.used_wrap));
    }
    return PackedQueue(mem, config, *ring, *driver, *device, state, in_flight,
                       observer);
  }

  // Makes Pop() return `chains` again, in that order, before any new chain.
  // Setup time only (it allocates), right after Create() and before the
  // first Pop(). Each chain's `descs` are the descriptors it occupied (one
  // per ring slot); together they must fit in the ring slots the creation
  // state counts as in flight. The descriptors are copied and validated
  // again, as if read from the ring, when Pop() walks them.
  absl::Status Resubmit(absl::Span<const ResubmitChain> chains) {
    uint64_t slots = 0;
    std::vector<SavedChain> saved;
    std::vector<spec::PackedDesc> descs;
    saved.reserve(chains.size());
    for (const ResubmitChain& c : chains) {
      if (c.descs.empty() || c.descs.size() > size_) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "resubmitted buffer %u has %u descriptors, not 1..%u", c.id,
            c.descs.size(), size_));
      }
      slots += c.descs.size();
      saved.push_back({c.id, static_cast<uint32_t>(descs.size()),
                       static_cast<uint16_t>(c.descs.size())});
      descs.insert(descs.end(), c.descs.begin(), c.descs.end());
    }
    if (slots > in_flight_slots_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "resubmitted chains occupy %u ring slots but only %u are in flight",
          slots, in_flight_slots_));
    }
    resubmit_ = std::move(saved);
    resubmit_descs_ = std::move(descs);
    resubmit_next_ = 0;
    resubmit_left_ = static_cast<uint32_t>(resubmit_.size());
    return absl::OkStatus();
  }

  // Pops the next available chain into `chain`. See PopStatus.
  PopStatus Pop(DescriptorChain& chain) {
    if (error_ != RingError::kNone) return PopStatus::kBroken;
    if (resubmit_left_ != 0) [[unlikely]] {
      return PopResubmitted(chain);
    }
    const uint16_t head_flags = LoadAcquire(&ring_[next_avail_].flags);
    if (!IsAvailable(head_flags, avail_wrap_)) return PopStatus::kEmpty;
    // The device has every slot in flight, so this slot cannot have been
    // made available again legitimately.
    if (in_flight_slots_ >= size_) {
      return Fail(RingError::kAvailIndexTooFarAhead);
    }
    // Most chains are one descriptor (a transmitted packet with its header,
    // an rx buffer): popped here without the walk, whose bookkeeping cost
    // as much as the rest of a transmit.
    if ((head_flags & (spec::kDescFlagNext | spec::kDescFlagIndirect)) == 0)
        [[likely]] {
      // The flags are the ones loaded with acquire above, not a second read.
      const auto d = ReadOnce<spec::PackedDesc>(&ring_[next_avail_]);
      chain.AssignSingle(*mem_, d.addr, d.len,
                         head_flags & spec::kDescFlagWrite);
      const uint16_t first = next_avail_;
      if (++next_avail_ == size_) {
        next_avail_ = 0;
        avail_wrap_ = !avail_wrap_;
      }
      ++in_flight_slots_;
      chain.set_token({d.id, 1});
      if constexpr (kObserved) {
        if (observer_ != nullptr) observer_->OnPop(chain, first, false);
      }
      return PopStatus::kChain;
    }
    chain.Reset();
    return PopWalk(chain, head_flags);
  }

  // A hint for a device about to pop more (software pipelining, no effect
  // on the ring's state): starts loading the descriptors kPrefetchFar slots
  // ahead, and the first 128 bytes of the buffer kPrefetchNear slots ahead
  // (for writing if `for_write`), so that its cache misses overlap the
  // current chain's work instead of following it. Only translated,
  // available descriptors are followed; a wrong guess costs a prefetch.
  void PrefetchAhead(bool for_write) {
    __builtin_prefetch(&ring_[Ahead(kPrefetchFar)]);
    const uint32_t near = uint32_t{next_avail_} + kPrefetchNear;
    const bool wrap = near >= size_ ? !avail_wrap_ : avail_wrap_;
    const auto d = ReadOnce<spec::PackedDesc>(&ring_[Ahead(kPrefetchNear)]);
    if (!IsAvailable(d.flags, wrap) || (d.flags & spec::kDescFlagIndirect)) {
      return;
    }
    const uint8_t* h = mem_->TranslateContiguous(d.addr, 0);
    if (h == nullptr) return;
    Prefetch(h, for_write);
    Prefetch(h + 64, for_write);
  }

  // Returns a popped chain to the driver with `len` bytes written. Used
  // descriptors are written in the order of Push() calls; none is visible to
  // the driver until Publish().
  //
  // Under IN_ORDER (QueueConfig::in_order), consecutive pushes with `len`
  // 0 (a transmit queue's buffers) become one used descriptor at the first
  // one's position carrying the last one's buffer ID, and the ring skips
  // the whole run (VIRTIO 1.2 §2.8, "In-order use of descriptors"): the
  // driver learns the run's extent from its own avail order. One
  // descriptor store per batch instead of one per buffer leaves the
  // driver's ring lines unowned by the device, as DPDK's vhost does for its
  // dequeue. A written length is never folded away.
  void Push(UsedToken token, uint32_t len) {
    if (token.ring_slots == 0 || token.ring_slots > in_flight_slots_) {
      Fail(RingError::kUsedOverflow);
      return;
    }
    in_flight_slots_ -= token.ring_slots;
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPush(token, len, next_used_);
    }
    if (in_order_ && len == 0) {
      if (!run_open_) {
        run_open_ = true;
        run_pos_ = next_used_;
        run_wrap_ = used_wrap_;
      }
      run_id_ = token.id;
    } else {
      CloseRun();
      WriteUsed(next_used_, used_wrap_, token.id, len);
    }
    uint32_t next = uint32_t{next_used_} + token.ring_slots;
    if (next >= size_) {
      next -= size_;
      used_wrap_ = !used_wrap_;
    }
    next_used_ = static_cast<uint16_t>(next);
  }

  // Publishes every descriptor pushed since the last call. Returns true if
  // the driver must be notified.
  bool Publish() {
    CloseRun();
    if (pending_ == 0) return false;
    pending_ = 0;
    StoreRelease(&ring_[batch_pos_].flags, batch_flags_);
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPublish(state());
    }
    FullFence();
    const uint16_t mode =
        LoadRelaxed(&driver_event_->flags) & spec::kRingEventFlagsMask;
    if (mode == spec::kRingEventFlagsDisable) return false;
    if (mode != spec::kRingEventFlagsDesc || !event_idx_) return true;
    // Notify if the driver's event position lies among the slots just used:
    // [batch start, next used) on the 2*size cycle of (offset, wrap) pairs.
    const uint16_t off_wrap = LoadRelaxed(&driver_event_->off_wrap);
    const uint16_t event_off = off_wrap & ~spec::kEventWrapBit;
    if (event_off >= size_) return true;  // nonsense from the driver: be safe
    const bool event_wrap = (off_wrap & spec::kEventWrapBit) != 0;
    const uint32_t old_lin = Linear(batch_pos_, batch_wrap_, size_);
    const uint32_t new_lin = Linear(next_used_, used_wrap_, size_);
    const uint32_t ev_lin = Linear(event_off, event_wrap, size_);
    return Distance(old_lin, ev_lin, size_) < Distance(old_lin, new_lin, size_);
  }

  // Asks the driver to notify on new buffers. Returns true if buffers became
  // available in the meantime. In polled mode (SetPolled) nothing is
  // written: the return value alone tells.
  bool EnableNotification() {
    wanted_mode_ = NotifyMode::kOn;
    if (!polled_) {
      if (notify_mode_ != NotifyMode::kOn) {
        StoreRelaxed(&device_event_->flags, spec::kRingEventFlagsEnable);
        notify_mode_ = NotifyMode::kOn;
      }
      FullFence();
    }
    return IsAvailable(LoadAcquire(&ring_[next_avail_].flags), avail_wrap_);
  }

  // Tells the driver that notifications are not needed.
  void DisableNotification() {
    wanted_mode_ = NotifyMode::kOff;
    if (!polled_) SuppressNotifications();
  }

  // Polled mode, as SplitQueue::SetPolled: notifications stay suppressed
  // while some thread polls the queue anyway. Leaving it returns true if the
  // device was waiting for a notification and buffers arrived meanwhile
  // (the caller must process the queue then).
  bool SetPolled(bool polled) {
    if (polled == polled_) return false;
    polled_ = polled;
    if (polled) {
      SuppressNotifications();
      return false;
    }
    // A ring never told either way had notifications on before polling.
    return wanted_mode_ != NotifyMode::kOff && EnableNotification();
  }
  bool polled() const { return polled_; }

  RingError error() const { return error_; }
  QueueState state() const {
    return {next_avail_, next_used_, avail_wrap_, used_wrap_};
  }
  uint32_t size() const { return size_; }
  // Ring slots popped and not yet pushed.
  uint32_t in_flight() const { return in_flight_slots_; }

 private:
  PackedQueue(const Mem& mem, const QueueConfig& config, uint8_t* ring,
              uint8_t* driver_event, uint8_t* device_event,
              const QueueState& state, uint32_t in_flight, Observer* observer)
      : mem_(&mem),
        ring_(reinterpret_cast<spec::PackedDesc*>(ring)),
        driver_event_(
            reinterpret_cast<spec::PackedEventSuppress*>(driver_event)),
        device_event_(
            reinterpret_cast<spec::PackedEventSuppress*>(device_event)),
        size_(config.size),
        event_idx_(config.event_idx),
        indirect_(config.indirect),
        in_order_(config.in_order),
        next_avail_(state.next_avail),
        avail_wrap_(state.avail_wrap),
        next_used_(state.next_used),
        used_wrap_(state.used_wrap),
        in_flight_slots_(in_flight) {
    if constexpr (kObserved) {
      observer_ = observer;
    } else {
      (void)observer;
    }
  }

  static constexpr bool kObserved = !std::is_same_v<Observer, NoRingObserver>;

  // A chain given to Resubmit(): its descriptors in resubmit_descs_.
  struct SavedChain {
    uint16_t id;
    uint32_t first;
    uint16_t count;
  };

  // Pop() of a chain of several descriptors or an indirect one: walks it
  // from the head (available, `head_flags`, chain already reset).
  [[gnu::noinline]] PopStatus PopWalk(DescriptorChain& chain,
                                      uint16_t head_flags) {
    uint16_t pos = next_avail_;
    bool wrap = avail_wrap_;
    uint16_t flags = head_flags;
    uint16_t slots = 0;
    uint16_t id = 0;
    for (;;) {
      // Read the whole descriptor once; the head's flags are the ones Pop()
      // loaded with acquire, not a second read.
      auto d = ReadOnce<spec::PackedDesc>(&ring_[pos]);
      if (slots != 0) flags = d.flags;
      ++slots;
      if (++pos == size_) {
        pos = 0;
        wrap = !wrap;
      }
      if (flags & spec::kDescFlagIndirect) {
        if (!indirect_) return Fail(RingError::kIndirectNotNegotiated);
        if (flags & spec::kDescFlagNext) {
          return Fail(RingError::kIndirectWithNext);
        }
        if (slots != 1) return Fail(RingError::kIndirectNotAtHead);
        const RingError e = WalkIndirect(d.addr, d.len, chain);
        if (e != RingError::kNone) return Fail(e);
        id = d.id;
        break;
      }
      chain.Append(*mem_, d.addr, d.len, flags & spec::kDescFlagWrite);
      if ((flags & spec::kDescFlagNext) == 0) {
        id = d.id;  // the buffer ID lives in the last descriptor (§2.8.6)
        break;
      }
      // A chain cannot use more slots than the device has not yet taken.
      if (slots >= size_ - in_flight_slots_) {
        return Fail(RingError::kChainTooLong);
      }
    }
    const uint16_t first = next_avail_;
    next_avail_ = pos;
    avail_wrap_ = wrap;
    in_flight_slots_ += slots;
    chain.set_token({id, slots});
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPop(chain, first, false);
    }
    return PopStatus::kChain;
  }

  // Pop() of the next chain given to Resubmit(), walked from the saved
  // descriptors with the same rules as a chain read from the ring. Its ring
  // slots are already counted in flight.
  PopStatus PopResubmitted(DescriptorChain& chain) {
    --resubmit_left_;
    const SavedChain& c = resubmit_[resubmit_next_++];
    chain.Reset();
    for (uint16_t i = 0; i < c.count; ++i) {
      const spec::PackedDesc& d = resubmit_descs_[c.first + i];
      const bool last = i + 1 == c.count;
      if (d.flags & spec::kDescFlagIndirect) {
        if (!indirect_) return Fail(RingError::kIndirectNotNegotiated);
        if (d.flags & spec::kDescFlagNext) {
          return Fail(RingError::kIndirectWithNext);
        }
        if (i != 0 || !last) return Fail(RingError::kIndirectNotAtHead);
        const RingError e = WalkIndirect(d.addr, d.len, chain);
        if (e != RingError::kNone) return Fail(e);
        break;
      }
      // NEXT must be set on every descriptor but the last, exactly as the
      // saved slot count says.
      if (((d.flags & spec::kDescFlagNext) == 0) != last) {
        return Fail(RingError::kChainTooLong);
      }
      chain.Append(*mem_, d.addr, d.len, d.flags & spec::kDescFlagWrite);
    }
    chain.set_token({c.id, c.count});
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPop(chain, 0, true);
    }
    return PopStatus::kChain;
  }

  // Writes one used descriptor at `pos`. The first of a batch keeps its
  // flags back for Publish(), which makes the whole batch visible at once.
  void WriteUsed(uint16_t pos, bool wrap, uint16_t id, uint32_t len) {
    spec::PackedDesc* d = &ring_[pos];
    StoreRelaxed(&d->id, id);
    StoreRelaxed(&d->len, len);
    uint16_t flags =
        wrap ? (spec::kDescFlagAvail | spec::kDescFlagUsed) : uint16_t{0};
    if (len != 0) flags |= spec::kDescFlagWrite;
    if (pending_ == 0) {
      batch_pos_ = pos;
      batch_wrap_ = wrap;
      batch_flags_ = flags;
    } else {
      StoreRelaxed(&d->flags, flags);
    }
    ++pending_;
  }

  // Writes the used descriptor of an open IN_ORDER run of zero-length pushes.
  void CloseRun() {
    if (!run_open_) return;
    run_open_ = false;
    WriteUsed(run_pos_, run_wrap_, run_id_, 0);
  }

  static constexpr uint32_t kPrefetchNear = 8;
  static constexpr uint32_t kPrefetchFar = 16;
  uint16_t Ahead(uint32_t n) const {
    uint32_t at = uint32_t{next_avail_} + n;
    while (at >= size_) at -= size_;
    return static_cast<uint16_t>(at);
  }

  static bool IsAvailable(uint16_t flags, bool wrap) {
    const bool avail = (flags & spec::kDescFlagAvail) != 0;
    const bool used = (flags & spec::kDescFlagUsed) != 0;
    return avail == wrap && used != wrap;
  }

  // Maps (offset, wrap) to a position on the cycle 0..2*size-1.
  static uint32_t Linear(uint16_t offset, bool wrap, uint32_t size) {
    return offset + (wrap ? 0 : size);
  }
  // Steps from `from` forward to `to` on the 2*size cycle.
  static uint32_t Distance(uint32_t from, uint32_t to, uint32_t size) {
    return to >= from ? to - from : to + 2 * size - from;
  }

  PopStatus Fail(RingError e) {
    error_ = e;
    return PopStatus::kBroken;
  }

  void SuppressNotifications() {
    // Skip the store when nothing changes: the driver reads this line on
    // every kick decision.
    if (notify_mode_ != NotifyMode::kOff) {
      StoreRelaxed(&device_event_->flags, spec::kRingEventFlagsDisable);
      notify_mode_ = NotifyMode::kOff;
    }
  }

  RingError WalkIndirect(uint64_t addr, uint32_t len, DescriptorChain& chain) {
    if (len == 0 || len % sizeof(spec::PackedDesc) != 0 ||
        len / sizeof(spec::PackedDesc) > spec::kMaxQueueSize) {
      return RingError::kIndirectTableBadLength;
    }
    const uint8_t* table = mem_->TranslateContiguous(addr, len);
    if (table == nullptr) return RingError::kIndirectTableOutOfRange;
    const uint32_t entries = len / sizeof(spec::PackedDesc);
    // Indirect entries are consecutive; only WRITE is meaningful in them
    // (§2.8.7), except INDIRECT, which would be a nested table.
    for (uint32_t i = 0; i < entries; ++i) {
      const auto d = ReadOnce<spec::PackedDesc>(table + uint64_t{i} * 16);
      if (d.flags & spec::kDescFlagIndirect) return RingError::kNestedIndirect;
      chain.Append(*mem_, d.addr, d.len, d.flags & spec::kDescFlagWrite);
    }
    return RingError::kNone;
  }

  const Mem* mem_;
  spec::PackedDesc* ring_;
  const spec::PackedEventSuppress* driver_event_;
  spec::PackedEventSuppress* device_event_;
  uint32_t size_;
  bool event_idx_;
  bool indirect_;
  bool in_order_;
  uint16_t next_avail_;  // ring offset of the next descriptor to consume
  bool avail_wrap_;
  uint16_t next_used_;  // ring offset of the next used descriptor to write
  bool used_wrap_;
  uint32_t in_flight_slots_;
  // The batch being pushed: the first descriptor's flags are stored last.
  uint32_t pending_ = 0;
  uint16_t batch_pos_ = 0;
  bool batch_wrap_ = true;
  uint16_t batch_flags_ = 0;
  // An IN_ORDER run of zero-length pushes not written yet (see Push()).
  bool run_open_ = false;
  bool run_wrap_ = true;
  uint16_t run_pos_ = 0;
  uint16_t run_id_ = 0;
  // What the device event suppression flags say now. Unknown at first (a
  // resumed ring may hold a previous backend's value): the first call writes.
  enum class NotifyMode : uint8_t { kUnknown, kOn, kOff };
  NotifyMode notify_mode_ = NotifyMode::kUnknown;
  // What the device last asked for (differs from notify_mode_ while polled).
  NotifyMode wanted_mode_ = NotifyMode::kUnknown;
  bool polled_ = false;
  RingError error_ = RingError::kNone;
  // Chains from Resubmit() that Pop() has not returned yet.
  uint32_t resubmit_left_ = 0;
  uint32_t resubmit_next_ = 0;
  std::vector<SavedChain> resubmit_;
  std::vector<spec::PackedDesc> resubmit_descs_;
  [[no_unique_address]] std::conditional_t<kObserved, Observer*, NoRingObserver>
      observer_;
};

}  // namespace virtio

#endif  // VIRTIO_PACKED_QUEUE_H_
