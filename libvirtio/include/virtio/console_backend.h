// virtio/console_backend.h — where a virtio-console port's bytes go.
//
// ConsoleDevice (console_device.h) serves each port through an object
// satisfying `ConsoleBackend`. Every call is non-blocking:
//
//   * Write(iov): takes bytes the guest transmitted, straight from guest
//     memory. Returns how many it accepted, possibly fewer than offered or
//     0 when it cannot take more now (pacing). The device keeps the rest of
//     the chain in flight and offers it again once Poll()'s fds say the
//     backend is writable; it never drops bytes. A backend that drops bytes
//     on purpose (nobody is connected, the sink failed) returns the full
//     length and counts what it dropped — it must never do so silently.
//   * Read(iov): copies host input into the guest's receive buffer; returns
//     the byte count, 0 if no input is available now.
//   * Poll(want_input, want_output): the fds (and events) the glue should
//     wait on, and a timeout after which to call ServiceBackend() anyway
//     (for backends that must recheck a state no fd reports, e.g. a pty
//     nobody has open). The fds may change from call to call (a listening
//     socket, then the accepted client); ask again after every service.
//   * Service(): called after any of those fds fired or the timeout passed:
//     accept a client, notice a hangup, re-read the terminal size.
//   * connected(): whether the host side of the port is open (a client is
//     attached). The device reports changes to a multiport guest as
//     PORT_OPEN messages.
//   * SetGuestOpen(open): the guest opened or closed the port.
//   * size(): the terminal size for a console port, if the backend knows it.
//
// Backends: virtio/backends/console_backends.h (stdio, pty, Unix socket,
// output-only file). Tests bring their own (an in-memory one with limited
// capacity for pacing tests).
#ifndef VIRTIO_CONSOLE_BACKEND_H_
#define VIRTIO_CONSOLE_BACKEND_H_

#include <sys/uio.h>

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/types/span.h"

namespace virtio {

// One fd for the glue to poll(2), with POLLIN/POLLOUT events. fd -1: unused.
struct ConsolePoll {
  int fd = -1;
  short events = 0;
};

// What to wait for on behalf of one port.
struct ConsolePollSet {
  std::array<ConsolePoll, 2> fds{};
  // Call ServiceBackend() after this many milliseconds even without an
  // event; -1: no timeout.
  int timeout_ms = -1;
};

// A terminal size, in character cells.
struct ConsoleSize {
  uint16_t cols = 0;
  uint16_t rows = 0;
  bool operator==(const ConsoleSize&) const = default;
};

template <typename B>
concept ConsoleBackend = requires(B& b, const B& cb,
                                  absl::Span<const iovec> iov, bool flag) {
  { b.Write(iov) } -> std::same_as<size_t>;
  { b.Read(iov) } -> std::same_as<size_t>;
  { b.Poll(flag, flag) } -> std::same_as<ConsolePollSet>;
  { b.Service() } -> std::same_as<void>;
  { cb.connected() } -> std::same_as<bool>;
  { b.SetGuestOpen(flag) } -> std::same_as<void>;
  { b.size() } -> std::same_as<std::optional<ConsoleSize>>;
};

}  // namespace virtio

#endif  // VIRTIO_CONSOLE_BACKEND_H_
