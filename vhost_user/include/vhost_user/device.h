// vhost_user/device.h — what the protocol handler (Backend) needs from the
// device it serves. Control plane only (virtual calls are fine here); the
// data path is the device's own templates. DeviceAdapter<D>
// (device_adapter.h) implements it for any virtio::DeviceCore device; the
// fuzzer and tests bring fakes.
#ifndef VHOST_USER_DEVICE_H_
#define VHOST_USER_DEVICE_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "vhost_user/memory_table.h"
#include "vhost_user/queue_counters.h"
#include "vhost_user/queue_observer.h"
#include "virtio/queue.h"

namespace vhost_user {

// An fd of the device's own backend (a TAP, a console socket, ...) for the
// event loop to watch: `events` are EPOLLIN / EPOLLOUT, optionally EPOLLET;
// when any fires the group's worker calls ServiceBackend(group, token).
struct BackendWatch {
  int fd = -1;
  uint32_t events = 0;
  uint32_t token = 0;
  // The fd stays open (the same file) as long as the device: no need to
  // register it again after servicing.
  bool stable = false;
  bool operator==(const BackendWatch&) const = default;
};

// A queue's state as the device sees it, for diagnosis (QueueDebug()).
struct QueueDebugInfo {
  bool running = false;
  // The device's ring position and chains popped but not yet used.
  virtio::QueueState position;
  uint32_t ring_in_flight = 0;
  // Requests handed to the device's backend and not completed (-1: the
  // device has no asynchronous backend).
  int64_t backend_in_flight = -1;
  uint64_t interrupts = 0;
  uint64_t interrupts_lost = 0;
};

// The device a Backend serves, as the protocol sees it (the control plane
// and the data path events of the event loop). DeviceAdapter implements it
// for any virtio::DeviceCore device; implement it directly only for a
// device that does not fit DeviceCore.
class VhostDevice {
 public:
  virtual ~VhostDevice() = default;

  // The guest memory the device's rings and buffers live in; the Backend
  // fills it from SET_MEM_TABLE / ADD_MEM_REG while no queue is running.
  virtual MemoryTable& memory() = 0;

  // Virtio feature bits offered (without the vhost-user protocol bit).
  virtual uint64_t features() const = 0;
  virtual uint16_t num_queues() const = 0;
  virtual uint32_t queue_max_size(uint16_t q) const = 0;
  virtual uint32_t config_size() const = 0;
  // False if [offset, offset+len) is outside the config space.
  virtual bool ReadConfig(uint32_t offset, void* data, uint32_t len) = 0;
  virtual bool WriteConfig(uint32_t offset, const void* data, uint32_t len) = 0;

  // The front-end's feature choice (a subset of features()). Takes effect
  // when the first queue starts or on Negotiate().
  virtual void SetDriverFeatures(uint64_t features) = 0;
  // Completes feature negotiation now (FEATURES_OK). False if the device
  // refuses the features.
  virtual bool Negotiate() = 0;
  // The device's virtio status byte.
  virtual uint8_t status() const = 0;

  // Starts queue `q` on `config` (guest-physical addresses) at `state`,
  // with `observer` (may be null; outlives the running queue) attached to
  // its ring and `resubmit` (chains a previous back-end left in flight)
  // processed first.
  virtual absl::Status StartQueue(
      uint16_t q, const virtio::QueueConfig& config,
      const virtio::QueueState& state, QueueObserver* observer,
      absl::Span<const virtio::ResubmitChain> resubmit) = 0;
  // Stops queue `q` after finishing its in-flight requests; its position,
  // or nullopt if it was not running.
  virtual std::optional<virtio::QueueState> StopQueue(uint16_t q) = 0;
  virtual bool queue_running(uint16_t q) const = 0;
  // Resets the device (all queues stopped, features forgotten).
  virtual void Reset() = 0;
  // A new front-end connects: a new guest, with a fresh guest-error log
  // budget (the previous one's silence is not its own).
  virtual void NewConnection() {}
  // Queue `q`'s state, with no worker running (the control thread, workers
  // parked).
  virtual QueueDebugInfo QueueDebug(uint16_t /*q*/) { return {}; }
  // Interrupts sent on queue `q` so far; any thread.
  virtual uint64_t queue_interrupts(uint16_t /*q*/) const { return 0; }
  // Interrupts that could not be sent on queue `q` (no call fd, or the
  // write failed); any thread.
  virtual uint64_t queue_interrupts_lost(uint16_t /*q*/) const { return 0; }
  // Queue `q`'s statistics for the device's lifetime (null: not kept). At
  // a fixed address; written by the data path, read by any thread.
  virtual QueueCounters* queue_counters(uint16_t /*q*/) { return nullptr; }
  // Whether chains popped and not yet used on queue `q` are requests the
  // device works on (blk), so that many of them with no progress means a
  // stall; not so for chains held waiting for input (net rx, console).
  virtual bool WatchForStalls(uint16_t /*q*/) const { return false; }

  // Where interrupts go: the queue's call fd (-1: none), its error fd, and
  // the back-end request channel for config-change messages (-1: none).
  // The fds stay owned by the caller, which clears them before closing.
  virtual void SetCallFd(uint16_t q, int fd) = 0;
  virtual void SetErrFd(uint16_t q, int fd) = 0;
  virtual void SetConfigChannel(int fd) = 0;

  // --- Data path events (the connection's event loop) ---
  // A kick on queue `q`.
  virtual void Kick(uint16_t q) = 0;
  // Queue `q` is (or no longer is) polled by its worker without waiting for
  // kicks (busy polling): the ring then keeps the front-end's kicks
  // suppressed, sparing it a system call per batch. Persists across queue
  // restarts. True when leaving polled mode if buffers arrived that the
  // device was waiting for a kick for: call Kick(q) then. Worker thread of
  // `q`, or the control thread while no worker runs.
  virtual bool SetQueuePolled(uint16_t /*q*/, bool /*polled*/) { return false; }
  // An fd that becomes readable when queue `q` has backend completions
  // (-1: none), and what to do then.
  virtual int completion_fd(uint16_t q) const = 0;
  virtual void Complete(uint16_t q) = 0;
  // The device's backend fds to watch now (appended to `out`), and a time
  // in ms after which to call ServiceBackend(token) for every watch anyway
  // (-1: none). Asked again after every event the loop handles, since the
  // answer changes with the device's state.
  //
  // Queues are served in groups, one worker thread each: queues of one
  // group (and that group's backend watches) are never handled
  // concurrently; different groups are. By default every queue is its own
  // group.
  virtual uint16_t num_groups() const { return num_queues(); }
  virtual uint16_t queue_group(uint16_t q) const { return q; }
  virtual int BackendWatches(uint16_t group, std::vector<BackendWatch>& out) {
    (void)group;
    (void)out;
    return -1;
  }
  virtual void ServiceBackend(uint16_t group, uint32_t token) {
    (void)group;
    (void)token;
  }

  // When to kick queue `q` again on its own (a rate limit), if at all.
  virtual std::optional<std::chrono::nanoseconds> RetryAfter() const {
    return std::nullopt;
  }
};

}  // namespace vhost_user

#endif  // VHOST_USER_DEVICE_H_
