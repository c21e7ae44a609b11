#include "vhost_user/memory_table.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "sigbus_guard.h"

namespace vhost_user {
namespace {

std::string Describe(const MemoryRegion& r) {
  return absl::StrFormat("region gpa 0x%x size 0x%x uaddr 0x%x offset 0x%x",
                         r.guest_phys_addr, r.memory_size, r.userspace_addr,
                         r.mmap_offset);
}

bool Wraps(uint64_t start, uint64_t size) { return start + size - 1 < start; }

bool Overlap(uint64_t a, uint64_t as, uint64_t b, uint64_t bs) {
  // Both non-empty and non-wrapping.
  return a <= b + (bs - 1) && b <= a + (as - 1);
}

}  // namespace

MemoryTable::~MemoryTable() { Clear(); }

void MemoryTable::Unmap(Mapped& m) {
  if (m.base != nullptr) {
    SigbusGuard::Unregister(m.base);
    munmap(m.base, m.length);
  }
  m.base = nullptr;
  m.fd.reset();
}

void MemoryTable::Clear() {
  map_ = virtio::GuestMemoryMap();
  by_host_.clear();
  guest_end_ = 0;
  for (Mapped& m : regions_) Unmap(m);
  regions_.clear();
}

absl::StatusOr<MemoryTable::Mapped> MemoryTable::Map(const MemoryRegion& r,
                                                     UniqueFd fd,
                                                     int fault_fd) {
  if (!fd) return absl::InvalidArgumentError(Describe(r) + ": no fd");
  if (r.memory_size == 0) {
    return absl::InvalidArgumentError(Describe(r) + ": zero size");
  }
  if (Wraps(r.guest_phys_addr, r.memory_size) ||
      Wraps(r.userspace_addr, r.memory_size) ||
      Wraps(r.mmap_offset, r.memory_size)) {
    return absl::InvalidArgumentError(Describe(r) +
                                      ": wraps the 64-bit address space");
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t map_offset = r.mmap_offset & ~(page - 1);
  const uint64_t delta = r.mmap_offset - map_offset;
  const uint64_t length = r.memory_size + delta;
  if (length < r.memory_size || length > (uint64_t{1} << 47)) {
    return absl::InvalidArgumentError(Describe(r) + ": too large to map");
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: fstat: %s", Describe(r), std::strerror(errno)));
  }
  // Mapping past the end of a file would SIGBUS on first touch.
  if (S_ISREG(st.st_mode) &&
      static_cast<uint64_t>(st.st_size) < r.mmap_offset + r.memory_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the fd's file is only %u bytes", Describe(r), st.st_size));
  }
  if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the fd is not a file or device (mode 0%o)", Describe(r),
        st.st_mode));
  }
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_NORESERVE, fd.get(),
                    static_cast<off_t>(map_offset));
  if (base == MAP_FAILED) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: mmap: %s", Describe(r), std::strerror(errno)));
  }
  // The front-end can still shrink the file later (fstat above only
  // checked now): contained by the guard.
  SigbusGuard::Register(base, length, fault_fd, "guest memory");
  Mapped m;
  m.region = r;
  m.base = base;
  m.length = length;
  m.host = static_cast<uint8_t*>(base) + delta;
  m.fd = std::move(fd);
  return m;
}

