// vhost_user/dirty_log.h — dirty-page logging for live migration
// (VHOST_F_LOG_ALL, SET_LOG_BASE with LOG_SHMFD, SET_LOG_FD).
//
// While a migration copies guest RAM, the front-end needs to know which
// pages the back-end wrote behind its back. It shares a bitmap (SET_LOG_BASE:
// an fd, a size and an offset), one bit per 4 KiB guest-physical page, and
// acks VHOST_F_LOG_ALL; from then on the back-end sets (atomic OR) the bit of
// every page it writes: the data it puts into device-writable buffers, and,
// for rings with VHOST_VRING_F_LOG, its writes to the used ring, logged at
// the ring's log_guest_addr. The front-end reads and clears bits
// concurrently (QEMU exchanges 64-bit words with zero), so a bit must be set
// only after the write it covers: a page marked early could be copied and
// cleared before the data lands.
//
//   DirtyLog       the mapped bitmap; Mark(gpa, len) sets the bits of every
//                  page the range touches, never a bit beyond the mapping.
//   DirtyLogQueue  one queue's ring observer part (queue_observer.h):
//                  remembers each popped chain's writable buffers as
//                  guest-physical ranges (fixed per-head storage, sized at
//                  queue start: no allocation on the data path), marks the
//                  `len` bytes the device reports at push time, and the
//                  used elements, used index and event-suppression fields
//                  once the batch is published.
//
// Over-marking only costs the migration a page copy; under-marking corrupts
// the destination. So wherever exactness would need unbounded state the
// code errs towards marking more: a chain with more discontiguous writable
// ranges than fit is coalesced into hulls (the adjacent pair whose merge adds
// the fewest bytes goes first), a hull is marked whole once the written
// prefix reaches it, two chains in flight under one head (a hostile driver)
// are both marked whole, and the last writable byte is marked whenever
// anything was written, since virtio-blk reports len = 1 for a failed
// request whose status byte is the last byte of the chain.
//
// What a packed ring's device writes lives in the descriptor ring (the used
// element overwrites the chain's first slot), so packed rings log those
// slots at their guest-physical address whenever LOG_ALL is on; the device
// event suppression area is logged at log_guest_addr with VHOST_VRING_F_LOG.
// Event-suppression writes happen outside pop/push/publish too; they are
// re-marked at every publish and the whole device-written ring area is
// marked when the queue stops (MarkRing), which is when a migration takes
// its final copy.
#ifndef VHOST_USER_DIRTY_LOG_H_
#define VHOST_USER_DIRTY_LOG_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "vhost_user/message.h"
#include "virtio/descriptor_chain.h"
#include "virtio/queue.h"

namespace vhost_user {

class MemoryTable;

// A mapped dirty-page bitmap. Move-only; unmaps on destruction.
class DirtyLog {
 public:
  // Largest log accepted: covers 2^52 bytes of guest-physical space.
  static constexpr uint64_t kMaxSize = uint64_t{1} << 37;

  DirtyLog() = default;
  ~DirtyLog() { Unmap(); }
  DirtyLog(DirtyLog&& o) noexcept { *this = std::move(o); }
  DirtyLog& operator=(DirtyLog&& o) noexcept;
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // Maps `size` bytes of `fd` starting `offset` bytes in (SET_LOG_BASE).
  // Fails, mapping nothing, unless 0 < size <= kMaxSize, offset + size does
  // not overflow, the fd is a regular file (memfd, shm) at least
  // offset + size bytes long, and mmap succeeds. The fd stays the caller's.
  // A SIGBUS in the mapping (the front-end shrank the file) is contained
  // and reported on `fault_fd` (sigbus_guard.h).
  static absl::StatusOr<DirtyLog> Map(int fd, uint64_t size, uint64_t offset,
                                      int fault_fd = -1);

  bool mapped() const { return bits_ != nullptr; }
  // Bytes of bitmap.
  uint64_t size() const { return size_; }
  // Guest-physical addresses below this have a bit.
  uint64_t covered_end() const { return size_ * 8 * kLogPageSize; }
  bool Covers(uint64_t gpa, uint64_t len) const;

