// virtio/backends/console_backends.h — ConsoleBackends for virtio-console
// ports: the host's stdio, a pseudo-terminal, a Unix socket, and an
// output-only file.
//
// All are non-blocking (their fds are switched to O_NONBLOCK) and follow the
// pacing contract of console_backend.h: when the sink cannot take bytes now,
// Write() returns fewer (or 0) and the device retries when Poll()'s fd is
// writable. The only bytes ever dropped are those written while nobody is
// connected (a pty whose terminal was closed, a socket without a client;
// `drop_when_disconnected`, the default, so a guest's console never stalls
// on an absent reader — as QEMU's chardevs behave) or after an I/O error on
// the sink; they are counted in discarded_bytes() and logged (once per
// episode), never dropped silently.
//
// The glue should ignore SIGPIPE: StdioConsoleBackend writes to stdout with
// writev(2), which raises it if stdout is a closed pipe. (Sockets use
// MSG_NOSIGNAL.)
//
// Example (hvc0 on a pty, printed at startup):
//   auto pty = virtio::PtyConsoleBackend::Create({});
//   if (!pty.ok()) return pty.status();   // logs "... pty at /dev/pts/N"
//   auto dev = virtio::ConsoleDevice<Traits, virtio::PtyConsoleBackend>::
//       Create(memory, irq, {pty->get()}, {});
#ifndef VIRTIO_BACKENDS_CONSOLE_BACKENDS_H_
#define VIRTIO_BACKENDS_CONSOLE_BACKENDS_H_

#include <sys/uio.h>
#include <termios.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "virtio/console_backend.h"

namespace virtio {

// --- stdio --------------------------------------------------------------------
struct StdioConsoleOptions {
  int in_fd = 0;   // -1: no input
  int out_fd = 1;
  // If in_fd is a terminal, put it in raw mode (no echo, no line editing,
  // no signals from ^C) while the backend exists.
  bool raw = true;
};

class StdioConsoleBackend {
 public:
  static absl::StatusOr<std::unique_ptr<StdioConsoleBackend>> Create(
      const StdioConsoleOptions& options);
  ~StdioConsoleBackend();
  StdioConsoleBackend(const StdioConsoleBackend&) = delete;
  StdioConsoleBackend& operator=(const StdioConsoleBackend&) = delete;

  size_t Write(absl::Span<const iovec> iov);
  size_t Read(absl::Span<const iovec> iov);
  ConsolePollSet Poll(bool want_input, bool want_output);
  void Service() {}
  bool connected() const { return true; }
  void SetGuestOpen(bool) {}
  // The terminal size of out_fd (or in_fd), if either is a terminal.
  std::optional<ConsoleSize> size();

  bool input_eof() const { return input_eof_; }
  uint64_t discarded_bytes() const { return discarded_; }

 private:
  explicit StdioConsoleBackend(const StdioConsoleOptions& options)
      : options_(options) {}

  StdioConsoleOptions options_;
  int in_flags_ = -1, out_flags_ = -1;  // original file status flags
  std::optional<termios> saved_termios_;
  bool input_eof_ = false;
  bool out_failed_ = false;
  uint64_t discarded_ = 0;
};
static_assert(ConsoleBackend<StdioConsoleBackend>);

// --- pty ------------------------------------------------------------------------
struct PtyConsoleOptions {
  // Discard output while the terminal side is closed (after someone opened
  // and closed it); false: pace the guest until it is opened again.
  bool drop_when_disconnected = true;
  // Log the slave's path at kInfo when created.
  bool print_path = true;
  // How often to check whether a closed terminal side was reopened (no fd
  // reports it).
  int recheck_ms = 500;
};

// A pseudo-terminal master (posix_openpt) in raw mode; users attach to
// path() (e.g. `screen /dev/pts/N`). Until its slave is first opened a
// pty buffers output (a few KiB) and then paces the guest, like QEMU's pty
// chardev; after the last opener closes it, connected() turns false.
class PtyConsoleBackend {
 public:
  static absl::StatusOr<std::unique_ptr<PtyConsoleBackend>> Create(
      const PtyConsoleOptions& options);
  ~PtyConsoleBackend();
  PtyConsoleBackend(const PtyConsoleBackend&) = delete;
  PtyConsoleBackend& operator=(const PtyConsoleBackend&) = delete;

