// A vhost-user connection for tests: the test's in-process Frontend on one
// end of a socketpair, ServeConnection() serving the other end on a thread
// of its own, as the daemon serves each front-end.
//
// Shared by the vhost-user tests so that every test drives the back-end the
// same way (the same message timeout, the same shutdown order).
//
// Example:
//   Session s(*device);
//   Negotiate(s.f());            // messages through the Frontend
//   EXPECT_TRUE(s.Finish().ok());  // close, then the back-end's verdict
#ifndef VHOST_USER_TESTS_SESSION_H_
#define VHOST_USER_TESTS_SESSION_H_

#include <sys/socket.h>

#include <future>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "frontend.h"
#include "gtest/gtest.h"
#include "vhost_user/device.h"
#include "vhost_user/server.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user::testing {

// One connection served on a thread.
class Session {
 public:
  // busy_poll, dump_fd and state as in ServeOptions.
  explicit Session(VhostDevice& dev, bool busy_poll = false, int dump_fd = -1,
                   ConnectionState* state = nullptr) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    front_ = std::make_unique<Frontend>(UniqueFd(sv[0]));
    UniqueFd back(sv[1]);
    result_ = std::async(std::launch::async, [&dev, busy_poll, dump_fd, state,
                                              b = std::move(back)]() mutable {
      ServeOptions o;
      // Long enough for a loaded CI machine, short enough that a back-end
      // waiting for a message the test never sends fails the test.
      o.message_timeout_ms = 2000;
      o.busy_poll = busy_poll;
      o.dump_fd = dump_fd;
      o.state = state;
      return ServeConnection(dev, std::move(b), o);
    });
  }
  ~Session() {
    if (front_) front_->Close();
    if (result_.valid()) result_.wait();
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  Frontend& f() { return *front_; }
  // Closes our end and returns how the back-end finished.
  absl::Status Finish() {
    front_->Close();
    return result_.get();
  }
  // Waits for the back-end to give up on its own.
  absl::Status WaitClosed() {
    EXPECT_TRUE(front_->PeerClosed());
    auto s = result_.get();
    front_->Close();
    return s;
  }

 private:
  std::unique_ptr<Frontend> front_;
  std::future<absl::Status> result_;
};

}  // namespace vhost_user::testing

#endif  // VHOST_USER_TESTS_SESSION_H_
