// glue/kvm/guest/check_helpers.h — what the device checks share: the ring
// features the run asks for, bring-up of one or several queues, and waits
// bounded by the timer tick.
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_CHECK_HELPERS_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_CHECK_HELPERS_H_

#include <cstdint>

#include "guest/virtio_guest.h"

namespace guest {

// VERSION_1, plus RING_PACKED and EVENT_IDX as the run's flags say.
uint64_t RingFeatures();
bool Packed(const Dev& d);
bool EventIdx(const Dev& d);

// Bring-up with one queue of `size` entries.
bool BringUp(Dev& dev, Queue& q, uint64_t wanted, uint16_t size = 16);
// Bring-up with queues 0..n-1 of `size` entries each (all enabled before
// DRIVER_OK, as Linux does).
bool BringUpQueues(Dev& dev, Queue* qs, int n, uint64_t wanted,
                   uint16_t size = 16);

// Waits for a used buffer: sleeps in hlt until an interrupt (or the 10 ms
// tick) arrives. False after `ms` milliseconds.
bool WaitUsed(Queue& q, uint16_t* id, uint32_t* len, uint32_t ms = 3000);
// Waits until the device status has one of `bits`.
bool WaitStatus(Dev& d, uint8_t bits, uint32_t ms = 2000);

bool AllZero(const uint8_t* p, uint32_t n);

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_CHECK_HELPERS_H_
