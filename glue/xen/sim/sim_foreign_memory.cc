// sim/sim_foreign_memory.cc — the simulated libxenforeignmemory
// (sim_xen.h): ioreq pages as resources, and guest pages mapped by gfn.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "sim/sim_errors.h"
#include "sim/sim_ioreq_server.h"
#include "sim/sim_xen.h"

namespace virtio::xg::sim {

// --- foreign memory ----------------------------------------------------------

struct Resource {
  void* addr;
};

void* SimXen::map_resource(DomId caller, DomId d, unsigned type, unsigned id,
                           unsigned long frame, unsigned long nr, void** addr,
                           int prot) {
  std::lock_guard<std::mutex> l(mu_);
  if (fail_map_resource_ != 0) {
    const int e = fail_map_resource_;
    fail_map_resource_ = 0;
    return FailPtr(e);
  }
  if (type != kResourceIoreqServer) return FailPtr(EINVAL);
  Server* s = nullptr;
  if (int e = CheckServer(caller, d, static_cast<IoServId>(id), &s))
    return FailPtr(e);
  if (frame == kResourceFrameBufioreq && s->bufioreq == kBufioreqOff)
    return FailPtr(ENOENT);
  if (frame != ResourceFrameIoreq(0) || nr != 1) return FailPtr(EINVAL);
  if (s->legacy_used) return FailPtr(EPERM);
  void* p = mmap(*addr, kPageSize, prot, MAP_SHARED, s->page_fd, 0);
  if (p == MAP_FAILED) return nullptr;
  s->page_mapped = true;
  *addr = p;
  return new Resource{p};
}

int SimXen::unmap_resource(void* token) {
  auto* r = static_cast<Resource*>(token);
  if (r == nullptr) return Fail(EINVAL);
  munmap(r->addr, kPageSize);
  delete r;
  return 0;
}

void* SimXen::map2(uint32_t dom, void* addr, int prot, int flags, size_t pages,
                   const XenPfn* pfns, int* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (dom != options_.domid) return FailPtr(ESRCH);
  if (pages == 0 || pages > (1u << 20)) return FailPtr(EINVAL);
  const size_t bytes = pages * kPageSize;
  const bool fixed = addr != nullptr && (flags & MAP_FIXED);
  uint8_t* base = static_cast<uint8_t*>(addr);
  if (!fixed) {
    void* r =
        mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return nullptr;
    base = static_cast<uint8_t*>(r);
  }
  int first_error = 0;
  for (size_t i = 0; i < pages;) {
    const XenPfn pfn = pfns[i];
    int e = 0;
    int fd = -1;
    off_t off = 0;
    size_t run = 1;
    if (failed_pfns_.count(pfn)) {
      e = EFAULT;
    } else if (options_.arch == Arch::kX86 && pfn >= kLegacyGfnBase &&
               pfn < kLegacyGfnBase + kMaxIoreqServers &&
               FindServer(static_cast<IoServId>(pfn - kLegacyGfnBase)) !=
                   nullptr &&
               FindServer(static_cast<IoServId>(pfn - kLegacyGfnBase))
                   ->legacy_used) {
      Server* s = FindServer(static_cast<IoServId>(pfn - kLegacyGfnBase));
      fd = s->page_fd;
      s->page_mapped = true;
    } else {
      e = EINVAL;
      const uint64_t gpa = pfn << kPageShift;
      for (size_t b = 0; b < options_.ram.size(); ++b) {
        const RamBank& bank = options_.ram[b];
        if (gpa >= bank.gpa && gpa - bank.gpa < bank.size) {
          e = 0;
          fd = ram_fd_;
          off = static_cast<off_t>(bank_off_[b] + (gpa - bank.gpa));
          // Coalesce consecutive pfns in the same bank into one mmap.
          while (i + run < pages && pfns[i + run] == pfn + run &&
                 !failed_pfns_.count(pfn + run) &&
                 ((pfn + run) << kPageShift) - bank.gpa < bank.size) {
            ++run;
          }
          break;
        }
      }
    }
    if (e == 0) {
      void* p = mmap(base + i * kPageSize, run * kPageSize, prot,
                     MAP_SHARED | MAP_FIXED, fd, off);
      if (p == MAP_FAILED) e = errno;
    }
    for (size_t k = 0; k < run; ++k) {
      if (err != nullptr) err[i + k] = -e;
    }
    if (e != 0 && first_error == 0) first_error = e;
    for (size_t k = 0; e == 0 && k < run; ++k) {
      mapped_.insert(reinterpret_cast<uintptr_t>(base + (i + k) * kPageSize));
    }
    if (e != 0) {
      for (size_t k = 0; k < run; ++k)
        mapped_.erase(reinterpret_cast<uintptr_t>(base + (i + k) * kPageSize));
    }
    i += run;
  }
  if (first_error != 0 && err == nullptr) {
    // All or nothing: put the reservation back (or drop ours).
    for (size_t k = 0; k < pages; ++k)
      mapped_.erase(reinterpret_cast<uintptr_t>(base + k * kPageSize));
    if (fixed) {
      // Best effort: if the reservation cannot be put back, the range is
      // left unmapped, and the caller hears of the first failure anyway.
      (void)mmap(base, bytes, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    } else {
      munmap(base, bytes);
    }
    return FailPtr(first_error);
  }
  return base;
}

int SimXen::unmap(void* addr, size_t pages) {
  if (munmap(addr, pages * kPageSize) != 0) return -1;
  std::lock_guard<std::mutex> l(mu_);
  for (size_t k = 0; k < pages; ++k) {
    mapped_.erase(reinterpret_cast<uintptr_t>(static_cast<uint8_t*>(addr) +
                                              k * kPageSize));
  }
  return 0;
}

}  // namespace virtio::xg::sim
