// vhost_user/inflight.h — the shared inflight region (INFLIGHT_SHMFD,
// GET/SET_INFLIGHT_FD): its message payload and its layout per queue.
//
// The back-end allocates the region (GET_INFLIGHT_FD), the front-end keeps
// the fd across back-end restarts and hands it back (SET_INFLIGHT_FD); only
// the back-end interprets it. Queue q's part starts at
// q * InflightQueueRegionSize(queue_size), sized for either layout:
//
// Split rings: the layout of the vhost-user specification ("Inflight I/O
// tracking") and QEMU's libvhost-user:
//
//   u64 features; u16 version (1); u16 desc_num; u16 last_batch_head;
//   u16 used_idx; { u8 inflight; u8 padding[5]; u16 next; u64 counter; }
//   desc[desc_num];
//
// desc[head].inflight is 1 from the chain's pop until its used element is
// published; used_idx is the used index the flags were last brought up to.
//
// Packed rings: this library's own layout (the specification's packed
// layout leaves the ring position to the front-end, but QEMU does not
// restore a packed ring's position after a back-end crash, so the region
// must hold it):
//
//   u64 features; u16 version (2); u16 desc_num; u16 used_pos; u16 pad;
//   u64 avail_commit; u8 reserved[40];                     (64 bytes)
//   { u8 inflight; u8 pad; u16 slots; u16 first; u16 pad; u64 counter; }
//   entry[desc_num];                   (indexed by buffer ID, 16 bytes each)
//   PackedDesc pool[desc_num];     (saved descriptors of chains in flight)
//   u16 next[desc_num];                     (pool links of multi-slot chains)
//
// used_pos is the published used position (bit 15: wrap counter),
// avail_commit is (pop counter << 16) | avail position: the pops it counts
// are the only entries that are valid. inflight_queue.h explains why each
// crash point leaves a consistent region.
#ifndef VHOST_USER_INFLIGHT_H_
#define VHOST_USER_INFLIGHT_H_

#include <cstdint>

namespace vhost_user {

// GET_INFLIGHT_FD / SET_INFLIGHT_FD payload.
struct InflightInfo {
  uint64_t mmap_size;
  uint64_t mmap_offset;
  uint16_t num_queues;
  uint16_t queue_size;
};
static_assert(sizeof(InflightInfo) == 24);

namespace inflight_layout {

inline constexpr uint16_t kSplitVersion = 1;
inline constexpr uint16_t kPackedVersion = 2;

// Header offsets shared by both layouts.
inline constexpr unsigned kVersionOff = 8;
inline constexpr unsigned kDescNumOff = 10;
// Split header.
inline constexpr unsigned kSplitHeaderSize = 16;
inline constexpr unsigned kLastBatchOff = 12;
inline constexpr unsigned kUsedIdxOff = 14;
inline constexpr unsigned kSplitDescSize = 16;
// Packed header and arrays.
inline constexpr unsigned kPackedHeaderSize = 64;
inline constexpr unsigned kUsedPosOff = 12;
inline constexpr unsigned kAvailCommitOff = 16;
inline constexpr unsigned kEntrySize = 16;
inline constexpr unsigned kPoolDescSize = 16;

constexpr uint64_t SplitSize(uint16_t n) {
  return kSplitHeaderSize + uint64_t{kSplitDescSize} * n;
}
constexpr uint64_t PackedSize(uint16_t n) {
  return kPackedHeaderSize + uint64_t{kEntrySize + kPoolDescSize + 2} * n;
}

}  // namespace inflight_layout

// Bytes of the region per queue of `queue_size` descriptors: room for either
// layout (the ring layout may be negotiated after GET_INFLIGHT_FD), 64-byte
// aligned so that every queue's 64-bit fields are naturally aligned.
constexpr uint64_t InflightQueueRegionSize(uint16_t queue_size) {
  const uint64_t split = inflight_layout::SplitSize(queue_size);
  const uint64_t packed = inflight_layout::PackedSize(queue_size);
  return ((split > packed ? split : packed) + 63) & ~uint64_t{63};
}

}  // namespace vhost_user

#endif  // VHOST_USER_INFLIGHT_H_
