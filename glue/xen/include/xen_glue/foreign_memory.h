// xen_glue/foreign_memory.h — guest memory by foreign mapping, with a cache.
//
// XenGuestMemory<FM> satisfies virtio's GuestMemory concept over the guest's
// RAM banks (from configuration: Xen gives a backend no portable way to ask
// for the layout; Arm guests have GUEST_RAM0 at 0x40000000 and GUEST_RAM1
// at 0x200000000). Each bank gets one PROT_NONE host reservation the size
// of the bank, so guest-contiguous memory is host-contiguous and rings that
// cross a bucket boundary still translate as one pointer. 2 MiB buckets
// are foreign-mapped into the reservation (map2 + MAP_FIXED) on first use;
// pages Xen refuses (holes, ballooned out) stay inaccessible and any
// translation touching them fails (nullptr / kOutOfRange).
//
// Invalidate() is the answer to IOREQ_TYPE_INVALIDATE: every mapped bucket
// is re-mapped in place, which drops Xen's references to pages the guest
// no longer has (they become a private scratch page and translations of
// them fail) while host pointers the queues cached for their rings stay
// valid. (Unmapping outright, as a plain cache would, makes the next ring
// access of a live queue fault: found by the Backend test.) It must not
// run concurrently with translations: in this glue the ioreq dispatch
// thread is the only user of a server's memory.
//
// Also a GuestCopier, so rep MMIO with data_is_ptr can reach guest buffers.
#ifndef XEN_GLUE_FOREIGN_MEMORY_H_
#define XEN_GLUE_FOREIGN_MEMORY_H_

#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/guest_memory.h"
#include "xen_glue/ioreq_server.h"
#include "xen_glue/ports.h"

namespace virtio::xg {

struct GuestRamBank {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

template <ForeignMemoryPort FM>
class XenGuestMemory final : public GuestCopier {
 public:
  static constexpr uint64_t kBucketPages = 512;
  static constexpr uint64_t kBucketBytes = kBucketPages * kPageSize;

