// uppercase_spec.h — the "uppercase echo" device: a device type of this
// third-party project, not one of libvirtio's, as its driver and its
// vhost-user daemon both need to know it.
//
// One queue (requestq). Every request is a chain whose device-readable part
// is text and whose device-writable part receives that text with ASCII
// letters made upper case: as many bytes as fit, and the used length says
// how many were written. Requests are answered in the order they come.
//
// The configuration space (read-only) identifies the device and counts the
// requests it has answered since it was last reset.
#ifndef UPPERCASE_SPEC_H_
#define UPPERCASE_SPEC_H_

#include <cstdint>

namespace uppercase {

// Outside the range the virtio specification assigns. vhost-user never
// sends it: the front-end knows what its socket leads to.
inline constexpr uint32_t kDeviceId = 0xF00D;
inline constexpr uint16_t kNumQueues = 1;
inline constexpr uint32_t kQueueSize = 64;
// "UPPR", so that a front-end can tell it reached the right device.
inline constexpr uint32_t kMagic = 0x52505055;
// Longest text a request may carry; the rest is ignored.
inline constexpr uint32_t kMaxText = 4096;

// The configuration space, little-endian (this project targets x86-64 and
// arm64 hosts only, so fields are stored natively).
struct Config {
  uint32_t magic;
  uint32_t max_text;
  uint64_t requests_answered;
};
static_assert(sizeof(Config) == 16);

}  // namespace uppercase

#endif  // UPPERCASE_SPEC_H_
