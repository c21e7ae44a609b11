// virtio/split_queue.h — the device side of a split virtqueue (VIRTIO 1.2
// §2.7): descriptor table, available ring, used ring.
//
// SplitQueue pops available descriptor chains, validating every index, flag,
// address and length it reads from the guest, and pushes used elements in
// batches: Push() writes used entries, Publish() makes the batch visible with
// a single release store of used->idx and decides, per EVENT_IDX
// (used_event) or avail->flags, whether the driver wants an interrupt.
//
// Each ring field is read exactly once (virtio/ring_access.h); the available
// index is re-read only when the device has consumed everything it saw last
// time, so a batch of N chains costs one acquire load.
//
// A SplitQueue is owned by one thread at a time; different queues of a
// device can run on different threads with no shared state but the
// (immutable) guest memory map.
//
// Example:
//   virtio::QueueConfig cfg{.size = 256, .desc_addr = d, .driver_addr = a,
//                           .device_addr = u, .event_idx = true};
//   auto q = virtio::SplitQueue<virtio::GuestMemoryMap>::Create(mem, cfg);
//   if (!q.ok()) return q.status();
//   virtio::DescriptorChain chain;
//   while (q->Pop(chain) == virtio::PopStatus::kChain) q->Push(chain.token(), 0);
//   if (q->Publish()) InterruptGuest();
#ifndef VIRTIO_SPLIT_QUEUE_H_
#define VIRTIO_SPLIT_QUEUE_H_

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
class SplitQueue {
 public:
  // Validates `config` (size a power of two in 1..32768, alignment, every
  // ring part inside one guest memory region) and binds the queue to `mem`,
  // which must outlive it. `state` resumes a queue at a known position; the
  // number of chains in flight it implies (next_avail - next_used) must not
  // exceed the queue size. `observer` (may be null) must outlive the queue.
  static absl::StatusOr<SplitQueue> Create(const Mem& mem,
                                           const QueueConfig& config,
                                           const QueueState& state = {},
                                           Observer* observer = nullptr) {
    const uint32_t n = config.size;
    if (n == 0 || n > spec::kMaxQueueSize || (n & (n - 1)) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "split queue size %u is not a power of two in 1..32768", n));
    }
    auto desc = internal::MapRingPart(mem, "descriptor table", config.desc_addr,
                                      spec::SplitDescTableSize(n),
                                      spec::kSplitDescAlign);
    if (!desc.ok()) return desc.status();
    auto avail = internal::MapRingPart(mem, "available ring", config.driver_addr,
                                       spec::SplitAvailRingSize(n),
                                       spec::kSplitAvailAlign);
    if (!avail.ok()) return avail.status();
    auto used = internal::MapRingPart(mem, "used ring", config.device_addr,
                                      spec::SplitUsedRingSize(n),
                                      spec::kSplitUsedAlign);
    if (!used.ok()) return used.status();
    const uint16_t in_flight =
        static_cast<uint16_t>(state.next_avail - state.next_used);
    if (in_flight > n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "queue state avail %u / used %u implies %u chains in flight, more "
          "than the queue size %u",
          state.next_avail, state.next_used, in_flight, n));
    }
    return SplitQueue(mem, config, *desc, *avail, *used, state, in_flight,
                      observer);
  }

  // Makes Pop() return the chains headed by `chains[i].id` again, in that
  // order, before any new chain. Setup time only (it allocates), right after
  // Create() and before the first Pop(): the chains must be among those the
  // creation state counts as in flight, so there can be at most
  // in_flight() of them, each head < size() and no head twice.
  absl::Status Resubmit(absl::Span<const ResubmitChain> chains) {
    if (chains.size() > in_flight_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%u chains to resubmit but only %u in flight", chains.size(),
          in_flight_));
    }
    std::vector<bool> seen(size_);
    std::vector<uint16_t> heads;
    heads.reserve(chains.size());
    for (const ResubmitChain& c : chains) {
      if (c.id >= size_ || seen[c.id]) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "resubmitted head %u is out of range or repeated", c.id));
      }
      seen[c.id] = true;
      heads.push_back(c.id);
    }
    resubmit_ = std::move(heads);
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
    if (avail_seen_ == next_avail_) {
      avail_seen_ = LoadAcquire(&avail_->idx);
      if (static_cast<uint16_t>(avail_seen_ - next_avail_) > size_) {
        return Fail(RingError::kAvailIndexTooFarAhead);
      }
      if (avail_seen_ == next_avail_) return PopStatus::kEmpty;
    }
    // A driver cannot have more chains outstanding than the ring holds; one
    // that re-posts heads still in flight is malformed.
    if (in_flight_ >= size_) return Fail(RingError::kAvailIndexTooFarAhead);
    const uint16_t position = next_avail_;
    const uint16_t head = LoadRelaxed(&avail_ring_[position & mask_]);
    if (head >= size_) return Fail(RingError::kDescriptorIndexOutOfRange);
    ++next_avail_;
    ++in_flight_;
    chain.Reset();
    chain.set_token({head, 1});
    const RingError e = WalkChain(head, chain);
    if (e != RingError::kNone) return Fail(e);
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPop(chain, position, false);
    }
    return PopStatus::kChain;
  }

  // A hint for a device about to pop more (software pipelining, no effect
  // on the ring's state): starts loading the descriptor kPrefetchFar chains
  // ahead, and the first 128 bytes of the buffer kPrefetchNear chains ahead
  // (for writing if `for_write`), so that their cache misses overlap the
  // current chain's work. Only chains already seen available are followed,
  // through validated indices and translated addresses.
  void PrefetchAhead(bool for_write) {
    const uint16_t ready = static_cast<uint16_t>(avail_seen_ - next_avail_);
    if (ready > kPrefetchFar) {
      const uint16_t far = LoadRelaxed(
          &avail_ring_[static_cast<uint16_t>(next_avail_ + kPrefetchFar) &
                       mask_]);
      if (far < size_) __builtin_prefetch(desc_ + uint64_t{far} * 16);
    }
    if (ready <= kPrefetchNear) return;
    const uint16_t near = LoadRelaxed(
        &avail_ring_[static_cast<uint16_t>(next_avail_ + kPrefetchNear) &
                     mask_]);
    if (near >= size_) return;
    const auto d = ReadOnce<spec::SplitDesc>(desc_ + uint64_t{near} * 16);
    if (d.flags & spec::kDescFlagIndirect) return;
    const uint8_t* h = mem_->TranslateContiguous(d.addr, 0);
    if (h == nullptr) return;
    Prefetch(h, for_write);
    Prefetch(h + 64, for_write);
  }

  // Returns a popped chain to the driver with `len` bytes written. Not
  // visible to the driver until Publish().
  void Push(UsedToken token, uint32_t len) {
    if (in_flight_ == 0) {
      // The device pushed something it never popped: refuse rather than
      // hand the driver an element it would free twice.
      Fail(RingError::kUsedOverflow);
      return;
    }
    --in_flight_;
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPush(token, len, next_used_);
    }
    spec::SplitUsedElem* e = &used_ring_[next_used_ & mask_];
    StoreRelaxed(&e->id, static_cast<uint32_t>(token.id));
    StoreRelaxed(&e->len, len);
    ++next_used_;
  }

  // Publishes every element pushed since the last call. Returns true if the
  // driver must be notified (the caller then interrupts the guest).
  bool Publish() {
    if (next_used_ == used_published_) return false;
    const uint16_t old_idx = used_published_;
    used_published_ = next_used_;
    StoreRelease(&used_->idx, next_used_);
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPublish(state());
    }
    // The driver may be updating used_event / avail->flags concurrently; the
    // fence orders our used->idx store before the read of its choice.
    FullFence();
    if (event_idx_) {
      return spec::NeedEvent(LoadRelaxed(used_event_), next_used_, old_idx);
    }
    return (LoadRelaxed(&avail_->flags) & spec::kAvailFlagNoInterrupt) == 0;
  }

  // Asks the driver to notify on new buffers. Returns true if buffers became
  // available in the meantime (the caller should Pop() again, or it may
  // never be notified of them). In polled mode (SetPolled) nothing is
  // written: the return value alone tells.
  bool EnableNotification() {
    wanted_mode_ = NotifyMode::kOn;
    if (polled_) return LoadAcquire(&avail_->idx) != next_avail_;
    if (event_idx_) {
      StoreRelaxed(avail_event_, next_avail_);
    } else if (notify_mode_ != NotifyMode::kOn) {
      StoreRelaxed(&used_->flags, uint16_t{0});
    }
    notify_mode_ = NotifyMode::kOn;
    FullFence();
    return LoadAcquire(&avail_->idx) != next_avail_;
  }

  // Tells the driver that notifications are not needed (a hint; with
  // EVENT_IDX the driver stops on its own once it passes avail_event).
  void DisableNotification() {
    wanted_mode_ = NotifyMode::kOff;
    if (!polled_) SuppressNotifications();
  }

  // Polled mode, for a queue some thread polls anyway (busy polling): a
  // notification would only cost the driver a system call or an exit, so
  // they stay suppressed whatever the device asks, and the driver's cache
  // line holding the flag is not written back and forth on every empty
  // poll. Leaving it restores what the device last asked for and returns
  // true if it was waiting for a notification and buffers arrived
  // meanwhile: the caller must process the queue then, as no notification
  // will come for them.
  bool SetPolled(bool polled) {
    if (polled == polled_) return false;
    polled_ = polled;
    if (polled) {
      // With EVENT_IDX the driver kicks when its index passes avail_event:
      // one behind ours puts that 64 Ki buffers away.
      if (event_idx_) {
        StoreRelaxed(avail_event_, static_cast<uint16_t>(next_avail_ - 1));
      }
      SuppressNotifications();
      return false;
    }
    // A ring never told either way had notifications on before polling.
    return wanted_mode_ != NotifyMode::kOff && EnableNotification();
  }
  bool polled() const { return polled_; }

  RingError error() const { return error_; }
  QueueState state() const { return {next_avail_, next_used_, true, true}; }
  uint32_t size() const { return size_; }
  // Chains popped and not yet pushed.
  uint32_t in_flight() const { return in_flight_; }

 private:
  SplitQueue(const Mem& mem, const QueueConfig& config, uint8_t* desc,
             uint8_t* avail, uint8_t* used, const QueueState& state,
             uint16_t in_flight, Observer* observer)
      : mem_(&mem),
        desc_(desc),
        avail_(reinterpret_cast<spec::SplitAvailHeader*>(avail)),
        avail_ring_(reinterpret_cast<uint16_t*>(avail + 4)),
        used_event_(reinterpret_cast<uint16_t*>(
            avail + spec::SplitUsedEventOffset(config.size))),
        used_(reinterpret_cast<spec::SplitUsedHeader*>(used)),
        used_ring_(reinterpret_cast<spec::SplitUsedElem*>(used + 4)),
        avail_event_(reinterpret_cast<uint16_t*>(
            used + spec::SplitAvailEventOffset(config.size))),
        size_(config.size),
        mask_(static_cast<uint16_t>(config.size - 1)),
        event_idx_(config.event_idx),
        indirect_(config.indirect),
        next_avail_(state.next_avail),
        avail_seen_(state.next_avail),
        next_used_(state.next_used),
        used_published_(state.next_used),
        in_flight_(in_flight) {
    if constexpr (kObserved) {
      observer_ = observer;
    } else {
      (void)observer;
    }
  }

  static constexpr bool kObserved = !std::is_same_v<Observer, NoRingObserver>;
  static constexpr uint16_t kPrefetchNear = 8;
  static constexpr uint16_t kPrefetchFar = 16;

  PopStatus Fail(RingError e) {
    error_ = e;
    return PopStatus::kBroken;
  }

  void SuppressNotifications() {
    // Skip the store when nothing changes: it would dirty a cache line the
    // driver reads on every kick decision.
    if (!event_idx_ && notify_mode_ != NotifyMode::kOff) {
      StoreRelaxed(&used_->flags, spec::kUsedFlagNoNotify);
    }
    notify_mode_ = NotifyMode::kOff;
  }

  // Pop() of the next chain given to Resubmit(): already counted in flight,
  // not read from the available ring.
  PopStatus PopResubmitted(DescriptorChain& chain) {
    --resubmit_left_;
    const uint16_t head = resubmit_[resubmit_next_++];
    chain.Reset();
    chain.set_token({head, 1});
    const RingError e = WalkChain(head, chain);
    if (e != RingError::kNone) return Fail(e);
    if constexpr (kObserved) {
      if (observer_ != nullptr) observer_->OnPop(chain, 0, true);
    }
    return PopStatus::kChain;
  }

  // Walks the chain starting at `head` (< size_), appending its buffers.
  // Returns a ring error, or kNone (chain errors are recorded in `chain`).
  RingError WalkChain(uint16_t head, DescriptorChain& chain) {
    uint16_t idx = head;
    for (uint32_t count = 1;; ++count) {
      if (count > size_) return RingError::kChainTooLong;
      const auto d = ReadOnce<spec::SplitDesc>(desc_ + uint64_t{idx} * 16);
      if (d.flags & spec::kDescFlagIndirect) {
        if (!indirect_) return RingError::kIndirectNotNegotiated;
        if (d.flags & spec::kDescFlagNext) return RingError::kIndirectWithNext;
        if (count != 1) return RingError::kIndirectNotAtHead;
        return WalkIndirect(d.addr, d.len, chain);
      }
      chain.Append(*mem_, d.addr, d.len, d.flags & spec::kDescFlagWrite);
      if ((d.flags & spec::kDescFlagNext) == 0) return RingError::kNone;
      if (d.next >= size_) return RingError::kDescriptorIndexOutOfRange;
      idx = d.next;
    }
  }

  RingError WalkIndirect(uint64_t addr, uint32_t len, DescriptorChain& chain) {
    if (len == 0 || len % sizeof(spec::SplitDesc) != 0 ||
        len / sizeof(spec::SplitDesc) > spec::kMaxQueueSize) {
      return RingError::kIndirectTableBadLength;
    }
    const uint8_t* table = mem_->TranslateContiguous(addr, len);
    if (table == nullptr) return RingError::kIndirectTableOutOfRange;
    const uint32_t entries = len / sizeof(spec::SplitDesc);
    uint32_t idx = 0;
    for (uint32_t count = 1;; ++count) {
      if (count > entries) return RingError::kChainTooLong;
      const auto d = ReadOnce<spec::SplitDesc>(table + uint64_t{idx} * 16);
      if (d.flags & spec::kDescFlagIndirect) return RingError::kNestedIndirect;
      chain.Append(*mem_, d.addr, d.len, d.flags & spec::kDescFlagWrite);
      if ((d.flags & spec::kDescFlagNext) == 0) return RingError::kNone;
      if (d.next >= entries) return RingError::kDescriptorIndexOutOfRange;
      idx = d.next;
    }
  }

  const Mem* mem_;
  const uint8_t* desc_;
  spec::SplitAvailHeader* avail_;
  const uint16_t* avail_ring_;
  const uint16_t* used_event_;
  spec::SplitUsedHeader* used_;
  spec::SplitUsedElem* used_ring_;
  uint16_t* avail_event_;
  uint32_t size_;
  uint16_t mask_;
  bool event_idx_;
  bool indirect_;
  uint16_t next_avail_;      // next avail ring slot to consume
  uint16_t avail_seen_;      // avail->idx as last read
  uint16_t next_used_;       // next used ring slot to fill
  uint16_t used_published_;  // used->idx as last stored
  uint32_t in_flight_;
  // What used->flags says now. Unknown at first (a resumed ring may hold a
  // previous backend's value), so the first call always writes.
  enum class NotifyMode : uint8_t { kUnknown, kOn, kOff };
  NotifyMode notify_mode_ = NotifyMode::kUnknown;
  // What the device last asked for (differs from notify_mode_ while polled).
  NotifyMode wanted_mode_ = NotifyMode::kUnknown;
  bool polled_ = false;
  RingError error_ = RingError::kNone;
  // Chains from Resubmit() that Pop() has not returned yet: a counter on the
  // hot path, the heads out of the way.
  uint32_t resubmit_left_ = 0;
  uint32_t resubmit_next_ = 0;
  std::vector<uint16_t> resubmit_;
  [[no_unique_address]] std::conditional_t<kObserved, Observer*, NoRingObserver>
      observer_;
};

}  // namespace virtio

#endif  // VIRTIO_SPLIT_QUEUE_H_
