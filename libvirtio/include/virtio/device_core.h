// virtio/device_core.h — the transport-independent virtio device model.
//
// DeviceCore holds what every virtio device has (VIRTIO 1.2 §2–§3): the
// device status state machine, feature negotiation, per-queue setup on
// either ring layout, the configuration generation counter, NEEDS_RESET and
// reset. Transports (virtio-mmio, virtio-pci, vhost-user) drive it through
// its public methods; a concrete device (blk, rng, ...) derives from it
// (CRTP, no virtual calls) and supplies (checked by the concept
// DeviceImplementation, device_implementation.h, when the device is built):
//
//   static constexpr uint32_t kDeviceId;
//   uint32_t ConfigSize() const;
//   void ReadConfigBytes(uint32_t offset, void* data, uint32_t len);
//   void WriteConfigBytes(uint32_t offset, const void* data, uint32_t len);
//   bool AcceptFeatures(uint64_t negotiated);   // device-specific checks
//   void OnDriverOk();
//   void OnReset();              // finish or cancel every in-flight request
//   template <VirtQueue Q> void ProcessQueue(uint16_t index, Q& queue);
//   void OnQueueDisabled(uint16_t index);   // optional, see DisableQueue()
//
// The driver's view, as the spec orders it: reset (status 0), ACKNOWLEDGE,
// DRIVER, read device features, write driver features, FEATURES_OK (the
// device refuses it by leaving the bit clear when the features are not
// acceptable), set up and enable queues, DRIVER_OK. DeviceCore enforces that
// order: a queue enabled before FEATURES_OK, DRIVER_OK without FEATURES_OK,
// or a queue whose ring cannot be mapped puts the device in NEEDS_RESET with
// a configuration-change interrupt and a log line, as does a malformed ring
// found while processing.
//
// Threads: transports call the setup methods from one thread; Notify(q) may
// be called for different queues from different threads once DRIVER_OK is
// set. Reset() must not race with Notify(): the glue stops queue threads
// first.
//
// Example (a transport's status register write):
//   void WriteStatus(uint32_t v) { device_.SetStatus(static_cast<uint8_t>(v));
//   }
#ifndef VIRTIO_DEVICE_CORE_H_
#define VIRTIO_DEVICE_CORE_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "virtio/device_implementation.h"
#include "virtio/hypervisor.h"
#include "virtio/log.h"
#include "virtio/packed_queue.h"
#include "virtio/queue.h"
#include "virtio/ring_observer.h"
#include "virtio/spec.h"
#include "virtio/split_queue.h"

namespace virtio {

// Ring features every device offers unless told not to.
struct RingFeatureOptions {
  bool packed = true;
  bool indirect = true;
  bool event_idx = true;
  // Offer VIRTIO_F_ACCESS_PLATFORM: buffer addresses go through the
  // platform's translation (e.g. Xen grant references), not raw GPAs.
  bool access_platform = false;
  // Offer VIRTIO_F_IN_ORDER: the device promises to use buffers in the
  // order they were made available, which lets drivers (DPDK's virtio PMD)
  // keep descriptors in ring order and take their faster in-order paths.
  // Only for devices that keep that promise: NetDevice does; BlkDevice with
  // an asynchronous backend completes out of order and must not offer it.
  bool in_order = false;
};

// Features derived from RingFeatureOptions, always including VERSION_1.
constexpr uint64_t RingFeatures(const RingFeatureOptions& o) {
  return spec::Bit(spec::kFeatureVersion1) |
         (o.packed ? spec::Bit(spec::kFeatureRingPacked) : 0) |
         (o.indirect ? spec::Bit(spec::kFeatureIndirectDesc) : 0) |
         (o.event_idx ? spec::Bit(spec::kFeatureEventIdx) : 0) |
         (o.access_platform ? spec::Bit(spec::kFeatureAccessPlatform) : 0) |
         (o.in_order ? spec::Bit(spec::kFeatureInOrder) : 0);
}

template <HypervisorTraits T, typename Derived>
class DeviceCore {
 public:
  using Memory = typename T::Memory;
  using Interrupt = typename T::Interrupt;
  // The traits' optional RingObserver (ring_observer.h), or NoRingObserver.
  using Observer = RingObserverOf<T>;
  using Split = SplitQueue<Memory, Observer>;
  using Packed = PackedQueue<Memory, Observer>;

  DeviceCore(const DeviceCore&) = delete;
  DeviceCore& operator=(const DeviceCore&) = delete;

