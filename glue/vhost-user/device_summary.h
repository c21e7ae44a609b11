// vhost-user/device_summary.h — the startup line vhost-user-device logs for
// each device it serves: what an operator checks first when a guest sees
// the wrong disk.
#ifndef VHOST_USER_DEVICE_SUMMARY_H_
#define VHOST_USER_DEVICE_SUMMARY_H_

#include <string>

#include "vhost_user/device.h"
#include "virtio/catalog/device_spec.h"

namespace vhost_user {

// "blk,path=disk.img: 16384 sectors of 512 bytes (8 MiB), read-write, 1
// queue of up to 32768 entries, rings offered: split packed, features
// offered 0x...": the spec as given, then (blk) the capacity and whether
// it is read-only, the queues and their largest size, the ring layouts the
// front-end may pick, and the feature bits offered.
std::string DeviceSummary(const virtio::catalog::DeviceSpec& spec,
                          VhostDevice& device);

}  // namespace vhost_user

#endif  // VHOST_USER_DEVICE_SUMMARY_H_
