#include "virtio/backends/console_backends.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "virtio/log.h"

namespace virtio {
namespace {

constexpr int kMaxIov = 1024;  // IOV_MAX on Linux

int IovCount(absl::Span<const iovec> iov) {
  return static_cast<int>(std::min<size_t>(iov.size(), kMaxIov));
}

size_t TotalBytes(absl::Span<const iovec> iov) {
  size_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return n;
}

// Result of one non-blocking transfer: bytes moved, or why nothing moved.
enum class Io { kOk, kAgain, kEof, kError };
struct IoResult {
  Io status;
  size_t bytes;
  int err;
};

IoResult Writev(int fd, absl::Span<const iovec> iov) {
  if (iov.empty()) return {Io::kOk, 0, 0};
  for (;;) {
    const ssize_t n = writev(fd, iov.data(), IovCount(iov));
    if (n >= 0) return {Io::kOk, static_cast<size_t>(n), 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {Io::kAgain, 0, 0};
    return {Io::kError, 0, errno};
  }
}

IoResult Readv(int fd, absl::Span<const iovec> iov) {
  if (iov.empty()) return {Io::kOk, 0, 0};
  for (;;) {
    const ssize_t n = readv(fd, iov.data(), IovCount(iov));
    if (n > 0) return {Io::kOk, static_cast<size_t>(n), 0};
    if (n == 0) return {Io::kEof, 0, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {Io::kAgain, 0, 0};
    return {Io::kError, 0, errno};
  }
}

// Sets O_NONBLOCK; returns the previous flags, or -1.
int SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -1;
  if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return -1;
  }
  return flags;
}

std::optional<ConsoleSize> WindowSize(int fd) {
  winsize ws{};
  if (fd < 0 || ioctl(fd, TIOCGWINSZ, &ws) != 0) return std::nullopt;
  if (ws.ws_col == 0 && ws.ws_row == 0) return std::nullopt;
  return ConsoleSize{ws.ws_col, ws.ws_row};
}

short Events(bool in, bool out) {
  return static_cast<short>((in ? POLLIN : 0) | (out ? POLLOUT : 0));
}

}  // namespace

// --- stdio ----------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<StdioConsoleBackend>> StdioConsoleBackend::Create(
    const StdioConsoleOptions& options) {
  if (options.out_fd < 0) return absl::InvalidArgumentError("no output fd");
  std::unique_ptr<StdioConsoleBackend> b(new StdioConsoleBackend(options));
  b->out_flags_ = SetNonBlocking(options.out_fd);
  if (b->out_flags_ < 0) return absl::ErrnoToStatus(errno, "stdout O_NONBLOCK");
  if (options.in_fd >= 0) {
    b->in_flags_ = SetNonBlocking(options.in_fd);
    if (b->in_flags_ < 0) return absl::ErrnoToStatus(errno, "stdin O_NONBLOCK");
    termios t;
    if (options.raw && isatty(options.in_fd) && tcgetattr(options.in_fd, &t) == 0) {
      b->saved_termios_ = t;
      cfmakeraw(&t);
      // Keep output processing (\n -> \r\n) so host-side logs stay readable.
      t.c_oflag |= OPOST;
      tcsetattr(options.in_fd, TCSANOW, &t);
    }
  } else {
    b->input_eof_ = true;
  }
  return b;
}

StdioConsoleBackend::~StdioConsoleBackend() {
  if (saved_termios_) tcsetattr(options_.in_fd, TCSANOW, &*saved_termios_);
  if (in_flags_ >= 0) fcntl(options_.in_fd, F_SETFL, in_flags_);
  if (out_flags_ >= 0) fcntl(options_.out_fd, F_SETFL, out_flags_);
}

size_t StdioConsoleBackend::Write(absl::Span<const iovec> iov) {
  if (!out_failed_) {
    const IoResult r = Writev(options_.out_fd, iov);
    if (r.status == Io::kOk) return r.bytes;
    if (r.status == Io::kAgain) return 0;
    out_failed_ = true;
    Logf(LogLevel::kError,
         "console stdio: write to fd %d failed (%s); discarding output",
         options_.out_fd, std::strerror(r.err));
  }
  const size_t n = TotalBytes(iov);
  discarded_ += n;
  return n;
}