  // --- Identity -------------------------------------------------------------
  uint32_t device_id() const { return Derived::kDeviceId; }
  const std::string& name() const { return name_; }
  uint16_t num_queues() const { return static_cast<uint16_t>(queues_.size()); }
  uint32_t queue_max_size(uint16_t q) const {
    return q < queues_.size() ? queues_[q].max_size : 0;
  }

  // --- Features
  // ---------------------------------------------------------------
  uint64_t device_features() const { return device_features_; }
  uint64_t driver_features() const { return driver_features_; }
  // Stores the driver's feature choice. Ignored (returns false) once
  // FEATURES_OK is set, as the spec requires.
  bool SetDriverFeatures(uint64_t features) {
    if (status() & spec::kStatusFeaturesOk) {
      GuestError("driver wrote features after FEATURES_OK; ignored");
      return false;
    }
    driver_features_ = features;
    return true;
  }
  bool Negotiated(unsigned bit) const {
    return (status() & spec::kStatusFeaturesOk) &&
           (driver_features_ & spec::Bit(bit));
  }

  // --- Status
  // -------------------------------------------------------------------
  uint8_t status() const { return status_.load(std::memory_order_acquire); }

  void SetStatus(uint8_t value) {
    if (value == 0) {
      Reset();
      return;
    }
    const uint8_t old = status();
    // NEEDS_RESET is the device's to set; the driver cannot clear it either.
    value = static_cast<uint8_t>((value & ~spec::kStatusDeviceNeedsReset) |
                                 (old & spec::kStatusDeviceNeedsReset));
    if ((old & ~value) != 0) {
      GuestError(absl::StrFormat(
          "driver cleared status bits 0x%x without a reset; ignored",
          old & ~value));
      return;
    }
    const uint8_t added = value & ~old;
    if (added & spec::kStatusFeaturesOk) {
      if (!FeaturesAcceptable()) value &= ~spec::kStatusFeaturesOk;
    }
    status_.store(value, std::memory_order_release);
    if (added & spec::kStatusDriverOk) {
      if (!(value & spec::kStatusFeaturesOk)) {
        SetNeedsReset("DRIVER_OK without FEATURES_OK");
        return;
      }
      derived().OnDriverOk();
      // Buffers added (and kicked) before DRIVER_OK were ignored: look now.
      const auto n = static_cast<uint16_t>(queues_.size());
      for (uint16_t q = 0; q < n; ++q) Notify(q);
    }
  }

  // --- Queues
  // ------------------------------------------------------------------- The
  // pending configuration of queue `q`, for a transport to fill in (size,
  // addresses). nullptr if `q` is out of range or already enabled: an enabled
  // queue's configuration is read-only.
  QueueConfig* queue_config(uint16_t q) {
    if (q >= queues_.size() || queues_[q].enabled) return nullptr;
    return &queues_[q].config;
  }
  const QueueConfig* queue_config_view(uint16_t q) const {
    return q < queues_.size() ? &queues_[q].config : nullptr;
  }
  bool queue_enabled(uint16_t q) const {
    return q < queues_.size() && queues_[q].enabled;
  }

  // Validates queue `q`'s configuration against guest memory and creates its
  // ring on the negotiated layout. On failure the device enters NEEDS_RESET.
  bool EnableQueue(uint16_t q) { return EnableQueue(q, QueueState{}); }

  // As EnableQueue(q), resuming the ring at `state` instead of at its start
  // (vhost-user SET_VRING_BASE, a restarted backend). A state the ring
  // rejects (more chains in flight than its size, a packed offset outside
  // the ring) puts the device in NEEDS_RESET like a bad ring address.
  bool EnableQueue(uint16_t q, const QueueState& state) {
    return EnableQueue(q, state,
                       q < queues_.size() ? queues_[q].observer : nullptr, {});
  }

  // The observer EnableQueue(q) and EnableQueue(q, state) attach to queue
  // `q`'s ring from now on (null: none), for glues whose transport enables
  // the queues (virtio-mmio, virtio-pci) but which still need the ring's
  // hooks (glue/xen releases grant mappings in them). Must outlive every
  // ring it is attached to. Ignored for a nonexistent queue.
  void SetQueueObserver(uint16_t q, Observer* observer) {
    if (q < queues_.size()) queues_[q].observer = observer;
  }

