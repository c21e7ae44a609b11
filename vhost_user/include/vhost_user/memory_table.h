// vhost_user/memory_table.h — guest memory shared by the front-end as fds.
//
// Each region (SET_MEM_TABLE, ADD_MEM_REG) is an fd the back-end mmaps
// MAP_SHARED at the region's mmap_offset; the table keeps the mappings and
// builds a virtio::GuestMemoryMap keyed by guest-physical address for the
// devices, plus the front-end's virtual (userspace) address of each region,
// because SET_VRING_ADDR gives ring addresses in the front-end's address
// space. Every region is validated (non-zero size, no wrap in any address
// space, no overlap with another region in guest-physical or front-end
// address space, an fd that maps and is large enough); a bad table is
// rejected whole and the previous one stays. The table owns its mappings
// and fds: replacing or destroying it unmaps and closes them.
//
// MemoryTable satisfies virtio::GuestMemory, so it is the Memory of the
// vhost-user hypervisor traits. It is not synchronised: change it only while
// no queue uses it (the back-end stops the rings first).
#ifndef VHOST_USER_MEMORY_TABLE_H_
#define VHOST_USER_MEMORY_TABLE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "vhost_user/message.h"
#include "vhost_user/unique_fd.h"
#include "virtio/guest_memory.h"

namespace vhost_user {

// The guest memory of one front-end connection (see the top of this file).
class MemoryTable {
 public:
  // The most regions a table holds (GET_MAX_MEM_SLOTS).
  static constexpr uint32_t kMaxRegions = kMaxMemSlots;

  MemoryTable() = default;
  MemoryTable(const MemoryTable&) = delete;
  MemoryTable& operator=(const MemoryTable&) = delete;
  ~MemoryTable();

  // Replaces the whole table (SET_MEM_TABLE). `fds[i]` backs `regions[i]`;
  // the fds are consumed either way.
  absl::Status Replace(absl::Span<const MemoryRegion> regions,
                       std::vector<UniqueFd> fds);
  // Adds one region (ADD_MEM_REG).
  absl::Status Add(const MemoryRegion& region, UniqueFd fd);
  // Removes the region matching `region`'s guest address, size and user
  // address (REM_MEM_REG).
  absl::Status Remove(const MemoryRegion& region);
  // Unmaps everything.
  void Clear();
  // Where a SIGBUS in a mapping made from now on is reported
  // (sigbus_guard.h): the connection's eventfd; -1: nowhere (contained
  // all the same).
  void SetFaultFd(int fd) { fault_fd_ = fd; }

  // The guest-physical address of front-end virtual range
  // [uaddr, uaddr + len) if it lies inside one region.
  std::optional<uint64_t> UserToGuest(uint64_t uaddr, uint64_t len) const;
  // The guest-physical address of host range [host, host + len) if it lies
  // inside one region's mapping: the reverse of TranslateContiguous, for
  // dirty logging, which sees buffers only as host iovecs. O(log regions),
  // no allocation.
  std::optional<uint64_t> HostToGuest(const void* host, uint64_t len) const;
  // One past the highest guest-physical address of any region (0: none).
  uint64_t guest_end() const { return guest_end_; }

  size_t num_regions() const { return regions_.size(); }
  const virtio::GuestMemoryMap& map() const { return map_; }

  // --- virtio::GuestMemory ---
  uint8_t* TranslateContiguous(uint64_t gpa, uint64_t len) const {
    return map_.TranslateContiguous(gpa, len);
  }
  virtio::ScatterResult TranslateScatter(uint64_t gpa, uint64_t len,
                                         iovec* out, uint32_t capacity) const {
    return map_.TranslateScatter(gpa, len, out, capacity);
  }

 private:
  struct Mapped {
    MemoryRegion region;
    void* base = nullptr;  // mmap result
    size_t length = 0;     // mmap length
    uint8_t* host = nullptr;  // base + offset within the page
    UniqueFd fd;
  };

  static absl::StatusOr<Mapped> Map(const MemoryRegion& region, UniqueFd fd,
                                    int fault_fd);
  static void Unmap(Mapped& m);
  // Checks `all` for overlaps and builds the map; on success installs it.
  absl::Status Install(std::vector<Mapped>& all);

  // Host mapping → guest-physical, sorted by host address (HostToGuest).
  struct HostRange {
    uintptr_t host;
    uint64_t size;
    uint64_t gpa;
  };

  std::vector<Mapped> regions_;
  virtio::GuestMemoryMap map_;
  std::vector<HostRange> by_host_;
  uint64_t guest_end_ = 0;
  int fault_fd_ = -1;
};

static_assert(virtio::GuestMemory<MemoryTable>);

}  // namespace vhost_user

#endif  // VHOST_USER_MEMORY_TABLE_H_