size_t StdioConsoleBackend::Read(absl::Span<const iovec> iov) {
  if (input_eof_) return 0;
  const IoResult r = Readv(options_.in_fd, iov);
  if (r.status == Io::kOk) return r.bytes;
  if (r.status == Io::kAgain) return 0;
  input_eof_ = true;
  if (r.status == Io::kError) {
    Logf(LogLevel::kWarning, "console stdio: read from fd %d failed (%s)",
         options_.in_fd, std::strerror(r.err));
  }
  return 0;
}

ConsolePollSet StdioConsoleBackend::Poll(bool want_input, bool want_output) {
  ConsolePollSet s;
  if (want_input && !input_eof_) s.fds[0] = {options_.in_fd, POLLIN};
  if (want_output && !out_failed_) s.fds[1] = {options_.out_fd, POLLOUT};
  return s;
}

std::optional<ConsoleSize> StdioConsoleBackend::size() {
  if (auto s = WindowSize(options_.out_fd)) return s;
  return WindowSize(options_.in_fd);
}

// --- pty ------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PtyConsoleBackend>> PtyConsoleBackend::Create(
    const PtyConsoleOptions& options) {
  const int fd = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "posix_openpt");
  char name[128];
  if (grantpt(fd) != 0 || unlockpt(fd) != 0 ||
      ptsname_r(fd, name, sizeof name) != 0) {
    const int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, "grantpt/unlockpt/ptsname");
  }
  // Raw mode for the terminal side: bytes pass unchanged both ways.
  termios t;
  if (tcgetattr(fd, &t) == 0) {
    cfmakeraw(&t);
    tcsetattr(fd, TCSANOW, &t);
  }
  std::unique_ptr<PtyConsoleBackend> b(new PtyConsoleBackend(options, fd, name));
  if (options.print_path) {
    Logf(LogLevel::kInfo, "virtio-console: pty at %s", b->path_);
  }
  return b;
}

PtyConsoleBackend::~PtyConsoleBackend() { close(master_); }

void PtyConsoleBackend::SetHangup(bool hup) {
  if (hup == hup_) return;
  hup_ = hup;
  if (!hup) logged_drop_ = false;
}

void PtyConsoleBackend::Service() {
  pollfd p{master_, POLLIN, 0};
  if (poll(&p, 1, 0) >= 0) SetHangup((p.revents & POLLHUP) != 0);
}

size_t PtyConsoleBackend::Write(absl::Span<const iovec> iov) {
  if (!hup_) {
    const IoResult r = Writev(master_, iov);
    if (r.status == Io::kOk) return r.bytes;
    if (r.status == Io::kAgain) return 0;
    SetHangup(true);  // EIO: the terminal side is closed
  }
  if (!options_.drop_when_disconnected) return 0;
  const size_t n = TotalBytes(iov);
  if (!logged_drop_) {
    logged_drop_ = true;
    Logf(LogLevel::kWarning,
         "virtio-console: %s is not open; discarding output until it is",
         path_);
  }
  discarded_ += n;
  return n;
}

size_t PtyConsoleBackend::Read(absl::Span<const iovec> iov) {
  // Read even after a hangup: what the terminal's last opener wrote before
  // closing it is still there (the master fails with EIO only once it is
  // drained), e.g. `echo line > /dev/pts/N`. Skipping the read left such
  // input stranded until someone opened the terminal again.
  const IoResult r = Readv(master_, iov);
  if (r.status == Io::kOk) return r.bytes;
  if (r.status != Io::kAgain) SetHangup(true);
  return 0;
}

ConsolePollSet PtyConsoleBackend::Poll(bool want_input, bool want_output) {
  ConsolePollSet s;
  if (hup_) {
    // poll() would report POLLHUP at once, forever: recheck on a timer.
    s.timeout_ms = options_.recheck_ms;
    return s;
  }
  // Even with no events requested, a hangup wakes the poller.
  s.fds[0] = {master_, Events(want_input, want_output)};
  return s;
}

std::optional<ConsoleSize> PtyConsoleBackend::size() {
  return WindowSize(master_);
}

// --- Unix socket ----------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SocketConsoleBackend>>
SocketConsoleBackend::Create(const SocketConsoleOptions& options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.path.empty() || options.path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bad socket path \"%s\"", options.path));
  }
  std::memcpy(addr.sun_path, options.path.c_str(), options.path.size() + 1);
  // Replace a stale socket, but never any other kind of file.
  struct stat st;
  if (lstat(options.path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "%s exists and is not a socket", options.path));
    }
    unlink(options.path.c_str());
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(fd, 1) != 0) {
    const int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, absl::StrFormat("bind/listen %s", options.path));
  }
  return std::unique_ptr<SocketConsoleBackend>(
      new SocketConsoleBackend(options, fd));
}

