#include "vhost_user/frontend/packed_driver_ring.h"

namespace vhost_user {

namespace spec = virtio::spec;

uint64_t PackedDriverRing::MemorySize(uint16_t size) {
  // Descriptors, then the two event structures on their own cache lines.
  return spec::PackedDescRingSize(size) + 128;
}

void PackedDriverRing::Init(uint8_t* mem, uint16_t size, bool event_idx) {
  size_ = size;
  event_idx_ = event_idx;
  desc_ = reinterpret_cast<spec::PackedDesc*>(mem);
  driver_event_ = reinterpret_cast<spec::PackedEventSuppress*>(
      mem + spec::PackedDescRingSize(size));
  device_event_ = reinterpret_cast<spec::PackedEventSuppress*>(
      mem + spec::PackedDescRingSize(size) + 64);
  free_ids_ = std::make_unique<uint16_t[]>(size);
  chain_len_ = std::make_unique<uint16_t[]>(size);
  // IDs handed out lowest first.
  for (uint32_t i = 0; i < size; ++i) {
    free_ids_[i] = static_cast<uint16_t>(size - 1 - i);
  }
  free_id_count_ = size;
  num_free_ = size;
  next_avail_ = next_used_ = 0;
  avail_wrap_ = used_wrap_ = true;
  added_ = 0;
  error_ = nullptr;
  DisableInterrupts();
}

}  // namespace vhost_user
