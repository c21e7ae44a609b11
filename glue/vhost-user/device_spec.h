// vhost-user/device_spec.h — `--device TYPE,key=value,...` for the
// vhost-user-device daemon, and building the device it names.
//
// The syntax is the device catalogue's (virtio/catalog/device_spec.h,
// docs/devices.md), shared with virtio-kvm and xen-virtio-backend. The
// daemon adds one key of its own, socket-path=PATH: the device's vhost-user
// socket, for a daemon serving several devices (like qemu-storage-daemon's
// repeated --export). Here queue-size= is a limit: the front-end picks each
// ring's size (by default any size up to 32768).
#ifndef VHOST_USER_DEVICE_SPEC_H_
#define VHOST_USER_DEVICE_SPEC_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "device_control.h"
#include "vhost_user/device.h"
#include "virtio/catalog/device_spec.h"

namespace vhost_user {

// One --device of the daemon: the catalogue's spec and the daemon's key.
struct DaemonDeviceSpec {
  virtio::catalog::DeviceSpec device = {};
  // socket-path=: where this device's front-end connects (empty: the
  // daemon-wide --socket-path, --fd or socket activation).
  std::string socket_path = {};
};

// Parses a --device with the daemon's key. socket= on a device type other
// than console (whose backend it names) is refused with a pointer to
// socket-path=, the likely intent.
absl::StatusOr<DaemonDeviceSpec> ParseDaemonDeviceSpec(std::string_view text);

// The catalogue's part alone (socket-path= accepted and dropped).
absl::StatusOr<virtio::catalog::DeviceSpec> ParseDeviceSpec(
    std::string_view text);

// Builds the device `spec` describes, with its backend.
absl::StatusOr<std::unique_ptr<VhostDevice>> MakeDevice(
    const virtio::catalog::DeviceSpec& spec);

// A device and its control-socket side (device_control.h).
struct ServedDevice {
  std::unique_ptr<VhostDevice> device;
  // Refers to `device`: destroy it first.
  std::unique_ptr<DeviceControl> control;
};

// As MakeDevice(), with the device's DeviceControl.
absl::StatusOr<ServedDevice> MakeServedDevice(
    const virtio::catalog::DeviceSpec& spec);

// Help text for --device.
const char* DeviceSpecHelp();

}  // namespace vhost_user

#endif  // VHOST_USER_DEVICE_SPEC_H_
