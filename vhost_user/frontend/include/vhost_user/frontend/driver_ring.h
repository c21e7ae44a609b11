// vhost_user/frontend/driver_ring.h — what the driver-side rings
// (split_driver_ring.h, packed_driver_ring.h) have in common.
//
// Both rings keep every piece of bookkeeping (free descriptors, chain
// lengths, outstanding IDs) in private memory and read the device's half of
// the ring exactly once per field, so a hostile back-end can make a request
// fail or the ring stop (error() set, nothing more reaped) but cannot make
// the driver index outside its arrays or free a descriptor twice.
#ifndef VHOST_USER_FRONTEND_DRIVER_RING_H_
#define VHOST_USER_FRONTEND_DRIVER_RING_H_

#include <cstdint>

namespace vhost_user {

// One descriptor of a chain as the driver adds it.
struct RingBuf {
  uint64_t addr = 0;  // guest-physical (here: identity-mapped virtual)
  uint32_t len = 0;
  uint16_t flags = 0;  // spec::kDescFlagWrite and/or kDescFlagIndirect only
};

// What Reap() found.
enum class ReapStatus : uint8_t {
  kEmpty,  // nothing used yet
  kUsed,   // *id and *len describe one used chain, now freed
  kBroken  // the device broke the ring; see error()
};

}  // namespace vhost_user

#endif  // VHOST_USER_FRONTEND_DRIVER_RING_H_
