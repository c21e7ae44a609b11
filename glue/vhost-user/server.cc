#include "server.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "connection.h"
#include "virtio/log.h"

namespace vhost_user {
namespace {

constexpr uint64_t kTagSocket = uint64_t{1} << 32;
constexpr uint64_t kTagStop = uint64_t{2} << 32;
constexpr uint64_t kTagKick = uint64_t{3} << 32;
constexpr uint64_t kTagDone = uint64_t{4} << 32;
constexpr uint64_t kTagMask = ~uint64_t{0xffffffff};

bool Watch(int ep, int fd, uint64_t tag) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag;
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void Drain(int fd) {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(fd, &v, sizeof v);
}

}  // namespace

absl::Status ServeConnection(VhostDevice& dev, UniqueFd connection,
                             const ServeOptions& o) {
  Connection conn(std::move(connection), o.message_timeout_ms);
  Backend backend(dev, o.backend);
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return absl::InternalError("epoll_create1 failed");
  if (!Watch(ep.get(), conn.fd(), kTagSocket) ||
      (o.stop_fd >= 0 && !Watch(ep.get(), o.stop_fd, kTagStop))) {
    return absl::InternalError("epoll_ctl failed");
  }
  std::vector<int> watched;
  uint64_t generation = ~uint64_t{0};
  absl::Status result;
  const uint16_t nq = dev.num_queues();
  bool done = false;
  while (!done) {
    if (backend.generation() != generation) {
      generation = backend.generation();
      for (int fd : watched) epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
      watched.clear();
      for (uint16_t q = 0; q < nq && result.ok(); ++q) {
        if (const int k = backend.kick_fd(q); k >= 0) {
          if (!Watch(ep.get(), k, kTagKick | q)) {
            result = absl::InvalidArgumentError(absl::StrFormat(
                "the kick fd of queue %u cannot be polled: %s", q,
                std::strerror(errno)));
            break;
          }
          watched.push_back(k);
        }
        if (const int c = dev.completion_fd(q); c >= 0) {
          if (Watch(ep.get(), c, kTagDone | q)) watched.push_back(c);
        }
      }
      if (!result.ok()) {
        virtio::Logf(virtio::LogLevel::kError,
                     "%s: protocol error, closing the connection: %s", o.name,
                     result.message());
        break;
      }
    }
    int timeout = -1;
    bool any_polled = false;
    for (uint16_t q = 0; q < nq; ++q) any_polled |= backend.polled(q);
    if (any_polled) timeout = 1;
    if (auto retry = dev.RetryAfter()) {
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*retry);
      const int t = static_cast<int>(std::clamp<int64_t>(ms.count(), 0, 1000));
      timeout = timeout < 0 ? t : std::min(timeout, t);
    }
    epoll_event events[64];
    const int n = epoll_wait(ep.get(), events, 64, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      result = absl::InternalError(
          absl::StrFormat("epoll_wait: %s", std::strerror(errno)));
      break;
    }
    if (n == 0) {
      // Rings without a kick fd, and rate-limited devices, are polled.
      for (uint16_t q = 0; q < nq; ++q) {
        if (backend.polled(q) || (dev.RetryAfter() && dev.queue_running(q))) {
          dev.Kick(q);
        }
      }
      continue;
    }
    // Data path first: a message handled below may close these fds.
    bool socket_ready = false;
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64 & kTagMask;
      const uint16_t q = static_cast<uint16_t>(events[i].data.u64);
      if (tag == kTagKick) {
        const int k = backend.kick_fd(q);
        if (k >= 0) {
          Drain(k);
          dev.Kick(q);
        }
      } else if (tag == kTagDone) {
        dev.Complete(q);
      } else if (tag == kTagSocket) {
        socket_ready = true;
      } else if (tag == kTagStop) {
        result = absl::CancelledError("stopped");
        done = true;
      }
    }
    if (done || !socket_ready) continue;
    absl::StatusOr<Message> m = conn.Receive();
    if (!m.ok()) {
      if (IsPeerClosed(m.status())) {
        virtio::Logf(virtio::LogLevel::kInfo, "%s: front-end disconnected",
                     o.name);
      } else {
        result = m.status();
        virtio::Logf(virtio::LogLevel::kError,
                     "%s: protocol error, closing the connection: %s", o.name,
                     result.message());
      }
      break;
    }
    // Handling may close kick fds: unregister them while they are still
    // open (epoll keys registrations by open file, which the front-end
    // keeps alive), and register the current set afterwards.
    for (int fd : watched) epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
    watched.clear();
    generation = ~uint64_t{0};
    std::optional<Message> reply;
    const uint32_t request = m->request();
    absl::Status s = backend.Handle(*std::move(m), &reply);
    if (reply) {
      absl::Status sent = conn.Send(*reply);
      if (!sent.ok() && s.ok()) {
        s = absl::UnavailableError(absl::StrFormat(
            "sending the reply to %s: %s", RequestName(request),
            sent.message()));
      }
    }
    if (!s.ok()) {
      result = s;
      virtio::Logf(virtio::LogLevel::kError,
                   "%s: protocol error, closing the connection: %s", o.name,
                   s.message());
      break;
    }
  }
  for (int fd : watched) epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
  backend.Disconnect();
  return result;
}

absl::Status RunDaemon(VhostDevice& device, const DaemonOptions& o) {
  UniqueFd listener;
  if (!o.client) {
    auto l = Listen(o.socket_path);
    if (!l.ok()) return l.status();
    listener = *std::move(l);
    virtio::Logf(virtio::LogLevel::kInfo, "%s: listening on %s", o.serve.name,
                 o.socket_path);
  }
  absl::Status result;
  int connections = 0;
  bool warned = false;
  for (;;) {
    if (o.max_connections > 0 && connections >= o.max_connections) break;
    // Wait for a connection (server) or retry (client), watching stop_fd.
    pollfd p[2] = {{listener.get(), POLLIN, 0}, {o.serve.stop_fd, POLLIN, 0}};
    const int rc = poll(p, 2, o.client ? (warned ? 1000 : 0) : -1);
    if (rc < 0 && errno != EINTR) {
      result = absl::InternalError(
          absl::StrFormat("poll: %s", std::strerror(errno)));
      break;
    }
    if (p[1].revents & POLLIN) break;
    UniqueFd fd;
    if (o.client) {
      auto c = Connect(o.socket_path);
      if (!c.ok()) {
        if (!warned) {
          virtio::Logf(virtio::LogLevel::kInfo,
                       "%s: %s; retrying every second", o.serve.name,
                       c.status().message());
          warned = true;
        }
        continue;
      }
      warned = false;
      fd = *std::move(c);
    } else {
      if (!(p[0].revents & POLLIN)) continue;
      auto a = Accept(listener.get());
      if (!a.ok()) {
        virtio::Logf(virtio::LogLevel::kError, "%s: %s", o.serve.name,
                     a.status().message());
        continue;
      }
      fd = *std::move(a);
    }
    ++connections;
    virtio::Logf(virtio::LogLevel::kInfo, "%s: front-end connected (#%d)",
                 o.serve.name, connections);
    absl::Status s = ServeConnection(device, std::move(fd), o.serve);
    if (absl::IsCancelled(s)) break;
    virtio::Logf(virtio::LogLevel::kInfo,
                 "%s: connection #%d closed%s; waiting for the next one",
                 o.serve.name, connections, s.ok() ? "" : " after an error");
  }
  if (!o.client) unlink(o.socket_path.c_str());
  return result;
}

}  // namespace vhost_user