  // As EnableQueue(q, state), with `observer` (may be null; must outlive
  // the queue) attached to the ring, and `resubmit` handed to its
  // Resubmit(): chains a previous incarnation of the device had in flight,
  // which Notify() processes again before anything new. Invalid resubmit
  // entries put the device in NEEDS_RESET.
  bool EnableQueue(uint16_t q, const QueueState& state, Observer* observer,
                   absl::Span<const ResubmitChain> resubmit) {
    if (q >= queues_.size()) {
      GuestError(absl::StrFormat("enable of nonexistent queue %u", q));
      return false;
    }
    QueueSlot& slot = queues_[q];
    if (slot.enabled) return true;
    if (!(status() & spec::kStatusFeaturesOk)) {
      SetNeedsReset(absl::StrFormat("queue %u enabled before FEATURES_OK", q));
      return false;
    }
    if (slot.config.size == 0 || slot.config.size > slot.max_size) {
      SetNeedsReset(absl::StrFormat("queue %u size %u not in 1..%u", q,
                                    slot.config.size, slot.max_size));
      return false;
    }
    slot.config.event_idx = Negotiated(spec::kFeatureEventIdx);
    slot.config.indirect = Negotiated(spec::kFeatureIndirectDesc);
    slot.config.in_order = Negotiated(spec::kFeatureInOrder);
    absl::Status status;
    if (Negotiated(spec::kFeatureRingPacked)) {
      auto ring = Packed::Create(*memory_, slot.config, state, observer);
      if (ring.ok() && !resubmit.empty()) status = ring->Resubmit(resubmit);
      if (!ring.ok()) status = ring.status();
      if (status.ok()) slot.ring.template emplace<Packed>(*std::move(ring));
    } else {
      auto ring = Split::Create(*memory_, slot.config, state, observer);
      if (ring.ok() && !resubmit.empty()) status = ring->Resubmit(resubmit);
      if (!ring.ok()) status = ring.status();
      if (status.ok()) slot.ring.template emplace<Split>(*std::move(ring));
    }
    if (!status.ok()) {
      SetNeedsReset(absl::StrFormat("queue %u: %s", q, status.message()));
      return false;
    }
    if (slot.polled) {
      std::visit(
          [](auto& ring) {
            using R = std::decay_t<decltype(ring)>;
            if constexpr (!std::is_same_v<R, std::monostate>) {
              ring.SetPolled(true);
            }
          },
          slot.ring);
    }
    slot.enabled = true;
    return true;
  }

  // Marks queue `q` as polled by the caller (busy polling): its ring keeps
  // the driver's notifications suppressed (SplitQueue::SetPolled), now and
  // whenever the queue is enabled again, until SetQueuePolled(q, false).
  // Returns true when leaving polled mode if the device was waiting for a
  // notification and buffers arrived meanwhile: call Notify(q) then. Same
  // thread rules as Notify(q).
  bool SetQueuePolled(uint16_t q, bool polled) {
    if (q >= queues_.size()) return false;
    queues_[q].polled = polled;
    bool pending = false;
    std::visit(
        [&](auto& ring) {
          using R = std::decay_t<decltype(ring)>;
          if constexpr (!std::is_same_v<R, std::monostate>) {
            pending = ring.SetPolled(polled);
          }
        },
        queues_[q].ring);
    return pending;
  }

  // Stops queue `q` without resetting the device (vhost-user GET_VRING_BASE
  // or a disabled ring; a memory table about to change): drops its ring and
  // returns the position it had reached, which EnableQueue(q, state) resumes
  // from. The queue's configuration is kept. nullopt if `q` was not enabled.
  // The caller first finishes the queue's in-flight requests (for devices
  // with asynchronous backends) and must not race with Notify(q).
  std::optional<QueueState> DisableQueue(uint16_t q) {
    if (q >= queues_.size() || !queues_[q].enabled) return std::nullopt;
    // Devices that hold popped chains across kicks (paced console output,
    // net rx buffers waiting for a packet) must let go of them first: the
    // ring, and possibly the memory behind it, is about to go away.
    if constexpr (requires(Derived & d) { d.OnQueueDisabled(q); }) {
      derived().OnQueueDisabled(q);
    }
    QueueSlot& slot = queues_[q];
    std::optional<QueueState> state;
    std::visit(
        [&](auto& ring) {
          using R = std::decay_t<decltype(ring)>;
          if constexpr (!std::is_same_v<R, std::monostate>) {
            state = ring.state();
          }
        },
        slot.ring);
    slot.ring.template emplace<std::monostate>();
    slot.enabled = false;
    return state;
  }

