// vhost_user/device_adapter.h — serves any virtio::DeviceCore device
// (RngDevice, BlkDevice, ...) over vhost-user.
//
// DeviceAdapter<D> owns the device's guest memory (a MemoryTable the
// Backend fills from SET_MEM_TABLE / ADD_MEM_REG) and its interrupt sink
// (CallInterrupt: call eventfds, CONFIG_CHANGE_MSG), and implements
// VhostDevice by driving DeviceCore as a virtio driver would:
//
//   * Negotiate(): status 0 → ACKNOWLEDGE → DRIVER → driver features →
//     FEATURES_OK (the device may refuse; then Negotiate() fails).
//   * StartQueue(): writes the queue's config (guest-physical ring
//     addresses), EnableQueue(q, state) resuming at the SET_VRING_BASE
//     position, and sets DRIVER_OK with the first running queue.
//   * StopQueue(): finishes the queue's in-flight backend requests (devices
//     with CompleteRequests(), i.e. blk, waiting on the backend's completion
//     fd for up to 5 s, then draining the backend), then DisableQueue(q).
//   * Kick(q): Notify(q); a ring error found there (the device enters
//     NEEDS_RESET) is also reported on the queue's error fd
//     (SET_VRING_ERR), vhost-user's way to tell the front-end, and counted
//     in the queue's statistics (queue_counters()), which the adapter keeps
//     for the device's lifetime.
//
// Example:
//   using Rng = virtio::RngDevice<VhostTraits>;
//   auto rng = vhost_user::DeviceAdapter<Rng>::Create(
//       [](const MemoryTable& m, CallInterrupt& i) {
//         return std::make_unique<Rng>(m, i, {});
//       });
#ifndef VHOST_USER_DEVICE_ADAPTER_H_
#define VHOST_USER_DEVICE_ADAPTER_H_

#include <poll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "vhost_user/device.h"
#include "vhost_user/interrupt.h"
#include "vhost_user/memory_table.h"
#include "vhost_user/queue_counters.h"
#include "virtio/log.h"
#include "virtio/spec.h"

namespace vhost_user {

namespace internal {

// A device whose requests complete asynchronously through a backend with
// a completion fd per queue (blk): its in-flight requests are finished
// before a queue stops.
template <typename D>
concept AsyncDevice = requires(D& d, uint16_t q) {
  d.CompleteRequests(q);
  { d.in_flight(q) } -> std::convertible_to<uint32_t>;
  { d.backend().queue(q).completion_fd() } -> std::same_as<int>;
};

}  // namespace internal

// Serves device D (a virtio::DeviceCore device on VhostTraits) as a
// VhostDevice; owns its guest memory and interrupt sink (see above).
template <typename D>
class DeviceAdapter final : public VhostDevice {
 public:
  // `make(memory, interrupt)` builds the device: returns std::unique_ptr<D>
  // or absl::StatusOr<std::unique_ptr<D>>.
  template <typename Make>
  static absl::StatusOr<std::unique_ptr<DeviceAdapter>> Create(Make&& make) {
    std::unique_ptr<DeviceAdapter> a(new DeviceAdapter());
    auto made = make(static_cast<const MemoryTable&>(a->memory_), a->irq_);
    if constexpr (std::is_same_v<decltype(made), std::unique_ptr<D>>) {
      a->dev_ = std::move(made);
    } else {
      if (!made.ok()) return made.status();
      a->dev_ = *std::move(made);
    }
    if (a->dev_->num_queues() > CallInterrupt::kMaxQueues) {
      return absl::InvalidArgumentError("more than 256 queues");
    }
    a->counters_ = std::make_unique<QueueCounters[]>(a->dev_->num_queues());
    return a;
  }

  // Reset() allocates nothing, so nothing can throw here (tidy cannot see
  // through the device's template).
  ~DeviceAdapter() override {  // NOLINT(bugprone-exception-escape)
    // Before the memory goes away. No device when Create() failed building
    // it (bad options): nothing to reset then.
    if (dev_ != nullptr) dev_->Reset();
  }

  D& device() { return *dev_; }
  // Keeps `owner` (e.g. the device's block backend) alive until after the
  // device is destroyed.
  void KeepAlive(std::shared_ptr<void> owner) {
    keep_alive_ = std::move(owner);
  }
  CallInterrupt& interrupt() { return irq_; }

