// vhost_user/server.h — one front-end connection's event loop, and the
// daemon loop around it (server or client socket mode).
//
// ServeConnection() serves one front-end. The calling thread is the
// control thread: it reads messages from the connection socket, hands them
// to Backend::Handle() and sends the replies. The data path runs on worker
// threads, one per queue group (VhostDevice::num_groups(); by default one
// per queue; net: one per queue pair; console: one), each with its own
// epoll set over its queues' kick fds, backend completion fds and the
// group's backend fds (TAP, console sockets). Workers share no lock on the
// data path. Every control message is handled with all workers parked
// (quiesced between two events, their fds unregistered), so memory table
// changes, GET_VRING_BASE, resets and fd swaps never race with a queue; the
// workers resume on the new fd sets afterwards. With `busy_poll` workers
// never sleep: they process their running rings on every turn (for
// throughput, at the price of a core each). Without it, a worker that just
// did work keeps polling its rings for `poll_us` microseconds (QEMU's
// poll-max-ns idea) before it sleeps in epoll_wait again: a request that
// comes within the window costs no wake-up, and an idle worker costs
// nothing. The window adapts: it shrinks, down to nothing, while the
// worker gets less than its core's time (shared cores: spinning would delay
// the front-end itself) and grows back to `poll_us` when it has a core.
// During the window kicks stay enabled: they are how the worker learns that
// work is still coming.
//
// It returns when the front-end disconnects (OK), breaks the protocol (the
// error, already logged), or `stop_fd` becomes readable (Cancelled). The
// workers are stopped, the device reset and every fd and mapping the
// front-end gave released before it returns.
#ifndef VHOST_USER_SERVER_H_
#define VHOST_USER_SERVER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "vhost_user/backend.h"
#include "vhost_user/device.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user {

class ConnectionState;

// How ServeConnection() serves one front-end.
struct ServeOptions {
  std::string name = "vhost-user";
  BackendOptions backend = {};
  // Readable → stop serving (e.g. an eventfd written by a signal handler).
  int stop_fd = -1;
  // Readable → log every queue's state (an eventfd; drained), e.g. on
  // SIGUSR1, for an operator looking at a stalled guest.
  int dump_fd = -1;
  // Mid-message stall limit.
  int message_timeout_ms = 10000;
  // Workers spin on their rings instead of sleeping in epoll_wait.
  bool busy_poll = false;
  // Without busy_poll: after the last event that meant work, spin on the
  // rings up to this long before sleeping (0: sleep at once; adaptive).
  uint32_t poll_us = 50;
  // Where to publish the connection's state (null: nowhere).
  ConnectionState* state = nullptr;
};

// Serves the front-end on `connection` until it disconnects (see the top
// of this file).
absl::Status ServeConnection(VhostDevice& device, UniqueFd connection,
                             const ServeOptions& options);

// How RunDaemon() finds its front-ends, and how it serves each.
struct DaemonOptions {
  ServeOptions serve;
  // Server mode: listen here. Client mode: connect here (retrying until
  // the front-end listens).
  std::string socket_path;
  // Server mode: accept on this listening socket instead of creating
  // `socket_path` (one inherited from a service manager, or created by the
  // caller with its own permissions). RunDaemon() neither closes it nor
  // unlinks anything; `socket_path` then only names it in log lines.
  int listen_fd = -1;
  bool client = false;
  // Stop after this many connections (0: never); for tests.
  int max_connections = 0;
};

// The number of the connection the calling thread's RunDaemon() serves now
// (1, 2, ...; 0: none), for log sinks to put on every line: the daemon's own
// lines, the device's and the library's alike (they name the device, not
// the guest). Per thread, so that a process serving several devices (one
// RunDaemon() thread each) numbers each device's connections on its own;
// the data-path workers a connection starts inherit its number, other
// threads read 0.
int CurrentConnection();

// A device's front-end connection as statistics report it: a snapshot of
// ConnectionState.
struct ConnectionStatus {
  bool connected = false;  // a front-end is being served
  int number = 0;          // RunDaemon()'s connection number (0: none)
  int accepted = 0;        // connections RunDaemon() has served so far
  // Negotiated with the connected front-end (0 when none): its acked virtio
  // features, the protocol features, and whether it gave a back-end
  // request channel (configuration changes reach it only then).
  uint64_t features = 0;
  uint64_t protocol_features = 0;
  bool backend_channel = false;
};

// One device's connection state, published by the thread serving it
// (ServeOptions::state) after every message and read by any thread (a
// statistics endpoint) without a lock. Owned by the caller, one per device.
class ConnectionState {
 public:
  // Each field current at some recent point.
  ConnectionStatus Read() const;

 private:
  friend absl::Status ServeConnection(VhostDevice&, UniqueFd,
                                      const ServeOptions&);
  friend absl::Status RunDaemon(VhostDevice&, const DaemonOptions&);
  void Publish(const Backend& backend);
  std::atomic<bool> connected_{false};
  std::atomic<int> number_{0};
  std::atomic<int> accepted_{0};
  std::atomic<uint64_t> features_{0};
  std::atomic<uint64_t> protocol_features_{0};
  std::atomic<bool> backend_channel_{false};
};

// Serves connection after connection until `stop_fd` fires. Server mode
// without `listen_fd` creates the socket (0600) and unlinks it on return.
absl::Status RunDaemon(VhostDevice& device, const DaemonOptions& options);

}  // namespace vhost_user

#endif  // VHOST_USER_SERVER_H_