SocketConsoleBackend::~SocketConsoleBackend() {
  if (client_ >= 0) close(client_);
  close(listen_);
  unlink(options_.path.c_str());
}

void SocketConsoleBackend::Disconnect(const char* why) {
  if (client_ < 0) return;
  Logf(LogLevel::kInfo, "virtio-console: client of %s disconnected (%s)",
       options_.path, why);
  close(client_);
  client_ = -1;
  peer_gone_ = false;
}

void SocketConsoleBackend::Service() {
  if (client_ < 0) {
    const int fd = accept4(listen_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      client_ = fd;
      logged_drop_ = false;
      Logf(LogLevel::kInfo, "virtio-console: client connected to %s",
           options_.path);
    }
    return;
  }
  pollfd p{client_, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return;
  if (p.revents & (POLLERR | POLLNVAL)) {
    Disconnect("socket error");
  } else if (p.revents & POLLHUP) {
    int pending = 0;
    if (ioctl(client_, FIONREAD, &pending) != 0 || pending <= 0) {
      Disconnect("hangup");
    } else {
      peer_gone_ = true;  // deliver what it sent first
    }
  }
}

size_t SocketConsoleBackend::Drop(absl::Span<const iovec> iov) {
  if (!options_.drop_when_disconnected) return 0;
  const size_t n = TotalBytes(iov);
  if (!logged_drop_) {
    logged_drop_ = true;
    Logf(LogLevel::kWarning,
         "virtio-console: no client on %s; discarding output until one "
         "connects",
         options_.path);
  }
  discarded_ += n;
  return n;
}

size_t SocketConsoleBackend::Write(absl::Span<const iovec> iov) {
  if (client_ < 0) return Drop(iov);
  if (iov.empty()) return 0;
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov.data());
  msg.msg_iovlen = static_cast<size_t>(IovCount(iov));
  for (;;) {
    const ssize_t n = sendmsg(client_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    Disconnect(std::strerror(errno));
    return Drop(iov);
  }
}

size_t SocketConsoleBackend::Read(absl::Span<const iovec> iov) {
  if (client_ < 0) return 0;
  const IoResult r = Readv(client_, iov);
  if (r.status == Io::kOk) return r.bytes;
  if (r.status == Io::kAgain) return 0;
  Disconnect(r.status == Io::kEof ? "end of stream" : std::strerror(r.err));
  return 0;
}

ConsolePollSet SocketConsoleBackend::Poll(bool want_input, bool want_output) {
  ConsolePollSet s;
  if (client_ < 0) {
    s.fds[0] = {listen_, POLLIN};
  } else if (peer_gone_ && !want_input) {
    // Unread input from a departed peer: POLLHUP would fire forever until
    // the guest takes it; look again later instead.
    s.timeout_ms = 100;
  } else {
    s.fds[0] = {client_, Events(want_input, want_output)};
  }
  return s;
}

// --- file --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<FileConsoleBackend>> FileConsoleBackend::Create(
    const FileConsoleOptions& options) {
  const int fd = open(options.path.c_str(),
                      O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK |
                          (options.append ? O_APPEND : O_TRUNC),
                      0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrFormat("open %s", options.path));
  return std::unique_ptr<FileConsoleBackend>(new FileConsoleBackend(options, fd));
}

FileConsoleBackend::~FileConsoleBackend() { close(fd_); }

size_t FileConsoleBackend::Write(absl::Span<const iovec> iov) {
  if (!failed_) {
    const IoResult r = Writev(fd_, iov);
    if (r.status == Io::kOk) return r.bytes;
    if (r.status == Io::kAgain) return 0;  // a FIFO whose reader is slow
    failed_ = true;
    Logf(LogLevel::kError,
         "virtio-console: writing %s failed (%s); discarding output",
         options_.path, std::strerror(r.err));
  }
  const size_t n = TotalBytes(iov);
  discarded_ += n;
  return n;
}

ConsolePollSet FileConsoleBackend::Poll(bool, bool want_output) {
  ConsolePollSet s;
  if (want_output && !failed_) s.fds[0] = {fd_, POLLOUT};
  return s;
}

}  // namespace virtio
