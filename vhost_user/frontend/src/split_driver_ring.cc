#include "vhost_user/frontend/split_driver_ring.h"

namespace vhost_user {

namespace spec = virtio::spec;

uint64_t SplitDriverRing::MemorySize(uint16_t size) {
  // desc, then avail (2-aligned), then used on its own 4 KiB-aligned page(s)
  // so the device's stores don't share cache lines with the driver's.
  const uint64_t avail_end =
      spec::SplitDescTableSize(size) + spec::SplitAvailRingSize(size);
  const uint64_t used_start = (avail_end + 4095) & ~uint64_t{4095};
  return used_start + spec::SplitUsedRingSize(size);
}

void SplitDriverRing::Init(uint8_t* mem, uint16_t size, bool event_idx) {
  size_ = size;
  mask_ = static_cast<uint16_t>(size - 1);
  event_idx_ = event_idx;
  desc_ = reinterpret_cast<spec::SplitDesc*>(mem);
  uint8_t* avail = mem + spec::SplitDescTableSize(size);
  avail_ = reinterpret_cast<spec::SplitAvailHeader*>(avail);
  ring_ = reinterpret_cast<uint16_t*>(avail + sizeof(spec::SplitAvailHeader));
  used_event_ =
      reinterpret_cast<uint16_t*>(avail + spec::SplitUsedEventOffset(size));
  const uint64_t avail_end =
      spec::SplitDescTableSize(size) + spec::SplitAvailRingSize(size);
  uint8_t* used = mem + ((avail_end + 4095) & ~uint64_t{4095});
  used_ = reinterpret_cast<spec::SplitUsedHeader*>(used);
  used_ring_ = reinterpret_cast<spec::SplitUsedElem*>(
      used + sizeof(spec::SplitUsedHeader));
  avail_event_ =
      reinterpret_cast<uint16_t*>(used + spec::SplitAvailEventOffset(size));
  next_ = std::make_unique<uint16_t[]>(size);
  chain_len_ = std::make_unique<uint16_t[]>(size);
  chain_last_ = std::make_unique<uint16_t[]>(size);
  for (uint32_t i = 0; i < size; ++i) {
    next_[i] = static_cast<uint16_t>((i + 1) & mask_);
  }
  free_head_ = 0;
  num_free_ = size;
  avail_idx_ = published_ = last_used_ = used_idx_cache_ = 0;
  error_ = nullptr;
  DisableInterrupts();
}

}  // namespace vhost_user