  // Marks every page [gpa, gpa + len) touches (nothing if len is 0). Bits
  // past the log are never written; returns false if part of the range
  // lay there (that part is lost: the front-end's log is too small).
  // Orders the caller's earlier writes before the bits (full fence).
  bool Mark(uint64_t gpa, uint64_t len) const;
  // The bit of the page holding `gpa` (tests).
  bool IsDirty(uint64_t gpa) const;

 private:
  void Unmap();

  void* map_ = nullptr;  // mmap result (page-aligned below bits_)
  size_t map_len_ = 0;
  uint8_t* bits_ = nullptr;
  uint64_t size_ = 0;
};

// Where a queue's ring writes are logged (see the header comment).
struct DirtyLogRing {
  bool packed = false;
  uint32_t size = 0;
  // Packed: guest-physical address of the descriptor ring.
  uint64_t desc_gpa = 0;
  // VHOST_VRING_F_LOG: log used-ring (split) / device event area (packed)
  // writes at `used_log_gpa` (SET_VRING_ADDR's log_guest_addr).
  bool log_used = false;
  uint64_t used_log_gpa = 0;
};

// One queue's dirty logging, attached to its QueueObserver while the queue
// runs with LOG_ALL acked and a log mapped. Set up with Start() while the
// queue is stopped; the hooks then run on the queue's thread only.
class DirtyLogQueue {
 public:
  // Discontiguous writable ranges remembered per chain before coalescing.
  static constexpr uint32_t kRangesPerHead = 8;

  // Prepares for the queue about to start: `log` and `memory` must outlive
  // the run; `log_call_fd` (SET_LOG_FD, -1: none) is signalled after each
  // publish that logged something. Allocates the per-head storage.
  void Start(const DirtyLog& log, const MemoryTable& memory,
             const DirtyLogRing& ring, int log_call_fd);
  // Marks every byte of the ring the device may write (used ring, or packed
  // descriptor ring and device area): the queue stopped, or is about to.
  void MarkRing();

  // Marks that could not be made since Start(): outside the log, or a
  // buffer not found in the memory table.
  uint64_t dropped() const { return dropped_; }

  // --- virtio::RingObserver ---
  void OnPop(const virtio::DescriptorChain& chain, uint16_t position,
             bool resubmitted);
  void OnPush(virtio::UsedToken token, uint32_t len, uint16_t position);
  void OnPublish(const virtio::QueueState& state);

 private:
  // A guest-physical range [gpa, gpa + span) holding the `bytes` bytes of
  // the chain's writable part from chain offset `offset`. Exact: one run,
  // chain offset `offset + i` at gpa + i; otherwise a hull of several.
  struct Range {
    uint64_t gpa;
    uint64_t span;
    uint32_t offset;
    uint32_t bytes;
    bool exact;
  };
  struct Head {
    uint16_t ranges = 0;
    uint16_t in_flight = 0;  // chains popped under this head, not pushed
    bool whole = false;      // mark every range entirely (duplicate head)
  };

  void Add(Head& h, Range* ranges, Range r);
  void Mark(uint64_t gpa, uint64_t len);
  // Split used elements [first, first + count) (free-running indices), or
  // packed descriptor slots from ring offset `first`.
  void MarkUsed(uint16_t first, uint32_t count);

  const DirtyLog* log_ = nullptr;
  const MemoryTable* memory_ = nullptr;
  DirtyLogRing ring_;
  int log_call_fd_ = -1;
  std::vector<Head> heads_;
  std::vector<Range> ranges_;  // kRangesPerHead per head
  bool batch_open_ = false;
  uint16_t batch_first_ = 0;
  bool logged_ = false;  // since the last log_call_fd signal
  bool warned_ = false;
  uint64_t dropped_ = 0;
};

}  // namespace vhost_user

#endif  // VHOST_USER_DIRTY_LOG_H_
