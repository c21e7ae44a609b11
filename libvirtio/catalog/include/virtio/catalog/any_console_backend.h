// virtio/catalog/any_console_backend.h — one ConsoleBackend over the four
// bundled ones (stdio, pty, Unix socket, file), so a glue instantiates
// ConsoleDevice once per transport rather than once per backend type.
//
//   absl::StatusOr<std::unique_ptr<AnyConsoleBackend>> backend =
//       OpenConsoleBackend(spec.console);           // backend_opener.h
//   ConsoleDevice<Traits, AnyConsoleBackend>::Create(mem, irq,
//                                                    {backend->get()}, ...);
//
// Each call is forwarded to the backend held; it adds no state of its own.
#ifndef VIRTIO_CATALOG_ANY_CONSOLE_BACKEND_H_
#define VIRTIO_CATALOG_ANY_CONSOLE_BACKEND_H_

#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <utility>
#include <variant>

#include "absl/types/span.h"
#include "virtio/backends/console_backends.h"
#include "virtio/console_backend.h"

namespace virtio::catalog {

class AnyConsoleBackend {
 public:
  using Variant = std::variant<std::unique_ptr<StdioConsoleBackend>,
                               std::unique_ptr<PtyConsoleBackend>,
                               std::unique_ptr<SocketConsoleBackend>,
                               std::unique_ptr<FileConsoleBackend>>;
  explicit AnyConsoleBackend(Variant backend) : backend_(std::move(backend)) {}

  size_t Write(absl::Span<const iovec> iov) {
    return std::visit([&](auto& b) { return b->Write(iov); }, backend_);
  }
  size_t Read(absl::Span<const iovec> iov) {
    return std::visit([&](auto& b) { return b->Read(iov); }, backend_);
  }
  ConsolePollSet Poll(bool in, bool out) {
    return std::visit([&](auto& b) { return b->Poll(in, out); }, backend_);
  }
  void Service() {
    std::visit([](auto& b) { b->Service(); }, backend_);
  }
  bool connected() const {
    return std::visit([](const auto& b) { return b->connected(); }, backend_);
  }
  void SetGuestOpen(bool open) {
    std::visit([&](auto& b) { b->SetGuestOpen(open); }, backend_);
  }
  std::optional<ConsoleSize> size() {
    return std::visit([](auto& b) { return b->size(); }, backend_);
  }

 private:
  Variant backend_;
};
static_assert(ConsoleBackend<AnyConsoleBackend>);

}  // namespace virtio::catalog

#endif  // VIRTIO_CATALOG_ANY_CONSOLE_BACKEND_H_