  static absl::StatusOr<std::unique_ptr<XenGuestMemory>> Create(
      FM& fm, DomId domid, std::vector<GuestRamBank> banks) {
    std::sort(banks.begin(), banks.end(),
              [](const GuestRamBank& a, const GuestRamBank& b) { return a.gpa < b.gpa; });
    for (size_t i = 0; i < banks.size(); ++i) {
      const GuestRamBank& b = banks[i];
      if (b.size == 0 || b.gpa % kPageSize || b.size % kPageSize ||
          b.gpa + b.size < b.gpa) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "RAM bank 0x%x+0x%x: must be page aligned, non-empty, not wrapping",
            b.gpa, b.size));
      }
      if (i > 0 && banks[i - 1].gpa + banks[i - 1].size > b.gpa) {
        return absl::InvalidArgumentError("RAM banks overlap");
      }
    }
    std::unique_ptr<XenGuestMemory> m(new XenGuestMemory(fm, domid));
    for (const GuestRamBank& b : banks) {
      void* r = mmap(nullptr, b.size, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (r == MAP_FAILED) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "reserving %u bytes for RAM bank 0x%x: %s", b.size, b.gpa,
            std::strerror(errno)));
      }
      Bank bank;
      bank.gpa = b.gpa;
      bank.size = b.size;
      bank.base = static_cast<uint8_t*>(r);
      bank.pages = b.size / kPageSize;
      bank.page_state = std::make_unique<std::atomic<uint8_t>[]>(bank.pages);
      bank.bucket_mapped = std::make_unique<bool[]>(Buckets(bank));
      for (uint64_t i = 0; i < bank.pages; ++i) bank.page_state[i].store(0);
      m->banks_.push_back(std::move(bank));
    }
    return m;
  }

  ~XenGuestMemory() override {
    for (Bank& b : banks_) {
      for (uint64_t k = 0; k < Buckets(b); ++k) {
        if (b.bucket_mapped[k]) fm_.unmap(b.base + k * kBucketBytes, BucketPages(b, k));
      }
      munmap(b.base, b.size);
    }
  }
  XenGuestMemory(const XenGuestMemory&) = delete;
  XenGuestMemory& operator=(const XenGuestMemory&) = delete;

  // --- GuestMemory ------------------------------------------------------------------
  uint8_t* TranslateContiguous(uint64_t gpa, uint64_t len) const {
    const Bank* b = Find(gpa);
    if (b == nullptr) return nullptr;
    const uint64_t off = gpa - b->gpa;
    if (len > b->size - off) return nullptr;
    if (!Ensure(*b, off, len == 0 ? 1 : len)) return nullptr;
    return b->base + off;
  }

  ScatterResult TranslateScatter(uint64_t gpa, uint64_t len, iovec* out,
                                 uint32_t capacity) const {
    uint32_t n = 0;
    while (len > 0) {
      const Bank* b = Find(gpa);
      if (b == nullptr) return {TranslateStatus::kOutOfRange, 0};
      if (n == capacity) return {TranslateStatus::kTooManySegments, 0};
      const uint64_t off = gpa - b->gpa;
      const uint64_t take = std::min(len, b->size - off);
      if (!Ensure(*b, off, take)) return {TranslateStatus::kOutOfRange, 0};
      out[n].iov_base = b->base + off;
      out[n].iov_len = take;
      ++n;
      len -= take;
      gpa += take;
      if (gpa == 0 && len > 0) return {TranslateStatus::kOutOfRange, 0};
    }
    return {TranslateStatus::kOk, n};
  }

  // --- INVALIDATE ------------------------------------------------------------------
  void Invalidate() {
    std::lock_guard<std::mutex> l(mu_);
    for (Bank& b : banks_) {
      for (uint64_t k = 0; k < Buckets(b); ++k) {
        if (!b.bucket_mapped[k]) continue;
        // Re-map in place (MAP_FIXED replaces the old mapping, which drops
        // Xen's references to every page in it): pointers the queues hold
        // to rings stay valid, pages the guest gave away become a private
        // scratch page, so a stale access can neither fault nor reach a
        // freed page.
        RemapBucketLocked(b, k);
      }
    }
    ++invalidations_;
  }

  // --- GuestCopier -----------------------------------------------------------------
  bool ReadGuest(uint64_t gpa, void* dst, uint64_t len) override {
    return Copy(gpa, len, [&](uint8_t* host, uint64_t off, uint64_t n) {
      std::memcpy(static_cast<uint8_t*>(dst) + off, host, n);
    });
  }
  bool WriteGuest(uint64_t gpa, const void* src, uint64_t len) override {
    return Copy(gpa, len, [&](uint8_t* host, uint64_t off, uint64_t n) {
      std::memcpy(host, static_cast<const uint8_t*>(src) + off, n);
    });
  }

  uint64_t map_calls() const {
    std::lock_guard<std::mutex> l(mu_);
    return map_calls_;
  }
  uint64_t invalidations() const {
    std::lock_guard<std::mutex> l(mu_);
    return invalidations_;
  }

 private:
  static constexpr uint8_t kUnmapped = 0;
  static constexpr uint8_t kMapped = 1;
  static constexpr uint8_t kBad = 2;   // Xen refused the page

  struct Bank {
    uint64_t gpa = 0;
    uint64_t size = 0;
    uint8_t* base = nullptr;
    uint64_t pages = 0;
    std::unique_ptr<std::atomic<uint8_t>[]> page_state;
    std::unique_ptr<bool[]> bucket_mapped;  // guarded by mu_
  };

  XenGuestMemory(FM& fm, DomId domid) : fm_(fm), domid_(domid) {}

  static uint64_t Buckets(const Bank& b) {
    return (b.pages + kBucketPages - 1) / kBucketPages;
  }
  static uint64_t BucketPages(const Bank& b, uint64_t k) {
    return std::min(kBucketPages, b.pages - k * kBucketPages);
  }

  const Bank* Find(uint64_t gpa) const {
    for (const Bank& b : banks_) {
      if (gpa >= b.gpa && gpa - b.gpa < b.size) return &b;
    }
    return nullptr;
  }

  // All pages of [off, off+len) mapped (mapping buckets as needed).
  bool Ensure(const Bank& b, uint64_t off, uint64_t len) const {
    const uint64_t first = off / kPageSize;
    const uint64_t last = (off + len - 1) / kPageSize;
    for (uint64_t p = first; p <= last; ++p) {
      const uint8_t s = b.page_state[p].load(std::memory_order_acquire);
      if (s == kMapped) continue;
      if (s != kUnmapped) return false;
      if (!MapBucket(b, p / kBucketPages)) return false;
      if (b.page_state[p].load(std::memory_order_acquire) != kMapped) return false;
    }
    return true;
  }

  bool MapBucket(const Bank& cb, uint64_t k) const {
    std::lock_guard<std::mutex> l(mu_);
    Bank& b = const_cast<Bank&>(cb);
    if (b.bucket_mapped[k]) return true;
    const uint64_t pages = BucketPages(b, k);
    std::vector<XenPfn> pfns(pages);
    std::vector<int> err(pages, 0);
    const XenPfn pfn0 = (b.gpa >> kPageShift) + k * kBucketPages;
    for (uint64_t i = 0; i < pages; ++i) pfns[i] = pfn0 + i;
    uint8_t* at = b.base + k * kBucketBytes;
    ++map_calls_;
    void* r = fm_.map2(domid_, at, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                       pages, pfns.data(), err.data());
    if (r == nullptr) {
      for (uint64_t i = 0; i < pages; ++i) {
        b.page_state[k * kBucketPages + i].store(kBad, std::memory_order_release);
      }
      return false;
    }
    for (uint64_t i = 0; i < pages; ++i) {
      b.page_state[k * kBucketPages + i].store(err[i] == 0 ? kMapped : kBad,
                                               std::memory_order_release);
    }
    b.bucket_mapped[k] = true;
    return true;
  }

  void RemapBucketLocked(Bank& b, uint64_t k) {
    const uint64_t pages = BucketPages(b, k);
    std::vector<XenPfn> pfns(pages);
    std::vector<int> err(pages, 0);
    const XenPfn pfn0 = (b.gpa >> kPageShift) + k * kBucketPages;
    for (uint64_t i = 0; i < pages; ++i) pfns[i] = pfn0 + i;
    uint8_t* at = b.base + k * kBucketBytes;
    ++map_calls_;
    void* r = fm_.map2(domid_, at, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                       pages, pfns.data(), err.data());
    for (uint64_t i = 0; i < pages; ++i) {
      const bool ok = r != nullptr && err[i] == 0;
      if (!ok) {
        mmap(at + i * kPageSize, kPageSize, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      }
      b.page_state[k * kBucketPages + i].store(ok ? kMapped : kBad,
                                               std::memory_order_release);
    }
  }

  template <typename Fn>
  bool Copy(uint64_t gpa, uint64_t len, Fn fn) {
    iovec iov[8];
    uint64_t done = 0;
    while (done < len) {
      const uint64_t chunk = std::min<uint64_t>(len - done, kBucketBytes);
      ScatterResult r = TranslateScatter(gpa + done, chunk, iov, 8);
      if (r.status != TranslateStatus::kOk) return false;
      uint64_t off = done;
      for (uint32_t i = 0; i < r.segments; ++i) {
        fn(static_cast<uint8_t*>(iov[i].iov_base), off, iov[i].iov_len);
        off += iov[i].iov_len;
      }
      done += chunk;
    }
    return true;
  }

  FM& fm_;
  DomId domid_;
  std::vector<Bank> banks_;
  mutable std::mutex mu_;
  mutable uint64_t map_calls_ = 0;
  uint64_t invalidations_ = 0;
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_FOREIGN_MEMORY_H_
