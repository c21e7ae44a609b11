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

#include "absl/strings/str_format.h"
#include "slots.h"
#include "virtio/catalog/backend_opener.h"
#include "virtio/console_device.h"

namespace kvmglue {
namespace slots {
namespace {

using virtio::catalog::AnyConsoleBackend;

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
  virtio::ConsoleOptions options{.ring = {.packed = spec.device.packed},
                                 .name = spec.id};
  if (spec.device.queue_size) options.queue_size = *spec.device.queue_size;
  return [&backend, options](const virtio::GuestMemoryMap& mem,
                             typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<Console<Traits>>> {
    return Console<Traits>::Create(mem, irq, {&backend}, options);
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
  absl::StatusOr<std::unique_ptr<AnyConsoleBackend>> b =
      virtio::catalog::OpenConsoleBackend(spec.device.console);
  if (!b.ok()) return b.status();
  std::shared_ptr<AnyConsoleBackend> backend(*std::move(b));
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
