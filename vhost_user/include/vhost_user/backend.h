// vhost_user/backend.h — the back-end side of the vhost-user protocol: one
// front-end connection's state machine over a VhostDevice.
//
// Handle() takes each message the front-end sends, validates it completely
// (payload size and fd count per request, negotiation state, queue index,
// ring size, addresses, memory regions) and applies it; any violation is an
// error after which the caller closes the connection (Handle() may still
// hand back a failure REPLY_ACK to send first). Disconnect() returns the
// device to its initial state and frees everything the front-end gave:
// rings are stopped, the device reset, memory unmapped, fds closed.
//
// Driving the device (vhost-user has no status register unless STATUS is
// negotiated): SET_FEATURES stores the front-end's choice; the first ring
// start (or SET_STATUS with FEATURES_OK) completes negotiation as a driver
// would (ACKNOWLEDGE, DRIVER, features, FEATURES_OK), and the first running
// ring sets DRIVER_OK. A ring runs while it is started (it has a kick fd, or
// the no-fd flag meaning "poll me") and enabled (always, unless
// PROTOCOL_FEATURES was negotiated; then by SET_VRING_ENABLE). It stops at
// GET_VRING_BASE (which answers its position), when disabled, and, to be
// restarted at the same position, around memory table changes.
//
// Ring positions (SET/GET_VRING_BASE): split rings use the 16-bit last
// avail index (the used index is read from the ring); packed rings use bits
// 0-14 avail offset, 15 avail wrap counter, 16-30 used offset, 31 used wrap
// counter.
#ifndef VHOST_USER_BACKEND_H_
#define VHOST_USER_BACKEND_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "vhost_user/device.h"
#include "vhost_user/dirty_log.h"
#include "vhost_user/inflight.h"
#include "vhost_user/inflight_queue.h"
#include "vhost_user/message.h"
#include "vhost_user/queue_activity.h"
#include "vhost_user/queue_observer.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user {

// Protocol features this library implements.
inline constexpr uint64_t kImplementedProtocolFeatures =
    Bit(kProtocolMq) | Bit(kProtocolReplyAck) | Bit(kProtocolConfig) |
    Bit(kProtocolBackendReq) | Bit(kProtocolResetDevice) |
    Bit(kProtocolConfigureMemSlots) | Bit(kProtocolStatus) |
    Bit(kProtocolInflightShmfd) | Bit(kProtocolLogShmfd) |
    Bit(kProtocolBackendSendFd);

// What a Backend offers the front-end.
struct BackendOptions {
  std::string name = "vhost-user";
  // Protocol features to offer; masked with kImplementedProtocolFeatures.
  uint64_t protocol_features = kImplementedProtocolFeatures;
};

// One front-end connection's protocol state over a VhostDevice: validates
// and applies each message (see the top of this file). Not thread-safe:
// the connection's control thread calls it, with the workers parked.
class Backend {
 public:
  explicit Backend(VhostDevice& device, BackendOptions options = {});
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // Handles one message. On success `*reply` holds the reply to send, if
  // any. On error the connection must be closed (after sending `*reply`, a
  // failure REPLY_ACK, if set).
  absl::Status Handle(Message m, std::optional<Message>* reply);

  // Forgets the front-end: stops rings, resets the device, unmaps memory,
  // closes fds. Handle() may be used again afterwards (a new connection).
  void Disconnect();

  // --- For the event loop ---
  // The kick fd of queue `q` if it is running with one, else -1.
  int kick_fd(uint16_t q) const;
  // Readable when a SIGBUS hit memory this connection mapped: the
  // front-end shrank it (sigbus_guard.h). TakeFault() says which.
  int fault_fd() const { return fault_fd_.get(); }
  // What faulted since the last call, for the log ("" if nothing).
  std::string TakeFault();

  // --- Stall diagnosis ---
  // Queue q's activity counters (its worker bumps kicks).
  QueueActivity* activity(uint16_t q) { return &observers_[q].activity; }
  // Called about once a second by the control thread (workers running):
  // true when a queue has had requests in flight and no completion for
  // kStallAfter, first and then every kStallRepeat while it lasts; the
  // caller then logs LogQueues() with the workers parked.
  static constexpr std::chrono::seconds kStallAfter{5};
  static constexpr std::chrono::seconds kStallRepeat{60};
  bool WatchStalls(std::chrono::steady_clock::time_point now);
  // Logs every queue's state (ring indexes the device and the driver see,
  // event indexes, in flight, last kick / interrupt / completion). Workers
  // parked.
  void LogQueues(const char* why, std::chrono::steady_clock::time_point now);
  // True if queue `q` runs without a kick fd (the loop must poll it).
  bool polled(uint16_t q) const;
  // Changes whenever the set of fds to watch may have changed.
  uint64_t generation() const { return generation_; }
  uint64_t protocol_features() const { return protocol_features_; }
  uint64_t acked_features() const { return acked_features_; }
  // Whether the front-end gave a back-end request channel
  // (SET_BACKEND_REQ_FD): configuration changes reach it only then.
  bool has_backend_channel() const { return backend_req_.get() >= 0; }
  // The dirty log from SET_LOG_BASE (unmapped until then); queues log
  // into it while VHOST_F_LOG_ALL is acked (see dirty_log.h).
  const DirtyLog& dirty_log() const { return log_; }
  // Dirty logging of queue `q` (tests, statistics).
  const DirtyLogQueue& dirty_log_queue(uint16_t q) const {
    return vrings_[q].dirty_log;
  }

