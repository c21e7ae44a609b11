// xen_glue/grant_memory.h — guest memory through grant references.
//
// With Linux's xen-grant-dma (CONFIG_XEN_GRANT_DMA_OPS; DT "xen,grant-dma"
// or xen_virtio_grant=yes) a virtio device that offers ACCESS_PLATFORM sees
// DMA addresses (1 << 63) | (gref << 12) | offset; a buffer spanning pages
// uses consecutive grefs. XenGrantMemory<GT, Inner> satisfies GuestMemory:
//
//   * bit 63 set: the grefs covering [addr, addr+len) are mapped together
//     with map_domain_grant_refs (libxengnttab), so a grant-contiguous
//     range is host-contiguous (rings, multi-page buffers) and one iovec.
//     If any gref of the range cannot be mapped (bad ref, revoked, granted
//     to another domain), the whole translation fails (nullptr /
//     kOutOfRange): the request using it fails, nothing else does.
//   * bit 63 clear: handed to `inner` (foreign mapping) or refused when
//     there is none (a device that did not offer ACCESS_PLATFORM).
//
// Read-only grants. grant-dma grants DMA_TO_DEVICE buffers read-only; the
// memory API does not say whether the device will write, and a write to a
// read-only mapping would fault the backend. So a range is mapped
// read-write first and, if Xen refuses that, read-only into a private
// bounce copy: the device reads the guest's data, and its writes (which the
// guest never allowed) go nowhere.
//
// The mapping cache. Mappings are kept (keyed by first gref and count) and
// reused by later translations of a range they cover; queues hold ring
// pointers for the queue's lifetime, so nothing is unmapped before the
// memory object is destroyed. At most `max_pages` pages are mapped; beyond
// that, translations of new ranges fail (logged). KNOWN GAP: Xen's
// guidance is to unmap data-buffer grants before completing the request
// (else the frontend's end-foreign-access finds them "still in use" and
// leaks the ref). That needs a per-request release point from libvirtio,
// which GuestMemory does not have; see README.
#ifndef XEN_GLUE_GRANT_MEMORY_H_
#define XEN_GLUE_GRANT_MEMORY_H_

#include <sys/mman.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "virtio/guest_memory.h"
#include "virtio/log.h"
#include "xen_glue/abi.h"
#include "xen_glue/ioreq_server.h"
#include "xen_glue/ports.h"

namespace virtio::xg {

inline constexpr uint64_t kGrantAddrBit = uint64_t{1} << 63;

// Stands in for a GrantTablePort when none is available (no libxengnttab):
// every map fails with ENOSYS.
struct NoGrantTable {
  void* map_domain_grant_refs(uint32_t, uint32_t, uint32_t*, int) {
    errno = ENOSYS;
    return nullptr;
  }
  int unmap(void*, uint32_t) {
    errno = ENOSYS;
    return -1;
  }
};
static_assert(GrantTablePort<NoGrantTable>);

template <GrantTablePort GT, typename Inner>
class XenGrantMemory {
 public:
  static constexpr uint64_t kDefaultMaxPages = 65536;  // 256 MiB

  // `gt` null: grant addresses are refused. `inner` null: so are others.
  XenGrantMemory(GT* gt, DomId domid, const Inner* inner,
                 uint64_t max_pages = kDefaultMaxPages)
      : gt_(gt), domid_(domid), inner_(inner), max_pages_(max_pages) {}
  ~XenGrantMemory() {
    for (auto& [ref, m] : maps_) Release(m);
  }
  XenGrantMemory(const XenGrantMemory&) = delete;
  XenGrantMemory& operator=(const XenGrantMemory&) = delete;

  // --- GuestMemory ----------------------------------------------------------------
  uint8_t* TranslateContiguous(uint64_t addr, uint64_t len) const {
    if (!(addr & kGrantAddrBit)) {
      return inner_ != nullptr ? inner_->TranslateContiguous(addr, len) : nullptr;
    }
    return Grant(addr, len == 0 ? 1 : len);
  }

  ScatterResult TranslateScatter(uint64_t addr, uint64_t len, iovec* out,
                                 uint32_t capacity) const {
    if (!(addr & kGrantAddrBit)) {
      if (inner_ == nullptr) return {TranslateStatus::kOutOfRange, 0};
      return inner_->TranslateScatter(addr, len, out, capacity);
    }
    if (len == 0) return {TranslateStatus::kOk, 0};
    if (capacity == 0) return {TranslateStatus::kTooManySegments, 0};
    uint8_t* p = Grant(addr, len);
    if (p == nullptr) return {TranslateStatus::kOutOfRange, 0};
    out[0].iov_base = p;
    out[0].iov_len = len;
    return {TranslateStatus::kOk, 1};
  }

  // --- observation ------------------------------------------------------------------
  uint64_t mapped_pages() const {
    std::lock_guard<std::mutex> l(mu_);
    return mapped_pages_;
  }
  uint64_t map_calls() const {
    std::lock_guard<std::mutex> l(mu_);
    return map_calls_;
  }
  uint64_t failures() const {
    std::lock_guard<std::mutex> l(mu_);
    return failures_;
  }
  uint64_t bounced() const {
    std::lock_guard<std::mutex> l(mu_);
    return bounced_;
  }

 private:
  struct Mapping {
    uint32_t count = 0;
    uint8_t* host = nullptr;   // what translations return
    void* grant = nullptr;     // the gntdev mapping (== host unless bounced)
    bool bounce = false;
  };

