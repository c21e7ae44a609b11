#include "vhost_user/interrupt.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vhost_user/message.h"
#include "virtio/log.h"

namespace vhost_user {

bool SignalFd(int fd) {
  if (fd < 0) return false;
  const uint64_t one = 1;
  for (;;) {
    // The fd is non-blocking (set when received): a counter a front-end
    // filled up must not stall a queue thread.
    const ssize_t n = write(fd, &one, sizeof one);
    if (n == static_cast<ssize_t>(sizeof one)) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

void CallInterrupt::SignalQueue(uint16_t queue) {
  if (queue >= kMaxQueues) return;
  queue_signals_.fetch_add(1, std::memory_order_relaxed);
  std::atomic<uint64_t>& c =
      SignalFd(call_[queue].load(std::memory_order_acquire))
          ? per_queue_[queue].sent
          : per_queue_[queue].lost;
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void CallInterrupt::SignalConfig() {
  config_signals_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(config_mu_);
  if (config_fd_ < 0) return;
  // No NEED_REPLY: nobody reads the channel's replies.
  const Header h{kBackendConfigChangeMsg, kVersion, 0};
  const ssize_t n = send(config_fd_, &h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(sizeof h)) {
    virtio::Log(
        virtio::LogLevel::kWarning,
        "vhost-user: could not send CONFIG_CHANGE_MSG to the front-end");
  }
}

}  // namespace vhost_user
