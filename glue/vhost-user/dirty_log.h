// vhost-user/dirty_log.h — dirty-page logging for live migration
// (VHOST_F_LOG_ALL, SET_LOG_BASE, LOG_SHMFD). Placeholder: not implemented
// yet; the hooks do nothing.
#ifndef VHOST_USER_DIRTY_LOG_H_
#define VHOST_USER_DIRTY_LOG_H_

#include <cstdint>

#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"

namespace vhost_user {

// One queue's view of the dirty log.
class DirtyLogQueue {
 public:
  void OnPop(const virtio::DescriptorChain&, uint16_t, bool) {}
  void OnPush(virtio::UsedToken, uint32_t, uint16_t) {}
  void OnPublish(const virtio::QueueState&) {}
};

}  // namespace vhost_user

#endif  // VHOST_USER_DIRTY_LOG_H_
