// vhost_user/frontend/shared_memory.h — the front-end's memory that a
// vhost-user back-end maps: one memfd, mapped here once, handed to the
// back-end with SET_MEM_TABLE.
//
// Guest-physical addresses are identity-mapped: the address the back-end is
// told for a byte (in descriptors and in the memory table) is its virtual
// address in this process, so any pointer into the region can go into a
// descriptor as is.
//
// Besides the fixed areas the client carves out at setup (rings, request
// headers), the region has a buffer arena with a first-fit allocator for
// I/O buffers. Allocation takes a lock and may allocate bookkeeping: do it
// at setup, not per request.
#ifndef VHOST_USER_FRONTEND_SHARED_MEMORY_H_
#define VHOST_USER_FRONTEND_SHARED_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "vhost_user/message.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user {

// One memfd shared with a back-end, with its buffer arena (see the top of
// this file).
class SharedMemory {
 public:
  // Creates a memfd of `size` bytes (rounded up to a page) and maps it.
  static absl::StatusOr<std::unique_ptr<SharedMemory>> Create(uint64_t size);
  ~SharedMemory();
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  int fd() const { return fd_.get(); }
  uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  // The region as SET_MEM_TABLE describes it (identity-mapped).
  MemoryRegion region() const;
  // True if [p, p + len) lies inside the region.
  bool Contains(const void* p, uint64_t len) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    const auto b = reinterpret_cast<uintptr_t>(base_);
    return a >= b && a - b <= size_ && len <= size_ - (a - b);
  }

  // Takes `len` bytes at the front of the unreserved part, aligned to
  // `align` (a power of two), zeroed; for the client's fixed areas, before
  // InitArena(). nullptr if the region is too small.
  uint8_t* Reserve(uint64_t len, uint64_t align);
  // Turns everything not reserved into the buffer arena.
  void InitArena();

  // Allocates a buffer of `len` bytes aligned to `align` (a power of two)
  // from the arena; nullptr if no free range fits. Thread-safe.
  void* Alloc(uint64_t len, uint64_t align);
  // Returns a buffer from Alloc(); nullptr is ignored. Thread-safe.
  void Free(void* p);
  // Bytes currently free in the arena.
  uint64_t arena_free() const;

 private:
  SharedMemory(UniqueFd fd, uint8_t* base, uint64_t size)
      : fd_(std::move(fd)), base_(base), size_(size) {}

  UniqueFd fd_;
  uint8_t* base_;
  uint64_t size_;
  uint64_t reserved_ = 0;
  mutable std::mutex mu_;
  std::map<uint64_t, uint64_t> free_;  // offset -> length, coalesced
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> used_;  // user offset ->
                                                            // (range offset,
                                                            // range length)
};

}  // namespace vhost_user

#endif  // VHOST_USER_FRONTEND_SHARED_MEMORY_H_
