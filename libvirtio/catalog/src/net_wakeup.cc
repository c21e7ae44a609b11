#include "virtio/catalog/net_wakeup.h"

#include <unistd.h>

#include <cstdint>

namespace virtio::catalog {

void DrainEventFd(int fd) {
  uint64_t count;
  // Nothing to do when it fails: EAGAIN means nothing was signalled.
  [[maybe_unused]] const ssize_t n = read(fd, &count, sizeof count);
}

}  // namespace virtio::catalog