  // How the device's backend fds are watched and serviced (net, console):
  // `watches(device, out)` is BackendWatches(), `service(device, token)`
  // is ServiceBackend().
  // Called from the group's worker thread only.
  using WatchFn = std::function<int(D&, uint16_t, std::vector<BackendWatch>&)>;
  using ServiceFn = std::function<void(D&, uint16_t, uint32_t)>;
  void SetBackendHooks(WatchFn watches, ServiceFn service) {
    watches_ = std::move(watches);
    service_ = std::move(service);
  }
  // Queue q is served by group group_of[q] (< groups); default: one group
  // per queue.
  void SetGroups(uint16_t groups, std::vector<uint16_t> group_of) {
    groups_ = groups;
    group_of_ = std::move(group_of);
  }

  // --- VhostDevice ---
  MemoryTable& memory() override { return memory_; }
  uint64_t features() const override { return dev_->device_features(); }
  uint16_t num_queues() const override { return dev_->num_queues(); }
  uint32_t queue_max_size(uint16_t q) const override {
    return dev_->queue_max_size(q);
  }
  uint32_t config_size() const override { return dev_->config_size(); }
  bool ReadConfig(uint32_t offset, void* data, uint32_t len) override {
    return dev_->ReadConfig(offset, data, len);
  }
  bool WriteConfig(uint32_t offset, const void* data, uint32_t len) override {
    return dev_->WriteConfig(offset, data, len);
  }

  void SetDriverFeatures(uint64_t features) override { pending_ = features; }

  bool Negotiate() override {
    namespace spec = virtio::spec;
    const uint8_t s = dev_->status();
    if (s & spec::kStatusFeaturesOk) return dev_->driver_features() == pending_;
    if (s != 0) dev_->Reset();
    dev_->SetStatus(spec::kStatusAcknowledge);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    dev_->SetDriverFeatures(pending_);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk);
    return (dev_->status() & spec::kStatusFeaturesOk) != 0;
  }

  uint8_t status() const override { return dev_->status(); }