  // A queue notification (kick). Processes queue `q` if the device is live;
  // otherwise ignores it (a kick before DRIVER_OK is not an error).
  void Notify(uint16_t q) {
    if (q >= queues_.size()) {
      GuestError(absl::StrFormat("notification for nonexistent queue %u", q));
      return;
    }
    const uint8_t s = status();
    if (!(s & spec::kStatusDriverOk) || (s & spec::kStatusDeviceNeedsReset) ||
        (s & spec::kStatusFailed) || !queues_[q].enabled) {
      return;
    }
    std::visit(
        [&](auto& ring) {
          using R = std::decay_t<decltype(ring)>;
          if constexpr (!std::is_same_v<R, std::monostate>) {
            derived().ProcessQueue(q, ring);
            if (ring.error() != RingError::kNone) {
              SetNeedsReset(absl::StrFormat("queue %u: %s", q,
                                            RingErrorName(ring.error())));
            }
          }
        },
        queues_[q].ring);
  }

  // Calls fn(index, ring) for queue `q` if it is enabled; for devices that
  // complete requests outside ProcessQueue (asynchronous backends).
  template <typename Fn>
  void WithQueue(uint16_t q, Fn&& fn) {
    if (q >= queues_.size() || !queues_[q].enabled) return;
    std::visit(
        [&](auto& ring) {
          using R = std::decay_t<decltype(ring)>;
          if constexpr (!std::is_same_v<R, std::monostate>) fn(q, ring);
        },
        queues_[q].ring);
  }

  // --- Configuration space ---------------------------------------------------
  uint32_t config_size() const { return derived().ConfigSize(); }
  uint32_t config_generation() const {
    return config_generation_.load(std::memory_order_acquire);
  }
  // Reads `len` bytes at `offset`. False (and zero-filled) if the access
  // does not lie inside the configuration space.
  bool ReadConfig(uint32_t offset, void* data, uint32_t len) {
    const uint32_t size = config_size();
    if (offset > size || len > size - offset) {
      std::memset(data, 0, len);
      GuestError(absl::StrFormat("config read of %u bytes at %u beyond %u", len,
                                 offset, size));
      return false;
    }
    derived().ReadConfigBytes(offset, data, len);
    return true;
  }
  bool WriteConfig(uint32_t offset, const void* data, uint32_t len) {
    const uint32_t size = config_size();
    if (offset > size || len > size - offset) {
      GuestError(absl::StrFormat("config write of %u bytes at %u beyond %u",
                                 len, offset, size));
      return false;
    }
    derived().WriteConfigBytes(offset, data, len);
    return true;
  }

  // --- Reset and errors
  // ----------------------------------------------------------- Returns the
  // device to its initial state (status 0). In-flight requests are finished or
  // cancelled by the device before the rings are dropped.
  void Reset() {
    derived().OnReset();
    for (QueueSlot& slot : queues_) {
      slot.ring.template emplace<std::monostate>();
      slot.enabled = false;
      // virtio-pci's queue_size reads the maximum after reset (§4.1.4.3).
      slot.config = QueueConfig{.size = slot.max_size};
    }
    driver_features_ = 0;
    status_.store(0, std::memory_order_release);
  }

  // Puts the device into DEVICE_NEEDS_RESET and tells the driver (§2.1.2).
  void SetNeedsReset(std::string_view why) {
    const uint8_t old = status_.fetch_or(spec::kStatusDeviceNeedsReset,
                                         std::memory_order_acq_rel);
    if (!(old & spec::kStatusDeviceNeedsReset)) {
      // Rate limited: a guest can loop reset -> bad setup forever.
      if (const auto v = guest_errors_.Allow()) {
        Logf(LogLevel::kError, "%s: device needs reset: %s%s", name_, why,
             v.Suffix());
      }
      if (old & spec::kStatusDriverOk) interrupt_->SignalConfig();
    }
  }
  bool needs_reset() const {
    return (status() & spec::kStatusDeviceNeedsReset) != 0;
  }

  const Memory& memory() const { return *memory_; }
  Interrupt& interrupt() { return *interrupt_; }
  // Number of guest errors seen (logged or suppressed).
  uint64_t guest_errors() const { return guest_errors_.count(); }
  // A fresh guest-error log budget: the glue's next guest is someone else
  // (a new vhost-user connection), and must not inherit the silence the
  // previous one earned.
  void ResetGuestErrorLimit() { guest_errors_.Reset(); }

