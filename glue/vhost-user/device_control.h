// vhost-user/device_control.h — what vhost-user-device's control socket
// (control_server.h) asks of the device it serves beyond VhostDevice: the
// device type's own counters for the statistics, and online resize.
// MakeServedDevice() (device_spec.h) builds one alongside the device.
#ifndef VHOST_USER_DEVICE_CONTROL_H_
#define VHOST_USER_DEVICE_CONTROL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "json_writer.h"

namespace vhost_user {

// A queue's request errors as the device type counts them (0 where the
// type keeps no such counter).
struct DeviceQueueErrors {
  // Requests the device could not parse: chains the ring layer refused,
  // no room for a status, a short header (blk).
  uint64_t malformed_requests = 0;
  // Requests the host's backend failed (EIO, ENOSPC, ...).
  uint64_t backend_errors = 0;
};

// A resize's outcome, in 512-byte sectors.
struct ResizeOutcome {
  uint64_t old_sectors = 0;
  uint64_t new_sectors = 0;
};

// The device type's part of the control socket. Every method may be called
// from the control socket's thread while the queues run: implementations
// read only counters kept for that (atomics, virtio::StatCounter).
class DeviceControl {
 public:
  virtual ~DeviceControl() = default;

  // Device-wide fields of the statistics' "device" object (blk: the
  // capacity, read-only).
  virtual void WriteDeviceFields(JsonWriter& /*json*/) const {}
  virtual DeviceQueueErrors queue_errors(uint16_t /*q*/) const { return {}; }
  // The device type's own counters for queue `q`, as fields of an object
  // (blk: its BlkQueueStats); nothing by default.
  virtual void WriteQueueFields(uint16_t /*q*/, JsonWriter& /*json*/) const {}

  // Online resize (blk on an image file or block device): re-reads the
  // backing size and grows the capacity, sending the front-end a
  // configuration change. FailedPrecondition when the disk shrank (nothing
  // changes), Unimplemented when the device cannot be resized (not blk, a
  // ram or null disk). Not concurrently with itself.
  virtual absl::StatusOr<ResizeOutcome> Resize() {
    return absl::UnimplementedError("this device is not resizable");
  }
};

}  // namespace vhost_user

#endif  // VHOST_USER_DEVICE_CONTROL_H_
