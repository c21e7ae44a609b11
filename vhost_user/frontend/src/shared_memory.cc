#include "vhost_user/frontend/shared_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace vhost_user {

absl::StatusOr<std::unique_ptr<SharedMemory>> SharedMemory::Create(
    uint64_t size) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (size == 0 || size > (uint64_t{1} << 46)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("shared memory of %u bytes", size));
  }
  size = (size + page - 1) / page * page;
  UniqueFd fd(memfd_create("vhost-user-frontend", MFD_CLOEXEC));
  if (!fd) {
    return absl::InternalError(
        absl::StrFormat("memfd_create: %s", std::strerror(errno)));
  }
  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "ftruncate memfd to %u bytes: %s", size, std::strerror(errno)));
  }
  void* p =
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("mmap %u bytes: %s", size, std::strerror(errno)));
  }
  return std::unique_ptr<SharedMemory>(
      new SharedMemory(std::move(fd), static_cast<uint8_t*>(p), size));
}

SharedMemory::~SharedMemory() { munmap(base_, size_); }

MemoryRegion SharedMemory::region() const {
  const auto addr = reinterpret_cast<uint64_t>(base_);
  return {.guest_phys_addr = addr,
          .memory_size = size_,
          .userspace_addr = addr,
          .mmap_offset = 0};
}

uint8_t* SharedMemory::Reserve(uint64_t len, uint64_t align) {
  const uint64_t start = (reserved_ + align - 1) & ~(align - 1);
  if (start > size_ || len > size_ - start) return nullptr;
  reserved_ = start + len;
  std::memset(base_ + start, 0, len);
  return base_ + start;
}

void SharedMemory::InitArena() {
  std::lock_guard<std::mutex> lock(mu_);
  free_.clear();
  used_.clear();
  if (reserved_ < size_) free_.emplace(reserved_, size_ - reserved_);
}

void* SharedMemory::Alloc(uint64_t len, uint64_t align) {
  if (len == 0 || align == 0 || (align & (align - 1)) != 0) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const uint64_t off = it->first, flen = it->second;
    const uint64_t addr = reinterpret_cast<uint64_t>(base_) + off;
    const uint64_t pad = (align - addr % align) % align;
    if (pad > flen || len > flen - pad) continue;
    free_.erase(it);
    if (pad > 0) free_.emplace(off, pad);
    const uint64_t rest = flen - pad - len;
    if (rest > 0) free_.emplace(off + pad + len, rest);
    used_.emplace(off + pad, std::make_pair(off + pad, len));
    return base_ + off + pad;
  }
  return nullptr;
}

void SharedMemory::Free(void* p) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t off = static_cast<uint64_t>(static_cast<uint8_t*>(p) - base_);
  auto u = used_.find(off);
  if (u == used_.end()) return;  // not ours, or freed twice
  uint64_t start = u->second.first, len = u->second.second;
  used_.erase(u);
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + len) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      free_.erase(prev);
    }
  }
  free_.emplace(start, len);
}

uint64_t SharedMemory::arena_free() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t n = 0;
  for (const auto& [off, len] : free_) n += len;
  return n;
}

}  // namespace vhost_user
