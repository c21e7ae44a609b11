// glue/kvm/guest/blk_request.h — virtio-blk requests for the blk and the
// hostile checks: a request header and status byte in DMA memory, a batch
// submitted with one kick, and the features the checks ask a blk device
// for.
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_BLK_REQUEST_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_BLK_REQUEST_H_

#include <cstdint>

#include "guest/virtio_guest.h"
#include "virtio/blk_spec.h"

namespace guest {

struct BlkReq {
  virtio::blk::RequestHeader hdr;
  uint8_t status;
};

// Submits `n` requests at once (one kick), waits for all. Returns false if
// any did not complete.
bool BlkRun(Queue& q, BlkReq* reqs, const Buf* data, int n);
// `n` requests in DMA memory.
BlkReq* NewReqs(int n);
void SetReq(BlkReq& r, uint32_t type, uint64_t sector);
// RingFeatures() and every blk feature the checks exercise.
uint64_t BlkWanted();

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_BLK_REQUEST_H_