  uint8_t* Grant(uint64_t addr, uint64_t len) const {
    const uint64_t a = addr & ~kGrantAddrBit;
    const uint64_t off = a & (kPageSize - 1);
    const uint64_t first = a >> kPageShift;
    if (gt_ == nullptr || len > (uint64_t{1} << 32) - off) return nullptr;
    const uint64_t pages = (off + len + kPageSize - 1) >> kPageShift;
    if (first + pages - 1 > 0xffffffffu) return nullptr;
    std::lock_guard<std::mutex> l(mu_);
    // A cached mapping covering [first, first + pages)?
    auto it = maps_.upper_bound(static_cast<uint32_t>(first));
    while (it != maps_.begin()) {
      --it;
      if (it->first + uint64_t{max_span_} <= first) break;
      if (it->first + uint64_t{it->second.count} >= first + pages) {
        return it->second.host + ((first - it->first) << kPageShift) + off;
      }
    }
    if (mapped_pages_ + pages > max_pages_) {
      ++failures_;
      Logf(LogLevel::kError,
           "xen: grant mapping cache full (%u pages); refusing gref %u+%u",
           max_pages_, first, pages);
      return nullptr;
    }
    std::vector<uint32_t> refs(pages);
    for (uint64_t i = 0; i < pages; ++i) refs[i] = static_cast<uint32_t>(first + i);
    Mapping m;
    m.count = static_cast<uint32_t>(pages);
    ++map_calls_;
    m.grant = gt_->map_domain_grant_refs(m.count, domid_, refs.data(),
                                         PROT_READ | PROT_WRITE);
    if (m.grant != nullptr) {
      m.host = static_cast<uint8_t*>(m.grant);
    } else {
      // Read-only grant (DMA_TO_DEVICE)? Map it so and bounce.
      ++map_calls_;
      m.grant = gt_->map_domain_grant_refs(m.count, domid_, refs.data(), PROT_READ);
      if (m.grant == nullptr) {
        ++failures_;
        Logf(LogLevel::kWarning, "xen: mapping grant refs %u..%u of d%u failed: %s",
             first, first + pages - 1, domid_, std::strerror(errno));
        return nullptr;
      }
      void* b = mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (b == MAP_FAILED) {
        gt_->unmap(m.grant, m.count);
        ++failures_;
        return nullptr;
      }
      std::memcpy(b, m.grant, pages * kPageSize);
      m.host = static_cast<uint8_t*>(b);
      m.bounce = true;
      ++bounced_;
    }
    mapped_pages_ += pages;
    if (m.count > max_span_) max_span_ = m.count;
    uint8_t* host = m.host + off;
    maps_.emplace(static_cast<uint32_t>(first), m);
    return host;
  }

  void Release(Mapping& m) {
    if (m.bounce) munmap(m.host, uint64_t{m.count} * kPageSize);
    if (m.grant != nullptr) gt_->unmap(m.grant, m.count);
    m.grant = nullptr;
  }

  GT* gt_;
  DomId domid_;
  const Inner* inner_;
  uint64_t max_pages_;
  mutable std::mutex mu_;
  mutable std::multimap<uint32_t, Mapping> maps_;  // by first gref
  mutable uint32_t max_span_ = 0;
  mutable uint64_t mapped_pages_ = 0;
  mutable uint64_t map_calls_ = 0;
  mutable uint64_t failures_ = 0;
  mutable uint64_t bounced_ = 0;
};

// Offers VIRTIO_F_ACCESS_PLATFORM on a virtio-mmio device without touching
// the device model: DeviceCore fixes its offered features at construction
// and has no way to add bit 33, so this IoDevice filter ORs it into the
// DeviceFeatures window 1 and strips it from DriverFeatures window 1 before
// the transport sees it (the device would refuse FEATURES_OK for an
// unoffered bit). accepted() says whether the driver took it.
class AccessPlatformMmio final : public IoDevice {
 public:
  static constexpr uint32_t kBitInHighWindow = 1u << (33 - 32);
  explicit AccessPlatformMmio(IoDevice& inner) : inner_(inner) {}

  uint64_t MmioRead(uint64_t offset, uint32_t size) override {
    uint64_t v = inner_.MmioRead(offset, size);
    if (offset == kDeviceFeatures && size == 4 && device_sel_ == 1) v |= kBitInHighWindow;
    return v;
  }
  void MmioWrite(uint64_t offset, uint32_t size, uint64_t value) override {
    if (size == 4) {
      if (offset == kDeviceFeaturesSel) device_sel_ = static_cast<uint32_t>(value);
      if (offset == kDriverFeaturesSel) driver_sel_ = static_cast<uint32_t>(value);
      if (offset == kDriverFeatures && driver_sel_ == 1) {
        accepted_ = (value & kBitInHighWindow) != 0;
        value &= ~uint64_t{kBitInHighWindow};
      }
      if (offset == kStatus && value == 0) accepted_ = false;
    }
    inner_.MmioWrite(offset, size, value);
  }
  bool accepted() const { return accepted_; }

 private:
  // virtio-mmio register offsets (VIRTIO 1.2 §4.2.2).
  static constexpr uint64_t kDeviceFeatures = 0x010;
  static constexpr uint64_t kDeviceFeaturesSel = 0x014;
  static constexpr uint64_t kDriverFeatures = 0x020;
  static constexpr uint64_t kDriverFeaturesSel = 0x024;
  static constexpr uint64_t kStatus = 0x070;

  IoDevice& inner_;
  uint32_t device_sel_ = 0;
  uint32_t driver_sel_ = 0;
  bool accepted_ = false;
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_GRANT_MEMORY_H_
