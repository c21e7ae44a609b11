// glue/kvm/io_thread.h — the I/O thread of virtio-kvm: one epoll loop that
// services every ioeventfd (queue kicks), backend completion fd and irqfd
// resample fd, so device work never runs on the vCPU thread.
#ifndef LIBVIRTIO_GLUE_KVM_IO_THREAD_H_
#define LIBVIRTIO_GLUE_KVM_IO_THREAD_H_

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace kvmglue {

class IoThread {
 public:
  IoThread()
      : epfd_(epoll_create1(EPOLL_CLOEXEC)), stop_fd_(eventfd(0, EFD_CLOEXEC)) {}
  ~IoThread() {
    Stop();
    for (int fd : owned_) close(fd);
    if (stop_fd_ >= 0) close(stop_fd_);
    if (epfd_ >= 0) close(epfd_);
  }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  // Calls `fn` on the I/O thread each time `fd` becomes readable, after
  // draining its eventfd counter (or not, with drain = false: the callback
  // reads it). Register before Start(). `edge`: EPOLLET, for fds whose
  // readiness the callback may leave pending (a TAP fd while the guest has
  // no receive buffers).
  absl::Status Watch(int fd, std::function<void()> fn, bool drain = true,
                     bool edge = false) {
    handlers_.push_back(std::make_unique<Handler>(Handler{fd, std::move(fn), drain}));
    epoll_event ev{};
    ev.events = EPOLLIN | (edge ? EPOLLET : 0u);
    ev.data.ptr = handlers_.back().get();
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::ErrnoToStatus(errno, "epoll_ctl");
    }
    return absl::OkStatus();
  }

  // A new eventfd closed with the thread.
  int NewEventFd() {
    const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd >= 0) owned_.push_back(fd);
    return fd;
  }

  void Start() {
    (void)Watch(stop_fd_, [] {}, true);
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    if (!thread_.joinable()) return;
    stopping_ = true;
    (void)eventfd_write(stop_fd_, 1);
    thread_.join();
  }

 private:
  struct Handler {
    int fd;
    std::function<void()> fn;
    bool drain;
  };

  void Loop() {
    epoll_event events[32];
    while (!stopping_) {
      const int n = epoll_wait(epfd_, events, 32, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      for (int i = 0; i < n && !stopping_; ++i) {
        auto* h = static_cast<Handler*>(events[i].data.ptr);
        if (h->drain) {
          eventfd_t v;
          (void)eventfd_read(h->fd, &v);
        }
        h->fn();
      }
    }
  }

  int epfd_;
  int stop_fd_;
  std::atomic<bool> stopping_{false};
  std::vector<std::unique_ptr<Handler>> handlers_;
  std::vector<int> owned_;
  std::thread thread_;
};

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_IO_THREAD_H_
