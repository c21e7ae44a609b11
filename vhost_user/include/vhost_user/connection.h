// vhost_user/connection.h — the Unix socket a front-end and back-end talk
// over: listening (server mode, the socket file created 0600) or connecting
// (client mode), and whole messages in and out with their SCM_RIGHTS fds.
//
// Receive() reads exactly one message: the 12-byte header, then at most
// kMaxPayload payload bytes; every fd that arrives with it is owned by the
// returned Message (and closed with it). More than kMaxFds fds, a payload
// size above kMaxPayload or a stall in the middle of a message (SO_RCVTIMEO)
// is an error; the caller then closes the connection.
#ifndef VHOST_USER_CONNECTION_H_
#define VHOST_USER_CONNECTION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vhost_user/message.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user {

// Creates a listening Unix socket at `path` with mode 0600. A stale socket
// file nobody listens on is replaced; any other existing file is an error.
absl::StatusOr<UniqueFd> Listen(const std::string& path);
// Accepts one connection (blocking).
absl::StatusOr<UniqueFd> Accept(int listen_fd);
// Connects to a front-end listening at `path` (client mode).
absl::StatusOr<UniqueFd> Connect(const std::string& path);

// True for the status Receive() returns when the peer closed the socket
// cleanly between messages.
bool IsPeerClosed(const absl::Status& s);

// A connected vhost-user socket, either side: whole messages in and out,
// with the fds that travel with them.
class Connection {
 public:
  // Takes `fd`, a connected stream socket. Mid-message stalls longer than
  // `timeout_ms` are errors.
  explicit Connection(UniqueFd fd, int timeout_ms = 10000);

  int fd() const { return fd_.get(); }

  absl::StatusOr<Message> Receive();
  // Sends `m` (header + payload) with `fds` attached.
  absl::Status Send(const Message& m, absl::Span<const int> fds = {});

 private:
  // Reads exactly `len` bytes into `buf`, collecting fds into `fds`.
  absl::Status ReadFull(void* buf, size_t len, std::vector<UniqueFd>& fds,
                        bool at_boundary);

  UniqueFd fd_;
};

// Sends one message on a raw socket (e.g. the back-end request channel).
absl::Status SendMessage(int fd, const Message& m,
                         absl::Span<const int> fds = {});

}  // namespace vhost_user

#endif  // VHOST_USER_CONNECTION_H_
