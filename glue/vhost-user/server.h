// vhost-user/server.h — one front-end connection's event loop, and the
// daemon loop around it (server or client socket mode).
//
// ServeConnection() runs, on the calling thread, an epoll loop over the
// connection socket, every running queue's kick fd, every backend
// completion fd and a stop fd: messages go to Backend::Handle() and their
// replies back; kicks and completions go to the device. All queues of the
// device are served by this one thread (one group), so the protocol and
// the data path never race. It returns when the front-end disconnects
// (OK), breaks the protocol (the error, already logged), or `stop_fd`
// becomes readable (Cancelled). The device is reset and every fd and
// mapping the front-end gave is released before it returns.
#ifndef VHOST_USER_SERVER_H_
#define VHOST_USER_SERVER_H_

#include <string>

#include "absl/status/status.h"
#include "backend.h"
#include "device.h"
#include "unique_fd.h"

namespace vhost_user {

struct ServeOptions {
  std::string name = "vhost-user";
  BackendOptions backend = {};
  // Readable → stop serving (e.g. an eventfd written by a signal handler).
  int stop_fd = -1;
  // Mid-message stall limit.
  int message_timeout_ms = 10000;
};

absl::Status ServeConnection(VhostDevice& device, UniqueFd connection,
                             const ServeOptions& options);

struct DaemonOptions {
  ServeOptions serve;
  // Server mode: listen here. Client mode: connect here (retrying until
  // the front-end listens).
  std::string socket_path;
  bool client = false;
  // Stop after this many connections (0: never); for tests.
  int max_connections = 0;
};

// Serves connection after connection until `stop_fd` fires. Server mode
// creates the socket (0600) and unlinks it on return.
absl::Status RunDaemon(VhostDevice& device, const DaemonOptions& options);

}  // namespace vhost_user

#endif  // VHOST_USER_SERVER_H_
