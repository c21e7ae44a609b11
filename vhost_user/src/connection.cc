#include "vhost_user/connection.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_format.h"

namespace vhost_user {
namespace {

constexpr char kPeerClosed[] = "front-end closed the connection";

absl::Status Errno(const std::string& what, int err) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrFormat("%s: %s", what, std::strerror(err)));
}

absl::StatusOr<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "socket path '%s' is empty or longer than %u bytes", path,
        sizeof addr.sun_path - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

bool IsPeerClosed(const absl::Status& s) {
  return absl::IsUnavailable(s) && s.message() == absl::string_view(kPeerClosed);
}

absl::StatusOr<UniqueFd> Listen(const std::string& path) {
  auto addr = Address(path);
  if (!addr.ok()) return addr.status();
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "%s exists and is not a socket; not replacing it", path));
    }
    // A socket file: in use if something accepts connections on it.
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe && connect(probe.get(), reinterpret_cast<sockaddr*>(&*addr),
                         sizeof *addr) == 0) {
      return absl::AlreadyExistsError(
          absl::StrFormat("%s is in use by another process", path));
    }
    unlink(path.c_str());
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Errno("socket", errno);
  // Created 0600 from the start: no window where others could connect.
  const mode_t old_mask = umask(0177);
  const int rc =
      bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr);
  const int err = errno;
  umask(old_mask);
  if (rc != 0) return Errno(absl::StrFormat("bind %s", path), err);
  if (chmod(path.c_str(), 0600) != 0) {
    const int e = errno;
    unlink(path.c_str());
    return Errno(absl::StrFormat("chmod %s", path), e);
  }
  if (listen(fd.get(), 1) != 0) {
    const int e = errno;
    unlink(path.c_str());
    return Errno("listen", e);
  }
  return fd;
}

absl::StatusOr<UniqueFd> Accept(int listen_fd) {
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return Errno("accept", errno);
  }
}

absl::StatusOr<UniqueFd> Connect(const std::string& path) {
  auto addr = Address(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Errno("socket", errno);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) !=
      0) {
    return Errno(absl::StrFormat("connect %s", path), errno);
  }
  return fd;
}

Connection::Connection(UniqueFd fd, int timeout_ms) : fd_(std::move(fd)) {
  timeval tv{.tv_sec = timeout_ms / 1000,
             .tv_usec = static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
  setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

absl::Status Connection::ReadFull(void* buf, size_t len,
                                  std::vector<UniqueFd>& fds,
                                  bool at_boundary) {
  size_t done = 0;
  while (done < len) {
    iovec iov{static_cast<uint8_t*>(buf) + done, len - done};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return absl::DeadlineExceededError(
            "front-end stalled in the middle of a message");
      }
      return Errno("recvmsg", errno);
    }
    // Take ownership of every fd first, so none leaks whatever happens next.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
         c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int f;
        std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
        fds.emplace_back(f);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      return absl::InvalidArgumentError(
          absl::StrFormat("more than %u fds attached to a message", kMaxFds));
    }
    if (fds.size() > kMaxFds) {
      return absl::InvalidArgumentError(
          absl::StrFormat("more than %u fds attached to a message", kMaxFds));
    }
    if (n == 0) {
      if (at_boundary && done == 0) {
        return absl::UnavailableError(std::string(kPeerClosed));
      }
      return absl::DataLossError(absl::StrFormat(
          "front-end closed the connection in the middle of a message "
          "(%u of %u bytes)",
          done, len));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<Message> Connection::Receive() {
  Message m;
  absl::Status s = ReadFull(&m.header, sizeof m.header, m.fds, true);
  if (!s.ok()) return s;
  if (m.header.size > kMaxPayload) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: payload of %u bytes exceeds the maximum %u",
        RequestName(m.header.request), m.header.size, kMaxPayload));
  }
  m.payload.resize(m.header.size);
  if (m.header.size > 0) {
    s = ReadFull(m.payload.data(), m.payload.size(), m.fds, false);
    if (!s.ok()) return s;
  }
  return m;
}

absl::Status SendMessage(int fd, const Message& m, absl::Span<const int> fds) {
  if (fds.size() > kMaxFds) {
    return absl::InvalidArgumentError("too many fds to send");
  }
  Header h = m.header;
  h.size = static_cast<uint32_t>(m.payload.size());
  iovec iov[2] = {{&h, sizeof h},
                  {const_cast<uint8_t*>(m.payload.data()), m.payload.size()}};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = m.payload.empty() ? 1 : 2;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  size_t total = sizeof h + m.payload.size();
  size_t sent = 0;
  while (sent < total) {
    ssize_t n;
    if (sent == 0) {
      n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    } else {
      // The rest of a partial write, without the fds (already sent).
      std::vector<uint8_t> all(total);
      std::memcpy(all.data(), &h, sizeof h);
      if (!m.payload.empty()) {
        std::memcpy(all.data() + sizeof h, m.payload.data(), m.payload.size());
      }
      n = send(fd, all.data() + sent, total - sent, MSG_NOSIGNAL);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("sendmsg", errno);
    }
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status Connection::Send(const Message& m, absl::Span<const int> fds) {
  return SendMessage(fd_.get(), m, fds);
}

}  // namespace vhost_user