  // Forwards to Derived's hooks, for the DeviceImplementation check (and
  // tests of it); not for callers. Derived may keep its hooks private
  // (befriending DeviceCore, and so this member class); each forwarder is
  // a template so that a missing hook makes the concept false instead of a
  // hard error here.
  struct Hooks {
    template <typename D = Derived>
    static auto ConfigSize(const D& d) -> decltype(d.ConfigSize()) {
      return d.ConfigSize();
    }
    template <typename D = Derived>
    static auto ReadConfigBytes(D& d, uint32_t offset, void* data, uint32_t len)
        -> decltype(d.ReadConfigBytes(offset, data, len)) {
      return d.ReadConfigBytes(offset, data, len);
    }
    template <typename D = Derived>
    static auto WriteConfigBytes(D& d, uint32_t offset, const void* data,
                                 uint32_t len)
        -> decltype(d.WriteConfigBytes(offset, data, len)) {
      return d.WriteConfigBytes(offset, data, len);
    }
    template <typename D = Derived>
    static auto AcceptFeatures(D& d, uint64_t negotiated)
        -> decltype(d.AcceptFeatures(negotiated)) {
      return d.AcceptFeatures(negotiated);
    }
    template <typename D = Derived>
    static auto OnDriverOk(D& d) -> decltype(d.OnDriverOk()) {
      return d.OnDriverOk();
    }
    template <typename D = Derived>
    static auto OnReset(D& d) -> decltype(d.OnReset()) {
      return d.OnReset();
    }
    template <typename Q, typename D = Derived>
    static auto ProcessQueue(D& d, uint16_t index, Q& queue)
        -> decltype(d.ProcessQueue(index, queue)) {
      return d.ProcessQueue(index, queue);
    }
  };

 protected:
  // `queue_max_sizes` gives each queue's maximum size (its count is the
  // number of queues). `device_features` are the device-specific feature
  // bits; ring features come from `ring`.
  DeviceCore(const Memory& memory, Interrupt& interrupt, std::string name,
             uint64_t device_features,
             absl::Span<const uint32_t> queue_max_sizes,
             RingFeatureOptions ring = {})
      : memory_(&memory),
        interrupt_(&interrupt),
        name_(std::move(name)),
        device_features_(device_features | RingFeatures(ring)),
        queues_(queue_max_sizes.size()) {
    // Here, not on the class: Derived is complete only once its own
    // constructor runs.
    static_assert(DeviceImplementation<Derived, Hooks, Split, Packed>,
                  "the device does not provide what DeviceCore calls; see "
                  "virtio/device_implementation.h");
    for (size_t i = 0; i < queue_max_sizes.size(); ++i) {
      queues_[i].max_size = queue_max_sizes[i];
      queues_[i].config.size = queue_max_sizes[i];
    }
  }
  ~DeviceCore() = default;

  // Bumps the configuration generation and sends a config interrupt; call
  // after changing config space contents (e.g. a resized disk).
  void ConfigChanged() {
    config_generation_.fetch_add(1, std::memory_order_acq_rel);
    if (status() & spec::kStatusDriverOk) interrupt_->SignalConfig();
  }

  // Logs a driver mistake, rate limited.
  void GuestError(std::string_view what) {
    if (const auto v = guest_errors_.Allow()) {
      Logf(LogLevel::kWarning, "%s: guest error: %s%s", name_, what,
           v.Suffix());
    }
  }

 private:
  struct QueueSlot {
    uint32_t max_size = 0;
    QueueConfig config;
    bool enabled = false;
    bool polled = false;
    Observer* observer = nullptr;  // SetQueueObserver
    std::variant<std::monostate, Split, Packed> ring;
  };

  Derived& derived() { return static_cast<Derived&>(*this); }
  const Derived& derived() const { return static_cast<const Derived&>(*this); }

  bool FeaturesAcceptable() {
    if (!(driver_features_ & spec::Bit(spec::kFeatureVersion1))) {
      GuestError(
          "driver did not accept VERSION_1 (legacy drivers unsupported)");
      return false;
    }
    if (driver_features_ & ~device_features_) {
      GuestError(absl::StrFormat("driver accepted unoffered features 0x%x",
                                 driver_features_ & ~device_features_));
      return false;
    }
    return derived().AcceptFeatures(driver_features_);
  }

  const Memory* memory_;
  Interrupt* interrupt_;
  std::string name_;
  uint64_t device_features_;
  uint64_t driver_features_ = 0;
  std::atomic<uint8_t> status_{0};
  std::atomic<uint32_t> config_generation_{0};
  std::vector<QueueSlot> queues_;
  GuestErrorLimiter guest_errors_;
};

}  // namespace virtio

#endif  // VIRTIO_DEVICE_CORE_H_
