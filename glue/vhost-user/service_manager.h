// vhost-user/service_manager.h — what a service manager (systemd) hands the
// vhost-user-device daemon, and what the daemon tells it back, without
// linking libsystemd: socket activation (sd_listen_fds(3)'s LISTEN_PID /
// LISTEN_FDS / LISTEN_FDNAMES) and readiness notification (sd_notify(3)'s
// NOTIFY_SOCKET datagrams). Both are small, stable protocols; a library
// dependency for a dozen lines is not worth it.
#ifndef VHOST_USER_SERVICE_MANAGER_H_
#define VHOST_USER_SERVICE_MANAGER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vhost_user {

// One socket a service manager passed (socket activation).
struct ActivatedSocket {
  int fd = -1;
  std::string name = {};  // from LISTEN_FDNAMES; empty when not given
};

// The sockets passed to this process by socket activation: fds 3, 4, ...
// when LISTEN_PID is this process and LISTEN_FDS > 0; none otherwise. The
// variables are removed from the environment (so that a child does not
// take them for its own) and the fds marked close-on-exec. An error when
// the variables are malformed or an fd is not a listening stream socket.
absl::StatusOr<std::vector<ActivatedSocket>> TakeActivatedSockets();

// Sends `state` ("READY=1", "STOPPING=1", "STATUS=...") to the service
// manager at NOTIFY_SOCKET; does nothing when it is not set (not started
// by a manager that wants to hear). An error when it is set but the
// message cannot be sent: the manager would wait for readiness forever.
absl::Status NotifyServiceManager(std::string_view state);

// Checks that `fd` is an open, listening Unix stream socket (what --fd and
// socket activation hand over), and marks it close-on-exec. `what` names
// it in the error ("--fd=5", "LISTEN_FDS socket 3").
absl::Status CheckListeningSocket(int fd, std::string_view what);

}  // namespace vhost_user

#endif  // VHOST_USER_SERVICE_MANAGER_H_
