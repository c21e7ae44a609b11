// vhost-user/control_server.h — vhost-user-device's control socket
// (--control-socket PATH) and its client (--query).
//
// Protocol: a client connects, sends one command line (at most 256 bytes,
// ended by a newline or by shutting down its write side), and reads one
// JSON document ended by a newline; then the daemon closes the connection.
// A reply that is an error is an object whose first member is "error"
// (`{"error":"..."}`), so that a client needs no JSON parser to tell.
//
// The server runs on its own thread, off the data path: commands read
// counters the queues keep anyway (relaxed atomics) and take no lock the
// queues take. The same thread runs the handler for a hang-up signal
// (SIGHUP: resize), so that resizes never run concurrently.
#ifndef VHOST_USER_CONTROL_SERVER_H_
#define VHOST_USER_CONTROL_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user {

// Answers one command (the line without its newline and surrounding
// blanks) with one JSON document.
using ControlHandler = std::function<std::string(absl::string_view command)>;

// The control socket's thread (see the top of this file).
class ControlServer {
 public:
  // Serves `listener` (a listening Unix socket; may be empty: no socket)
  // with `handler`, and calls `on_hangup` on the same thread whenever
  // `hangup_fd` (an eventfd, drained; -1: none) becomes readable.
  static absl::StatusOr<std::unique_ptr<ControlServer>> Start(
      UniqueFd listener, ControlHandler handler, int hangup_fd,
      std::function<void()> on_hangup);
  // Stops and joins the thread; closes the listener (the caller removes
  // the socket file).
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  ControlServer() = default;
  void Run();
  void Answer(int connection);

  UniqueFd listener_;
  UniqueFd stop_;
  int hangup_fd_ = -1;
  ControlHandler handler_;
  std::function<void()> on_hangup_;
  std::thread thread_;
};

// `{"error":"<message>"}`, escaped.
std::string ControlError(absl::string_view message);

// The client side: connects to the control socket at `path`, sends
// `command` and returns the reply (without its newline). Unavailable when
// nothing listens there, DeadlineExceeded after 10 s without a reply; the
// daemon's error replies are returned as they are (see IsControlError()).
absl::StatusOr<std::string> QueryControlSocket(const std::string& path,
                                               absl::string_view command);

// True if `reply` is an error reply (see the top of this file).
bool IsControlError(absl::string_view reply);

}  // namespace vhost_user

#endif  // VHOST_USER_CONTROL_SERVER_H_