  // Sends back-end request `m` (a BackendRequest) to the front-end on the
  // SET_BACKEND_REQ_FD channel with `fds` attached: at most kMaxFds, and
  // any only with BACKEND_SEND_FD negotiated. FailedPrecondition without a
  // channel or the feature. Control thread only (as Handle()).
  absl::Status SendBackendRequest(const Message& m,
                                  absl::Span<const int> fds = {});

 private:
  struct Vring {
    uint32_t num = 0;
    std::optional<VringAddr> addr;
    uint32_t base = 0;  // SET_VRING_BASE value (see above)
    UniqueFd kick, call, err;
    bool started = false;  // kick fd (or no-fd flag) received
    bool enabled = false;  // SET_VRING_ENABLE
    // Inflight tracking (inflight_queue.h): attached to the queue's
    // observer while it runs with a SET_INFLIGHT_FD region.
    InflightQueue inflight;
    // Dirty logging: attached to the queue's observer while it runs with
    // LOG_ALL acked and a log mapped.
    DirtyLogQueue dirty_log;
  };

  absl::Status Dispatch(Message& m, std::optional<Message>* reply);
  absl::Status NeedProtocol(unsigned bit, const Message& m) const;
  absl::StatusOr<uint16_t> QueueIndex(uint64_t index, const Message& m) const;
  bool packed() const;
  bool ShouldRun(const Vring& v) const;
  // Starts or stops queue `q` to match its vring state.
  absl::Status Sync(uint16_t q);
  absl::Status SyncAll();
  // Stops queue `q` if running, saving its position in base.
  void Stop(uint16_t q);
  void StopAll();
  uint32_t EncodeBase(const virtio::QueueState& s) const;
  absl::Status ChangeMemory(Message& m);
  absl::Status GetInflightFd(const Message& m, std::optional<Message>* reply);
  absl::Status SetInflightFd(Message& m);
  void UnmapInflight();
  // Sets up tracking for queue `q` about to start (if there is a region):
  // recovers the region, sets `state` (where to resume) and `resubmit`
  // (chains still in flight), attaches the tracker to the observer.
  absl::Status StartInflight(uint16_t q, const virtio::QueueConfig& cfg,
                             virtio::QueueState& state,
                             std::vector<virtio::ResubmitChain>& resubmit);
  void ResetRings();
  bool logging() const;
  absl::Status SetLogBase(Message& m, std::optional<Message>* reply);
  // Attaches dirty logging to queue `q` about to start on `cfg`, if on.
  absl::Status StartDirtyLog(uint16_t q, const virtio::QueueConfig& cfg);

  VhostDevice& dev_;
  BackendOptions options_;
  std::vector<Vring> vrings_;
  // One per queue, at a fixed address for the Backend's lifetime.
  std::vector<QueueObserver> observers_;
  bool owner_ = false;
  bool features_set_ = false;
  uint64_t acked_features_ = 0;
  uint64_t protocol_features_ = 0;
  uint8_t frontend_status_ = 0;
  UniqueFd backend_req_;
  // SET_INFLIGHT_FD region: inflight_queues_ parts of inflight_stride_
  // bytes each (see SetInflightFd).
  uint8_t* inflight_map_ = nullptr;
  size_t inflight_len_ = 0;
  uint16_t inflight_queues_ = 0;
  uint64_t inflight_stride_ = 0;
  // Queues served untracked because the region cannot hold their ring,
  // already said in the log (once per connection).
  std::vector<bool> inflight_warned_;
  uint64_t generation_ = 0;
  // SET_LOG_BASE / SET_LOG_FD.
  DirtyLog log_;
  UniqueFd log_call_;
  // SIGBUS reports for this connection's mappings.
  UniqueFd fault_fd_;
  // WatchStalls' view of each queue at its last look.
  struct Watch {
    uint64_t kicks = 0, interrupts = 0, pushes = 0;
    std::chrono::steady_clock::time_point kick_at{}, interrupt_at{},
        progress_at{}, reported_at{};
    bool stalled = false;
  };
  std::vector<Watch> watch_;
  std::string DescribeQueue(uint16_t q,
                            std::chrono::steady_clock::time_point now);
};

}  // namespace vhost_user

#endif  // VHOST_USER_BACKEND_H_
