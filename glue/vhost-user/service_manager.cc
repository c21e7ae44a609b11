#include "service_manager.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user {
namespace {

// sd_listen_fds(3): the first passed fd.
constexpr int kFirstActivatedFd = 3;

}  // namespace

absl::Status CheckListeningSocket(int fd, std::string_view what) {
  if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not an open file descriptor", what));
  }
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &len) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not a socket (%s)", what, std::strerror(errno)));
  }
  if (value != AF_UNIX) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: not a Unix socket (address family %d)", what, value));
  }
  len = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &len) != 0 ||
      value != SOCK_STREAM) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not a stream (SOCK_STREAM) socket", what));
  }
  len = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &len) != 0 ||
      value == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: not a listening socket (the caller must bind() and listen() "
        "before passing it)",
        what));
  }
  // Not inherited further: a console backend's child or an exec'd helper
  // must not keep the guest's socket open.
  fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ActivatedSocket>> TakeActivatedSockets() {
  const char* pid_text = getenv("LISTEN_PID");
  const char* fds_text = getenv("LISTEN_FDS");
  const char* names_text = getenv("LISTEN_FDNAMES");
  const std::string pid_value = pid_text != nullptr ? pid_text : "";
  const std::string fds_value = fds_text != nullptr ? fds_text : "";
  const std::string names_value = names_text != nullptr ? names_text : "";
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  std::vector<ActivatedSocket> sockets;
  if (fds_value.empty()) return sockets;
  int pid = 0;
  // Meant for another process (inherited through a wrapper): not ours.
  if (!absl::SimpleAtoi(pid_value, &pid) || pid != getpid()) return sockets;
  int count = 0;
  if (!absl::SimpleAtoi(fds_value, &count) || count < 0 || count > 1024) {
    return absl::InvalidArgumentError(
        absl::StrFormat("LISTEN_FDS=%s is not a number of sockets", fds_value));
  }
  std::vector<std::string> names;
  if (!names_value.empty()) names = absl::StrSplit(names_value, ':');
  for (int i = 0; i < count; ++i) {
    const int fd = kFirstActivatedFd + i;
    absl::Status s = CheckListeningSocket(
        fd, absl::StrFormat("socket activation (LISTEN_FDS) fd %d", fd));
    if (!s.ok()) return s;
    sockets.push_back(
        {.fd = fd, .name = i < static_cast<int>(names.size()) ? names[i] : ""});
  }
  return sockets;
}

absl::Status NotifyServiceManager(std::string_view state) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return absl::OkStatus();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "NOTIFY_SOCKET=%s is neither a socket path nor an abstract name",
        path));
  }
  std::memcpy(addr.sun_path, path, len);
  // '@': a socket in the abstract namespace, named with a leading NUL.
  if (path[0] == '@') addr.sun_path[0] = '\0';
  const auto addr_len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return absl::InternalError(
        absl::StrFormat("NOTIFY_SOCKET: socket: %s", std::strerror(errno)));
  }
  if (sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
             reinterpret_cast<const sockaddr*>(&addr), addr_len) < 0) {
    return absl::UnavailableError(
        absl::StrFormat("telling the service manager %s through "
                        "NOTIFY_SOCKET=%s: %s",
                        state, path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace vhost_user