  absl::Status StartQueue(
      uint16_t q, const virtio::QueueConfig& config,
      const virtio::QueueState& state, QueueObserver* observer,
      absl::Span<const virtio::ResubmitChain> resubmit) override {
    namespace spec = virtio::spec;
    if (dev_->needs_reset()) {
      return absl::FailedPreconditionError("the device needs a reset");
    }
    virtio::QueueConfig* c = dev_->queue_config(q);
    if (c == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("queue %u does not exist or is running", q));
    }
    c->size = config.size;
    c->desc_addr = config.desc_addr;
    c->driver_addr = config.driver_addr;
    c->device_addr = config.device_addr;
    if (!dev_->EnableQueue(q, state, observer, resubmit)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "queue %u: ring rejected by the device (see its log line)", q));
    }
    err_signalled_.store(false, std::memory_order_relaxed);
    if (q < ring_error_counted_.size()) ring_error_counted_[q] = false;
    const uint8_t s = dev_->status();
    if (!(s & spec::kStatusDriverOk)) {
      dev_->SetStatus(static_cast<uint8_t>(s | spec::kStatusDriverOk));
    } else {
      dev_->Notify(q);  // buffers posted before the start
    }
    return absl::OkStatus();
  }

  std::optional<virtio::QueueState> StopQueue(uint16_t q) override {
    if (!dev_->queue_enabled(q)) return std::nullopt;
    if constexpr (internal::AsyncDevice<D>) {
      if (q < dev_->backend().num_queues()) FinishInFlight(q);
    }
    return dev_->DisableQueue(q);
  }

  bool queue_running(uint16_t q) const override {
    return dev_->queue_enabled(q);
  }

  void Reset() override {
    dev_->Reset();
    pending_ = 0;
  }

  void NewConnection() override { dev_->ResetGuestErrorLimit(); }

  QueueDebugInfo QueueDebug(uint16_t q) override {
    QueueDebugInfo d;
    d.running = dev_->queue_enabled(q);
    dev_->WithQueue(q, [&](uint16_t, auto& ring) {
      d.position = ring.state();
      d.ring_in_flight = ring.in_flight();
    });
    if constexpr (internal::AsyncDevice<D>) {
      d.backend_in_flight = dev_->in_flight(q);
    }
    d.interrupts = irq_.queue_signals(q);
    d.interrupts_lost = irq_.queue_signals_lost(q);
    return d;
  }
  uint64_t queue_interrupts(uint16_t q) const override {
    return irq_.queue_signals(q);
  }
  uint64_t queue_interrupts_lost(uint16_t q) const override {
    return irq_.queue_signals_lost(q);
  }
  QueueCounters* queue_counters(uint16_t q) override {
    return q < dev_->num_queues() ? &counters_[q] : nullptr;
  }
  bool WatchForStalls(uint16_t) const override {
    return internal::AsyncDevice<D>;
  }

  void SetCallFd(uint16_t q, int fd) override { irq_.SetCallFd(q, fd); }
  void SetErrFd(uint16_t q, int fd) override {
    if (q < err_.size()) err_[q] = fd;
  }
  void SetConfigChannel(int fd) override { irq_.SetConfigChannel(fd); }

  void Kick(uint16_t q) override {
    dev_->Notify(q);
    ReportRingError(q);
  }

  bool SetQueuePolled(uint16_t q, bool polled) override {
    return dev_->SetQueuePolled(q, polled);
  }

  int completion_fd(uint16_t q) const override {
    if constexpr (internal::AsyncDevice<D>) {
      if (q < dev_->backend().num_queues() && dev_->queue_enabled(q)) {
        return dev_->backend().queue(q).completion_fd();
      }
    }
    return -1;
  }

  void Complete(uint16_t q) override {
    if constexpr (internal::AsyncDevice<D>) {
      const int fd = completion_fd(q);
      if (fd >= 0) {
        uint64_t v;
        [[maybe_unused]] ssize_t n = read(fd, &v, sizeof v);
      }
      dev_->CompleteRequests(q);
      ReportRingError(q);
    }
  }

  uint16_t num_groups() const override {
    return groups_ != 0 ? groups_ : dev_->num_queues();
  }
  uint16_t queue_group(uint16_t q) const override {
    return q < group_of_.size() ? group_of_[q] : (groups_ != 0 ? 0 : q);
  }
  int BackendWatches(uint16_t group, std::vector<BackendWatch>& out) override {
    return watches_ ? watches_(*dev_, group, out) : -1;
  }
  void ServiceBackend(uint16_t group, uint32_t token) override {
    if (service_) service_(*dev_, group, token);
  }

  std::optional<std::chrono::nanoseconds> RetryAfter() const override {
    if constexpr (requires(const D& d) { d.RetryAfter(); }) {
      return dev_->RetryAfter();
    }
    return std::nullopt;
  }

 private:
  DeviceAdapter() { err_.fill(-1); }

  void ReportRingError(uint16_t q) {
    if (!dev_->needs_reset()) return;
    // Counted once per broken ring (it stays broken, its error set, until
    // the queue is set up again), before the front-end hears of it.
    if (q < dev_->num_queues() && !ring_error_counted_[q]) {
      QueueCounters& c = counters_[q];
      dev_->WithQueue(q, [&](uint16_t, auto& ring) {
        const virtio::RingError e = ring.error();
        if (virtio::IsRingError(e)) {
          ring_error_counted_[q] = true;
          c.last_ring_error.store(e, std::memory_order_relaxed);
          QueueCounters::Bump(c.ring_errors);
        }
      });
    }
    if (!err_signalled_.exchange(true, std::memory_order_relaxed)) {
      if (q < err_.size()) SignalFd(err_[q]);
    }
  }

  void FinishInFlight(uint16_t q) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (dev_->in_flight(q) > 0 &&
           std::chrono::steady_clock::now() < deadline) {
      const int fd = dev_->backend().queue(q).completion_fd();
      if (fd >= 0) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        uint64_t v;
        [[maybe_unused]] ssize_t n = read(fd, &v, sizeof v);
      }
      dev_->CompleteRequests(q);
    }
    if (dev_->in_flight(q) > 0) {
      virtio::Logf(virtio::LogLevel::kError,
                   "%s: queue %u stopped with %u requests still in flight; "
                   "draining the backend: they stay marked in the inflight "
                   "region, if there is one, for the next start to resubmit",
                   dev_->name(), q, dev_->in_flight(q));
      dev_->backend().queue(q).Drain();
    }
  }

  std::shared_ptr<void> keep_alive_;  // destroyed last
  MemoryTable memory_;
  CallInterrupt irq_;
  std::unique_ptr<D> dev_;
  uint64_t pending_ = 0;
  WatchFn watches_;
  ServiceFn service_;
  uint16_t groups_ = 0;
  std::vector<uint16_t> group_of_;
  std::array<int, CallInterrupt::kMaxQueues> err_{};
  std::atomic<bool> err_signalled_{false};
  // One per queue (queue_counters()).
  std::unique_ptr<QueueCounters[]> counters_;
  // Whether queue q's broken ring is counted already; its worker only (or
  // the control thread while it is parked, at the queue's start).
  std::array<bool, CallInterrupt::kMaxQueues> ring_error_counted_{};
};

}  // namespace vhost_user

#endif  // VHOST_USER_DEVICE_ADAPTER_H_
