// glue/kvm/devices_console.cc — virtio-console (single port) on the stdio,
// pty, Unix-socket or file backend.
//
// Kicks come through the slot's ioeventfds. The backend side runs on a
// small pump thread per console: poll(2) on what ConsoleDevice::BackendPoll
// asks for plus its wakeup_fd(), then ServiceBackend(0) under the slot's
// mutex. (The fds a console backend wants change over time — a socket
// listens, then serves a client — so they are not static epoll entries.)
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <variant>

#include "absl/strings/str_format.h"
#include "slots.h"
#include "virtio/backends/console_backends.h"
#include "virtio/console_device.h"

namespace kvmglue {
namespace slots {
namespace {

// One ConsoleBackend over the four concrete ones, so the device and its
// transports are instantiated once per transport, not once per backend.
class AnyConsoleBackend {
 public:
  using Variant = std::variant<std::unique_ptr<virtio::StdioConsoleBackend>,
                               std::unique_ptr<virtio::PtyConsoleBackend>,
                               std::unique_ptr<virtio::SocketConsoleBackend>,
                               std::unique_ptr<virtio::FileConsoleBackend>>;
  explicit AnyConsoleBackend(Variant b) : b_(std::move(b)) {}

  size_t Write(absl::Span<const iovec> iov) {
    return std::visit([&](auto& b) { return b->Write(iov); }, b_);
  }
  size_t Read(absl::Span<const iovec> iov) {
    return std::visit([&](auto& b) { return b->Read(iov); }, b_);
  }
  virtio::ConsolePollSet Poll(bool in, bool out) {
    return std::visit([&](auto& b) { return b->Poll(in, out); }, b_);
  }
  void Service() {
    std::visit([](auto& b) { b->Service(); }, b_);
  }
  bool connected() const {
    return std::visit([](const auto& b) { return b->connected(); }, b_);
  }
  void SetGuestOpen(bool open) {
    std::visit([&](auto& b) { b->SetGuestOpen(open); }, b_);
  }
  std::optional<virtio::ConsoleSize> size() {
    return std::visit([](auto& b) { return b->size(); }, b_);
  }

 private:
  Variant b_;
};
static_assert(virtio::ConsoleBackend<AnyConsoleBackend>);

absl::StatusOr<AnyConsoleBackend::Variant> OpenBackend(const DeviceSpec& spec) {
  auto wrap = [](auto s) -> absl::StatusOr<AnyConsoleBackend::Variant> {
    if (!s.ok()) return s.status();
    return AnyConsoleBackend::Variant(*std::move(s));
  };
  if (spec.backend == "pty") return wrap(virtio::PtyConsoleBackend::Create({}));
  if (spec.backend == "socket") {
    return wrap(virtio::SocketConsoleBackend::Create({.path = spec.path}));
  }
  if (spec.backend == "file") {
    return wrap(virtio::FileConsoleBackend::Create({.path = spec.path}));
  }
  return wrap(virtio::StdioConsoleBackend::Create({}));
}

template <typename Dev>
class ConsolePump final : public Worker {
 public:
  ConsolePump(Dev& dev, std::mutex& mu)
      : dev_(dev), mu_(mu), stop_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~ConsolePump() override {
    (void)eventfd_write(stop_fd_, 1);
    thread_.join();
    close(stop_fd_);
  }

 private:
  void Loop() {
    for (;;) {
      virtio::ConsolePollSet set;
      {
        std::lock_guard<std::mutex> lock(mu_);
        set = dev_.BackendPoll(0);
      }
      pollfd fds[4] = {{stop_fd_, POLLIN, 0}, {dev_.wakeup_fd(), POLLIN, 0}};
      nfds_t n = 2;
      for (const virtio::ConsolePoll& p : set.fds) {
        if (p.fd >= 0) fds[n++] = {p.fd, p.events, 0};
      }
      const int r = poll(fds, n, set.timeout_ms);
      if (r < 0 && errno != EINTR) return;
      if (fds[0].revents) return;
      if (fds[1].revents) {
        eventfd_t v;
        (void)eventfd_read(dev_.wakeup_fd(), &v);
      }
      std::lock_guard<std::mutex> lock(mu_);
      dev_.ServiceBackend(0);
    }
  }

  Dev& dev_;
  std::mutex& mu_;
  int stop_fd_;
  std::thread thread_;
};

template <typename Traits>
using Console = virtio::ConsoleDevice<Traits, AnyConsoleBackend>;

template <typename Traits>
Factory<typename Traits::Interrupt, Console<Traits>> ConsoleFactory(
    const DeviceSpec& spec, AnyConsoleBackend& backend) {
  return [&backend, name = spec.id, packed = spec.packed](
             const virtio::GuestMemoryMap& mem,
             typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<Console<Traits>>> {
    return Console<Traits>::Create(
        mem, irq, {&backend},
        virtio::ConsoleOptions{.ring = {.packed = packed}, .name = name});
  };
}

template <typename Dev>
BackendStart<Dev> ConsoleStart() {
  return [](Dev& dev, IoThread&, std::mutex& mu)
             -> absl::StatusOr<std::unique_ptr<Worker>> {
    return std::unique_ptr<Worker>(std::make_unique<ConsolePump<Dev>>(dev, mu));
  };
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmmDevice>> CreateConsole(
    const DeviceSpec& spec, const Placement& p, Vm& vm, MsiRouter& router) {
  absl::StatusOr<AnyConsoleBackend::Variant> b = OpenBackend(spec);
  if (!b.ok()) return b.status();
  auto backend = std::make_shared<AnyConsoleBackend>(*std::move(b));
  // Single port: receiveq0, transmitq0.
  constexpr uint16_t kQueues = 2;
  if (p.transport == TransportKind::kMmio) {
    return Make<Console<MmioTraits>>(spec, p, vm, router, backend, kQueues,
                                     ConsoleFactory<MmioTraits>(spec, *backend),
                                     ConsoleStart<Console<MmioTraits>>());
  }
  return Make<Console<PciTraits>>(spec, p, vm, router, backend, kQueues,
                                  ConsoleFactory<PciTraits>(spec, *backend),
                                  ConsoleStart<Console<PciTraits>>());
}

}  // namespace slots
}  // namespace kvmglue