absl::Status MemoryTable::Install(std::vector<Mapped>& all) {
  if (all.size() > kMaxRegions) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("more than %u memory regions", kMaxRegions));
  }
  // Guest-physical overlaps are rejected by GuestMemoryMap::Create; check
  // the front-end's address space here (translation must be unambiguous).
  std::vector<const Mapped*> by_uaddr;
  by_uaddr.reserve(all.size());
  for (const Mapped& m : all) by_uaddr.push_back(&m);
  std::sort(by_uaddr.begin(), by_uaddr.end(), [](auto* a, auto* b) {
    return a->region.userspace_addr < b->region.userspace_addr;
  });
  for (size_t i = 1; i < by_uaddr.size(); ++i) {
    const MemoryRegion& a = by_uaddr[i - 1]->region;
    const MemoryRegion& b = by_uaddr[i]->region;
    if (Overlap(a.userspace_addr, a.memory_size, b.userspace_addr,
                b.memory_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s overlaps %s in the front-end's address space", Describe(b),
          Describe(a)));
    }
  }
  std::vector<virtio::GuestRegion> table;
  table.reserve(all.size());
  for (const Mapped& m : all) {
    table.push_back({.gpa = m.region.guest_phys_addr,
                     .size = m.region.memory_size,
                     .host = m.host});
  }
  auto map = virtio::GuestMemoryMap::Create(table);
  if (!map.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("memory table rejected: %s", map.status().message()));
  }
  map_ = *std::move(map);
  by_host_.clear();
  guest_end_ = 0;
  for (const Mapped& m : all) {
    by_host_.push_back({reinterpret_cast<uintptr_t>(m.host),
                        m.region.memory_size, m.region.guest_phys_addr});
    // A region may end exactly at 2^64: saturate rather than wrap to 0.
    const uint64_t end = m.region.guest_phys_addr + m.region.memory_size;
    guest_end_ = std::max(guest_end_, end == 0 ? UINT64_MAX : end);
  }
  std::sort(by_host_.begin(), by_host_.end(),
            [](const HostRange& a, const HostRange& b) {
              return a.host < b.host;
            });
  return absl::OkStatus();
}

absl::Status MemoryTable::Replace(absl::Span<const MemoryRegion> regions,
                                  std::vector<UniqueFd> fds) {
  if (fds.size() != regions.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%u regions but %u fds", regions.size(), fds.size()));
  }
  std::vector<Mapped> fresh;
  fresh.reserve(regions.size());
  absl::Status status;
  for (size_t i = 0; i < regions.size() && status.ok(); ++i) {
    auto m = Map(regions[i], std::move(fds[i]), fault_fd_);
    if (m.ok()) {
      fresh.push_back(*std::move(m));
    } else {
      status = m.status();
    }
  }
  if (status.ok()) status = Install(fresh);
  if (!status.ok()) {
    for (Mapped& m : fresh) Unmap(m);
    return status;
  }
  for (Mapped& m : regions_) Unmap(m);
  regions_ = std::move(fresh);
  return absl::OkStatus();
}

absl::Status MemoryTable::Add(const MemoryRegion& region, UniqueFd fd) {
  if (regions_.size() >= kMaxRegions) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("all %u memory slots in use", kMaxRegions));
  }
  auto m = Map(region, std::move(fd), fault_fd_);
  if (!m.ok()) return m.status();
  regions_.push_back(*std::move(m));
  absl::Status s = Install(regions_);
  if (!s.ok()) {
    Unmap(regions_.back());
    regions_.pop_back();
  }
  return s;
}

absl::Status MemoryTable::Remove(const MemoryRegion& region) {
  for (size_t i = 0; i < regions_.size(); ++i) {
    const MemoryRegion& r = regions_[i].region;
    if (r.guest_phys_addr == region.guest_phys_addr &&
        r.memory_size == region.memory_size &&
        r.userspace_addr == region.userspace_addr) {
      Mapped gone = std::move(regions_[i]);
      regions_.erase(regions_.begin() + static_cast<ptrdiff_t>(i));
      absl::Status s = Install(regions_);  // a subset: cannot fail
      Unmap(gone);
      return s;
    }
  }
  return absl::NotFoundError(
      absl::StrFormat("REM_MEM_REG: no %s", Describe(region)));
}

std::optional<uint64_t> MemoryTable::UserToGuest(uint64_t uaddr,
                                                 uint64_t len) const {
  for (const Mapped& m : regions_) {
    const MemoryRegion& r = m.region;
    if (uaddr - r.userspace_addr < r.memory_size) {
      const uint64_t offset = uaddr - r.userspace_addr;
      if (len > r.memory_size - offset) return std::nullopt;
      return r.guest_phys_addr + offset;
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> MemoryTable::HostToGuest(const void* host,
                                                 uint64_t len) const {
  const auto h = reinterpret_cast<uintptr_t>(host);
  // The last range starting at or below h is the only candidate: mappings
  // do not overlap.
  auto it = std::upper_bound(
      by_host_.begin(), by_host_.end(), h,
      [](uintptr_t v, const HostRange& r) { return v < r.host; });
  if (it == by_host_.begin()) return std::nullopt;
  --it;
  const uint64_t offset = h - it->host;
  if (offset >= it->size || len > it->size - offset) return std::nullopt;
  return it->gpa + offset;
}

}  // namespace vhost_user
