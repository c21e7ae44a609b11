// vhost-user/inflight_queue.h — inflight tracking of one queue through the
// ring observer hooks. Placeholder: the shadow-ring tracker in inflight.h
// still does the work; the hooks do nothing yet.
#ifndef VHOST_USER_INFLIGHT_QUEUE_H_
#define VHOST_USER_INFLIGHT_QUEUE_H_

#include <cstdint>

#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"

namespace vhost_user {

class InflightQueue {
 public:
  void OnPop(const virtio::DescriptorChain&, uint16_t, bool) {}
  void OnPush(virtio::UsedToken, uint32_t, uint16_t) {}
  void OnPublish(const virtio::QueueState&) {}
};

}  // namespace vhost_user

#endif  // VHOST_USER_INFLIGHT_QUEUE_H_