  size_t Write(absl::Span<const iovec> iov);
  size_t Read(absl::Span<const iovec> iov);
  ConsolePollSet Poll(bool want_input, bool want_output);
  void Service();
  bool connected() const { return !hup_; }
  void SetGuestOpen(bool) {}
  std::optional<ConsoleSize> size();

  // The slave device, e.g. "/dev/pts/3".
  const std::string& path() const { return path_; }
  int master_fd() const { return master_; }
  uint64_t discarded_bytes() const { return discarded_; }

 private:
  PtyConsoleBackend(const PtyConsoleOptions& options, int master,
                    std::string path)
      : options_(options), master_(master), path_(std::move(path)) {}
  void SetHangup(bool hup);

  PtyConsoleOptions options_;
  int master_;
  std::string path_;
  bool hup_ = false;
  bool logged_drop_ = false;
  uint64_t discarded_ = 0;
};
static_assert(ConsoleBackend<PtyConsoleBackend>);

// --- Unix socket --------------------------------------------------------------------
struct SocketConsoleOptions {
  std::string path;
  // Discard output while no client is connected; false: pace the guest
  // until one connects.
  bool drop_when_disconnected = true;
};

// Listens on a Unix stream socket and serves one client at a time; the next
// is accepted after it disconnects. connected() is true while a client is
// attached. The socket file is removed on destruction.
class SocketConsoleBackend {
 public:
  static absl::StatusOr<std::unique_ptr<SocketConsoleBackend>> Create(
      const SocketConsoleOptions& options);
  ~SocketConsoleBackend();
  SocketConsoleBackend(const SocketConsoleBackend&) = delete;
  SocketConsoleBackend& operator=(const SocketConsoleBackend&) = delete;

  size_t Write(absl::Span<const iovec> iov);
  size_t Read(absl::Span<const iovec> iov);
  ConsolePollSet Poll(bool want_input, bool want_output);
  void Service();
  bool connected() const { return client_ >= 0; }
  void SetGuestOpen(bool) {}
  std::optional<ConsoleSize> size() { return std::nullopt; }

  const std::string& path() const { return options_.path; }
  uint64_t discarded_bytes() const { return discarded_; }

 private:
  SocketConsoleBackend(const SocketConsoleOptions& options, int listen_fd)
      : options_(options), listen_(listen_fd) {}
  void Disconnect(const char* why);
  size_t Drop(absl::Span<const iovec> iov);

  SocketConsoleOptions options_;
  int listen_;
  int client_ = -1;
  // The peer hung up but unread input remains: read it before closing.
  bool peer_gone_ = false;
  bool logged_drop_ = false;
  uint64_t discarded_ = 0;
};
static_assert(ConsoleBackend<SocketConsoleBackend>);

// --- output-only file ---------------------------------------------------------------
struct FileConsoleOptions {
  std::string path;
  bool append = true;  // false: truncate
};

// Appends guest output to a file (or a FIFO); the guest receives no input.
class FileConsoleBackend {
 public:
  static absl::StatusOr<std::unique_ptr<FileConsoleBackend>> Create(
      const FileConsoleOptions& options);
  ~FileConsoleBackend();
  FileConsoleBackend(const FileConsoleBackend&) = delete;
  FileConsoleBackend& operator=(const FileConsoleBackend&) = delete;

  size_t Write(absl::Span<const iovec> iov);
  size_t Read(absl::Span<const iovec>) { return 0; }
  ConsolePollSet Poll(bool want_input, bool want_output);
  void Service() {}
  bool connected() const { return true; }
  void SetGuestOpen(bool) {}
  std::optional<ConsoleSize> size() { return std::nullopt; }

  uint64_t discarded_bytes() const { return discarded_; }

 private:
  FileConsoleBackend(const FileConsoleOptions& options, int fd)
      : options_(options), fd_(fd) {}

  FileConsoleOptions options_;
  int fd_;
  bool failed_ = false;
  uint64_t discarded_ = 0;
};
static_assert(ConsoleBackend<FileConsoleBackend>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_CONSOLE_BACKENDS_H_
