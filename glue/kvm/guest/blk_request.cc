// glue/kvm/guest/blk_request.cc — virtio-blk requests (blk_request.h).
#include "guest/blk_request.h"

#include <cstdint>

#include "guest/check_helpers.h"
#include "guest/virtio_guest.h"
#include "virtio/blk_spec.h"
#include "virtio/spec.h"

namespace guest {

bool BlkRun(Queue& q, BlkReq* reqs, const Buf* data, int n) {
  int ids[8];
  for (int i = 0; i < n; ++i) {
    Buf chain[3];
    int k = 0;
    chain[k++] = {Phys(&reqs[i].hdr), sizeof reqs[i].hdr, false};
    if (data[i].len) chain[k++] = data[i];
    reqs[i].status = 0xff;
    chain[k++] = {Phys(&reqs[i].status), 1, true};
    ids[i] = q.Add(chain, k);
    if (ids[i] < 0) return false;
  }
  q.Kick();
  for (int i = 0; i < n; ++i) {
    uint16_t id;
    uint32_t len;
    if (!WaitUsed(q, &id, &len)) return false;
  }
  return true;
}

BlkReq* NewReqs(int n) {
  return static_cast<BlkReq*>(Alloc(sizeof(BlkReq) * n, 16));
}

void SetReq(BlkReq& r, uint32_t type, uint64_t sector) {
  r.hdr.type = type;
  r.hdr.reserved = 0;
  r.hdr.sector = sector;
}

uint64_t BlkWanted() {
  using namespace virtio::blk;
  return RingFeatures() | spec::Bit(kFeatureFlush) |
         spec::Bit(kFeatureBlkSize) | spec::Bit(kFeatureSegMax) |
         spec::Bit(kFeatureSizeMax) | spec::Bit(kFeatureDiscard) |
         spec::Bit(kFeatureWriteZeroes) | spec::Bit(kFeatureRo) |
         spec::Bit(kFeatureMq) | spec::Bit(spec::kFeatureIndirectDesc);
}

}  // namespace guest
