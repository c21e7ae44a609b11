// sim/sim_grant_table.cc — the simulated grant table and libxengnttab
// (sim_xen.h): grants the guest makes, and their mapping by a backend.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "sim/sim_errors.h"
#include "sim/sim_xen.h"

namespace virtio::xg::sim {

// --- grant table -------------------------------------------------------------

uint32_t SimXen::GrantRange(XenPfn gfn, uint32_t pages, bool readonly,
                            DomId to) {
  std::lock_guard<std::mutex> l(mu_);
  const uint32_t first = static_cast<uint32_t>(grants_.size());
  if (first + pages > kGrantTableSize) Die("grant table full");
  for (uint32_t i = 0; i < pages; ++i) {
    grants_.push_back({.active = true,
                       .readonly = readonly,
                       .to = to,
                       .gfn = gfn + i,
                       .maps = 0});
  }
  return first;
}

uint32_t SimXen::GrantAccess(XenPfn gfn, bool readonly, DomId to) {
  return GrantRange(gfn, 1, readonly, to);
}

bool SimXen::EndAccess(uint32_t ref) {
  std::lock_guard<std::mutex> l(mu_);
  if (ref >= grants_.size() || !grants_[ref].active) return false;
  if (grants_[ref].maps != 0) return false;  // GTF_reading/writing: in use
  grants_[ref].active = false;
  return true;
}

int SimXen::last_gntst() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_gntst_;
}

uint32_t SimXen::GrantMapCount(uint32_t ref) const {
  std::lock_guard<std::mutex> l(mu_);
  return ref < grants_.size() ? grants_[ref].maps : 0;
}

uint64_t SimXen::grant_maps() const {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t n = 0;
  for (const auto& [addr, m] : grant_maps_) n += m.refs.size();
  return n;
}

void* SimXen::map_grant_refs(DomId caller, uint32_t n, uint32_t dom,
                             const uint32_t* refs, int prot) {
  std::lock_guard<std::mutex> l(mu_);
  if (n == 0 || n > 1024) return FailPtr(EINVAL);
  // Xen checks each map op (__gnttab_map_grant_ref); gntdev turns any
  // non-okay status into EINVAL for the mmap.
  auto fail = [&](int gntst) {
    last_gntst_ = gntst;
    return FailPtr(EINVAL);
  };
  if (dom != options_.domid) return fail(kGntstBadDomain);
  const bool write = (prot & PROT_WRITE) != 0;
  std::vector<off_t> offs(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (refs[i] < kFirstGrantRef || refs[i] >= kGrantTableSize ||
        refs[i] >= grants_.size()) {
      // Never-used refs below the table's size are "bad flags" in Xen; past
      // nr_grant_entries it is "Bad ref".
      return fail(refs[i] >= kGrantTableSize ? kGntstBadGntref
                                             : kGntstGeneralError);
    }
    const GrantEntry& g = grants_[refs[i]];
    if (!g.active || g.to != caller || (write && g.readonly)) {
      return fail(kGntstGeneralError);
    }
    const uint64_t gpa = g.gfn << kPageShift;
    bool found = false;
    for (size_t b = 0; b < options_.ram.size(); ++b) {
      const RamBank& bank = options_.ram[b];
      if (gpa >= bank.gpa && gpa - bank.gpa < bank.size) {
        offs[i] = static_cast<off_t>(bank_off_[b] + (gpa - bank.gpa));
        found = true;
      }
    }
    if (!found) return fail(kGntstGeneralError);  // granted a non-RAM gfn
  }
  const size_t bytes = size_t{n} * kPageSize;
  void* r = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED) return nullptr;
  uint8_t* base = static_cast<uint8_t*>(r);
  for (uint32_t i = 0; i < n; ++i) {
    if (mmap(base + size_t{i} * kPageSize, kPageSize,
             write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED | MAP_FIXED,
             ram_fd_, offs[i]) == MAP_FAILED) {
      const int e = errno;
      munmap(base, bytes);
      return FailPtr(e);
    }
  }
  GrantMapping m;
  m.refs.assign(refs, refs + n);
  for (uint32_t ref : m.refs) ++grants_[ref].maps;
  grant_maps_[reinterpret_cast<uintptr_t>(base)] = std::move(m);
  return base;
}

int SimXen::unmap_grants(void* addr, uint32_t n) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = grant_maps_.find(reinterpret_cast<uintptr_t>(addr));
  if (it == grant_maps_.end() || it->second.refs.size() != n) {
    errno = EINVAL;
    return -1;
  }
  for (uint32_t ref : it->second.refs) --grants_[ref].maps;
  grant_maps_.erase(it);
  munmap(addr, size_t{n} * kPageSize);
  return 0;
}

}  // namespace virtio::xg::sim
