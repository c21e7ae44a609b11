// vhost-user/device_spec.h — `--device TYPE,key=value,...` for the
// vhost-user-device daemon, and building the device it names.
//
//   blk,path=disk.img[,readonly=on][,direct=on][,num-queues=N]
//       [,queue-size=N][,serial=S][,packed=off]
//   blk,backend=ram,size=64M[,...]      blk,backend=null,size=1G[,...]
//   rng[,rate=BYTES_PER_SECOND][,queue-size=N][,packed=off]
//
// `packed=off` stops offering VIRTIO_F_RING_PACKED (User-mode Linux 6.1
// negotiates it but cannot resume it).
#ifndef VHOST_USER_DEVICE_SPEC_H_
#define VHOST_USER_DEVICE_SPEC_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "device.h"

namespace vhost_user {

struct DeviceSpec {
  std::string type;
  std::map<std::string, std::string> props;
};

absl::StatusOr<DeviceSpec> ParseDeviceSpec(const std::string& text);

// Builds the device `spec` describes, with its backend.
absl::StatusOr<std::unique_ptr<VhostDevice>> MakeDevice(const DeviceSpec& spec);

// Help text for --device.
const char* DeviceSpecHelp();

}  // namespace vhost_user

#endif  // VHOST_USER_DEVICE_SPEC_H_
