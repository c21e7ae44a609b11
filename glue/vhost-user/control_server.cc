#include "control_server.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string_view>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "json_writer.h"
#include "virtio/log.h"

namespace vhost_user {
namespace {

constexpr size_t kMaxCommand = 256;
// A client that connects and says nothing must not hold the thread.
constexpr int kClientTimeoutMs = 2000;
// How long --query waits for the daemon's reply.
constexpr int kQueryTimeoutSeconds = 10;

void DrainEventFd(int fd) {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(fd, &v, sizeof v);
}

bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads until a newline, end of stream or `limit` bytes; false on a
// timeout or error.
bool ReadLine(int fd, std::string& line, size_t limit) {
  char buf[128];
  while (line.size() <= limit) {
    pollfd p{fd, POLLIN, 0};
    const int rc = poll(&p, 1, kClientTimeoutMs);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return false;
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    line.append(buf, static_cast<size_t>(n));
    const size_t nl = line.find('\n');
    if (nl != std::string::npos) {
      line.resize(nl);
      return true;
    }
  }
  return true;
}

}  // namespace

std::string ControlError(absl::string_view message) {
  JsonWriter j;
  j.BeginObject();
  j.FieldString("error", std::string_view(message.data(), message.size()));
  j.EndObject();
  return j.str();
}

bool IsControlError(absl::string_view reply) {
  return absl::StartsWith(reply, "{\"error\":");
}

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Start(
    UniqueFd listener, ControlHandler handler, int hangup_fd,
    std::function<void()> on_hangup) {
  std::unique_ptr<ControlServer> s(new ControlServer());
  s->stop_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (s->stop_.get() < 0) {
    return absl::InternalError(
        absl::StrFormat("eventfd: %s", std::strerror(errno)));
  }
  s->listener_ = std::move(listener);
  s->handler_ = std::move(handler);
  s->hangup_fd_ = hangup_fd;
  s->on_hangup_ = std::move(on_hangup);
  ControlServer* raw = s.get();
  s->thread_ = std::thread([raw] { raw->Run(); });
  return s;
}

ControlServer::~ControlServer() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void ControlServer::Run() {
  for (;;) {
    pollfd p[3] = {{stop_.get(), POLLIN, 0},
                   {listener_.get(), POLLIN, 0},
                   {hangup_fd_, POLLIN, 0}};
    const int rc = poll(p, 3, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      virtio::Logf(virtio::LogLevel::kError, "control socket: poll: %s",
                   std::strerror(errno));
      return;
    }
    if (p[0].revents & POLLIN) return;
    if (p[2].revents & POLLIN) {
      DrainEventFd(hangup_fd_);
      if (on_hangup_) on_hangup_();
    }
    if (p[1].revents & POLLIN) {
      const int c = accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      UniqueFd connection(c);
      Answer(connection.get());
    }
  }
}

void ControlServer::Answer(int connection) {
  std::string line;
  std::string reply;
  if (!ReadLine(connection, line, kMaxCommand)) {
    reply = ControlError("no command received");
  } else if (line.size() > kMaxCommand) {
    reply = ControlError("command too long");
  } else {
    reply = handler_(absl::StripAsciiWhitespace(line));
  }
  reply += '\n';
  WriteAll(connection, reply);
}

absl::StatusOr<std::string> QueryControlSocket(const std::string& path,
                                               absl::string_view command) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    return absl::InternalError(
        absl::StrFormat("socket: %s", std::strerror(errno)));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(
        absl::StrFormat("control socket path too long: %s", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr),
              sizeof addr) != 0) {
    return absl::UnavailableError(
        absl::StrFormat("cannot connect to the control socket %s: %s (is "
                        "vhost-user-device running with --control-socket?)",
                        path, std::strerror(errno)));
  }
  // A daemon that never answers must not hang the caller (a script).
  const timeval limit{.tv_sec = kQueryTimeoutSeconds, .tv_usec = 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  std::string request(command.data(), command.size());
  request += '\n';
  if (!WriteAll(fd.get(), request)) {
    return absl::UnavailableError(
        absl::StrFormat("sending to %s: %s", path, std::strerror(errno)));
  }
  std::string reply;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s: no reply within %d s", path, kQueryTimeoutSeconds));
    }
    if (n < 0) {
      return absl::UnavailableError(
          absl::StrFormat("reading from %s: %s", path, std::strerror(errno)));
    }
    if (n == 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  if (!reply.empty() && reply.back() == '\n') reply.pop_back();
  if (reply.empty()) {
    return absl::UnavailableError(
        absl::StrFormat("%s closed the connection without a reply", path));
  }
  return reply;
}

}  // namespace vhost_user
