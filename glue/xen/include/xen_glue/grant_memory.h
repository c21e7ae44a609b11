// xen_glue/grant_memory.h — guest memory through grant references.
//
// With Linux's xen-grant-dma (CONFIG_XEN_GRANT_DMA_OPS; DT "xen,grant-dma"
// or xen_virtio_grant=yes) a virtio device that offers ACCESS_PLATFORM sees
// DMA addresses (1 << 63) | (gref << 12) | offset; a buffer spanning pages
// uses consecutive grefs. XenGrantMemory<GT, Inner> satisfies GuestMemory:
//
//   * bit 63 set: the grefs covering [addr, addr+len) are mapped together
//     with map_domain_grant_refs (libxengnttab), so a grant-contiguous
//     range is host-contiguous (rings, multi-page buffers) and one iovec
//     (TranslateScatter splits ranges longer than kMaxPagesPerMapping).
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
// Lifetimes. Linux's grant-dma revokes a request's grants when the request
// completes (dma_unmap -> gnttab_end_foreign_access); a grant the backend
// still has mapped is "still in use" and its ref is leaked. So:
//
//   * Ring parts (TranslateRing, which the queues use for them) are mapped
//     once and kept until the memory is destroyed (persistent mappings).
//   * Everything else a translation maps is a request's: each translation
//     takes a reference on its mapping and notes it in a per-thread record.
//     The queue's GrantRelease observer (below) moves the records of the
//     chain it just popped (its buffers, its indirect table) to that
//     request, and drops the references in OnPush, before the used element
//     is written: a mapping nobody references any more is unmapped then, so
//     by the time the driver sees the completion the grants are free.
//   * A zero-length translation (a queue's prefetch) never maps anything.
//   * Without an observer (or past its bounded storage) nothing is dropped:
//     such mappings stay until the memory is destroyed, which is safe.
//
// Storage is bounded and allocated at construction: at most `max_mappings`
// mappings (a slot table and a gref-sorted index, no allocation per map)
// and at most `max_pages` pages mapped; beyond either, translations of new
// ranges fail (logged). The bounce copy of a read-only grant is the one
// allocation on the data path (an anonymous mmap, unmapped with its grant).
#ifndef XEN_GLUE_GRANT_MEMORY_H_
#define XEN_GLUE_GRANT_MEMORY_H_

#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/log.h"
#include "virtio/queue.h"
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
  static constexpr uint32_t kDefaultMaxMappings = 4096;
  // One map_domain_grant_refs call (its refs live on the stack): 1 MiB.
  static constexpr uint32_t kMaxPagesPerMapping = 256;
  // Translations one thread may make between two GrantRelease::OnPop
  // calls and still have them released at completion.
  static constexpr uint32_t kMaxTracked = 512;

  // `gt` null: grant addresses are refused. `inner` null: so are others.
  XenGrantMemory(GT* gt, DomId domid, const Inner* inner,
                 uint64_t max_pages = kDefaultMaxPages,
                 uint32_t max_mappings = kDefaultMaxMappings)
      : gt_(gt),
        domid_(domid),
        inner_(inner),
        max_pages_(max_pages),
        slots_(max_mappings),
        index_(max_mappings),
        instance_(next_instance_.fetch_add(1, std::memory_order_relaxed)) {
    for (uint32_t i = max_mappings; i > 0; --i) {
      slots_[i - 1].next_free = free_;
      free_ = i - 1;
    }
  }
  ~XenGrantMemory() {
    for (uint32_t k = 0; k < live_; ++k) Unmap(slots_[index_[k]]);
    // Records of this thread that nobody took (no observer) must not be
    // mistaken for a later instance's: instances have distinct ids anyway.
    Journal& j = journal_;
    uint32_t w = 0;
    for (uint32_t r = 0; r < j.n; ++r) {
      if (j.entries[r].instance != instance_) j.entries[w++] = j.entries[r];
    }
    j.n = w;
  }
  XenGrantMemory(const XenGrantMemory&) = delete;
  XenGrantMemory& operator=(const XenGrantMemory&) = delete;

  // --- GuestMemory ----------------------------------------------------------------
  uint8_t* TranslateContiguous(uint64_t addr, uint64_t len) const {
    if (!(addr & kGrantAddrBit)) {
      return inner_ != nullptr ? inner_->TranslateContiguous(addr, len) : nullptr;
    }
    return Grant(addr, len, Kind::kRequest);
  }

  // A ring part: mapped for good (see the file comment).
  uint8_t* TranslateRing(uint64_t addr, uint64_t len) const {
    if (!(addr & kGrantAddrBit)) {
      return inner_ != nullptr ? inner_->TranslateContiguous(addr, len)
                               : nullptr;
    }
    return Grant(addr, len == 0 ? 1 : len, Kind::kRing);
  }

  ScatterResult TranslateScatter(uint64_t addr, uint64_t len, iovec* out,
                                 uint32_t capacity) const {
    if (!(addr & kGrantAddrBit)) {
      if (inner_ == nullptr) return {TranslateStatus::kOutOfRange, 0};
      return inner_->TranslateScatter(addr, len, out, capacity);
    }
    uint32_t n = 0;
    while (len > 0) {
      if (n == capacity) return {TranslateStatus::kTooManySegments, 0};
      // Up to the end of the kMaxPagesPerMapping-page run this byte starts.
      const uint64_t off = addr & (kPageSize - 1);
      const uint64_t take =
          std::min<uint64_t>(len, kMaxPagesPerMapping * kPageSize - off);
      uint8_t* p = Grant(addr, take, Kind::kRequest);
      if (p == nullptr) return {TranslateStatus::kOutOfRange, 0};
      out[n].iov_base = p;
      out[n].iov_len = take;
      ++n;
      len -= take;
      addr += take;
    }
    return {TranslateStatus::kOk, n};
  }

  // --- request tracking (GrantRelease) ---------------------------------------
  static constexpr uint32_t kNoSlot = ~0u;

  // Moves this thread's records of request mappings of this memory into
  // `out` (at most `cap`; the rest stay for the next call). Each carries a
  // reference on its mapping, which the caller drops with Release().
  uint32_t TakeTranslated(uint32_t* out, uint32_t cap) const {
    Journal& j = journal_;
    uint32_t taken = 0, w = 0;
    for (uint32_t r = 0; r < j.n; ++r) {
      if (j.entries[r].instance == instance_ && taken < cap) {
        out[taken++] = j.entries[r].slot;
      } else {
        j.entries[w++] = j.entries[r];
      }
    }
    j.n = w;
    return taken;
  }
  // Drops one reference; the last one unmaps a request mapping.
  void Release(uint32_t slot) const {
    std::lock_guard<std::mutex> l(mu_);
    Slot& s = slots_[slot];
    if (s.users == 0) return;  // cannot happen; never underflow into an unmap
    if (--s.users == 0 && !s.persistent) Drop(slot);
  }
  // Drops one reference but keeps the mapping until the memory is
  // destroyed: for a request the caller has no room to track.
  void Keep(uint32_t slot) const {
    std::lock_guard<std::mutex> l(mu_);
    Slot& s = slots_[slot];
    s.persistent = true;
    if (s.users > 0) --s.users;
  }

  // --- observation ------------------------------------------------------------------
  uint64_t mapped_pages() const {
    std::lock_guard<std::mutex> l(mu_);
    return mapped_pages_;
  }
  uint32_t mappings() const {
    std::lock_guard<std::mutex> l(mu_);
    return live_;
  }
  uint64_t map_calls() const {
    std::lock_guard<std::mutex> l(mu_);
    return map_calls_;
  }
  uint64_t unmaps() const {  // request mappings unmapped at completion
    std::lock_guard<std::mutex> l(mu_);
    return unmaps_;
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
  enum class Kind { kRequest, kRing };
  struct Slot {
    uint32_t first = 0;        // first gref
    uint32_t count = 0;        // pages; 0 = free
    uint8_t* host = nullptr;   // what translations return
    void* grant = nullptr;     // the gntdev mapping (== host unless bounced)
    bool bounce = false;
    bool persistent = false;  // a ring's (or untracked): kept until the end
    uint32_t users = 0;       // references held by requests (and records)
    uint32_t next_free = kNoSlot;
  };
  struct Journal {
    struct Entry {
      uint64_t instance;
      uint32_t slot;
    };
    Entry entries[kMaxTracked];
    uint32_t n = 0;
  };

  uint8_t* Grant(uint64_t addr, uint64_t len, Kind kind) const {
    const uint64_t a = addr & ~kGrantAddrBit;
    const uint64_t off = a & (kPageSize - 1);
    const uint64_t first = a >> kPageShift;
    if (gt_ == nullptr || len > (uint64_t{1} << 32) - off) return nullptr;
    const bool probe = len == 0;  // prefetch: look, never map
    const uint64_t pages =
        probe ? 1 : (off + len + kPageSize - 1) >> kPageShift;
    if (first + pages - 1 > 0xffffffffu) return nullptr;
    std::lock_guard<std::mutex> l(mu_);
    const uint32_t hit = Find(static_cast<uint32_t>(first), pages);
    if (hit != kNoSlot) {
      Slot& s = slots_[hit];
      if (kind == Kind::kRing) {
        s.persistent = true;
      } else if (!probe && !s.persistent) {
        ++s.users;
        Record(hit);
      }
      return s.host + ((first - s.first) << kPageShift) + off;
    }
    if (probe) return nullptr;
    if (pages > kMaxPagesPerMapping || mapped_pages_ + pages > max_pages_ ||
        free_ == kNoSlot) {
      ++failures_;
      Logf(LogLevel::kError,
           "xen: grant mapping limit reached (%u pages in %u mappings, at most "
           "%u per mapping); refusing gref %u+%u",
           mapped_pages_, live_, kMaxPagesPerMapping, first, pages);
      return nullptr;
    }
    uint32_t refs[kMaxPagesPerMapping];
    for (uint64_t i = 0; i < pages; ++i) refs[i] = static_cast<uint32_t>(first + i);
    const uint32_t id = free_;
    Slot& s = slots_[id];
    s.count = static_cast<uint32_t>(pages);
    s.first = static_cast<uint32_t>(first);
    ++map_calls_;
    s.grant = gt_->map_domain_grant_refs(s.count, domid_, refs,
                                         PROT_READ | PROT_WRITE);
    s.bounce = false;
    if (s.grant != nullptr) {
      s.host = static_cast<uint8_t*>(s.grant);
    } else {
      // Read-only grant (DMA_TO_DEVICE)? Map it so and bounce.
      ++map_calls_;
      s.grant = gt_->map_domain_grant_refs(s.count, domid_, refs, PROT_READ);
      if (s.grant == nullptr) {
        ++failures_;
        Logf(LogLevel::kWarning, "xen: mapping grant refs %u..%u of d%u failed: %s",
             first, first + pages - 1, domid_, std::strerror(errno));
        s.count = 0;
        return nullptr;
      }
      void* b = mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (b == MAP_FAILED) {
        gt_->unmap(s.grant, s.count);
        ++failures_;
        s.count = 0;
        return nullptr;
      }
      std::memcpy(b, s.grant, pages * kPageSize);
      s.host = static_cast<uint8_t*>(b);
      s.bounce = true;
      ++bounced_;
    }
    free_ = s.next_free;
    s.next_free = kNoSlot;
    s.persistent = kind == Kind::kRing;
    s.users = 0;
    Insert(id);
    mapped_pages_ += pages;
    if (s.count > max_span_) max_span_ = s.count;
    if (!s.persistent) {
      s.users = 1;
      Record(id);
    }
    return s.host + off;
  }

  // Notes a request reference for GrantRelease::OnPop (under mu_).
  void Record(uint32_t id) const {
    Journal& j = journal_;
    if (j.n < kMaxTracked) {
      j.entries[j.n++] = {instance_, id};
      return;
    }
    // Nobody takes this thread's records (no observer), or one chain made
    // more translations than can be tracked: keep the mapping for good.
    Slot& s = slots_[id];
    s.persistent = true;
    --s.users;
    if (untracked_++ == 0) {
      Logf(LogLevel::kWarning,
           "xen: grant mappings not released per request (no observer, or "
           "more than %u translations in one chain); kept until teardown",
           kMaxTracked);
    }
  }

  // The mapping covering grefs [first, first + pages), or kNoSlot.
  uint32_t Find(uint32_t first, uint64_t pages) const {
    // Last index entry whose first gref is <= first.
    uint32_t lo = 0, hi = live_;
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo) / 2;
      if (slots_[index_[mid]].first <= first) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    for (uint32_t k = lo; k > 0; --k) {
      const Slot& s = slots_[index_[k - 1]];
      if (uint64_t{s.first} + max_span_ <= first) break;
      if (uint64_t{s.first} + s.count >= uint64_t{first} + pages)
        return index_[k - 1];
    }
    return kNoSlot;
  }
  void Insert(uint32_t id) const {
    uint32_t k = live_;
    while (k > 0 && slots_[index_[k - 1]].first > slots_[id].first) {
      index_[k] = index_[k - 1];
      --k;
    }
    index_[k] = id;
    ++live_;
  }
  void Drop(uint32_t id) const {
    Slot& s = slots_[id];
    for (uint32_t k = 0; k < live_; ++k) {
      if (index_[k] != id) continue;
      for (uint32_t m = k + 1; m < live_; ++m) index_[m - 1] = index_[m];
      --live_;
      break;
    }
    mapped_pages_ -= s.count;
    ++unmaps_;
    Unmap(s);
    s.count = 0;
    s.next_free = free_;
    free_ = id;
  }
  void Unmap(Slot& s) const {
    if (s.bounce) munmap(s.host, uint64_t{s.count} * kPageSize);
    if (s.grant != nullptr) gt_->unmap(s.grant, s.count);
    s.grant = nullptr;
  }

  GT* gt_;
  DomId domid_;
  const Inner* inner_;
  uint64_t max_pages_;
  mutable std::mutex mu_;
  mutable std::vector<Slot> slots_;      // fixed size
  mutable std::vector<uint32_t> index_;  // [0, live_): slots by first gref
  mutable uint32_t live_ = 0;
  mutable uint32_t free_ = kNoSlot;
  mutable uint32_t max_span_ = 0;
  mutable uint64_t mapped_pages_ = 0;
  mutable uint64_t map_calls_ = 0;
  mutable uint64_t unmaps_ = 0;
  mutable uint64_t failures_ = 0;
  mutable uint64_t bounced_ = 0;
  mutable uint64_t untracked_ = 0;
  const uint64_t instance_;
  static inline std::atomic<uint64_t> next_instance_{1};
  static inline thread_local Journal journal_;
};

// The RingObserver (virtio/ring_observer.h) that releases a request's grant
// mappings when the device completes it: OnPop takes the mappings the
// chain's translations referenced on this thread, OnPush drops them before
// the used element is written. One per queue (the queue's thread only),
// attached with DeviceCore::SetQueueObserver. Storage is fixed at
// construction: `queue_size` request heads and `queue_size *
// kNodesPerRequest` (request, mapping) links; a request whose mappings do
// not fit keeps them until teardown (safe, logged by the memory's counter).
template <typename Mem>
class GrantRelease {
 public:
  static constexpr uint32_t kNodesPerRequest = 8;

  GrantRelease(const Mem* mem, uint32_t queue_size)
      : mem_(mem),
        heads_(queue_size, Mem::kNoSlot),
        nodes_(uint64_t{queue_size} * kNodesPerRequest) {
    for (uint32_t i = static_cast<uint32_t>(nodes_.size()); i > 0; --i) {
      nodes_[i - 1].next = free_;
      free_ = i - 1;
    }
  }
  GrantRelease(const GrantRelease&) = delete;
  GrantRelease& operator=(const GrantRelease&) = delete;

  void OnPop(const DescriptorChain& chain, uint16_t, bool) {
    const uint32_t n = mem_->TakeTranslated(taken_, Mem::kMaxTracked);
    const uint16_t id = chain.token().id;
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t slot = taken_[i];
      if (id >= heads_.size() || free_ == Mem::kNoSlot) {
        mem_->Keep(slot);
        continue;
      }
      bool listed = false;
      for (uint32_t k = heads_[id]; k != Mem::kNoSlot; k = nodes_[k].next) {
        if (nodes_[k].slot == slot) listed = true;
      }
      if (listed) {  // two buffers of the chain in one mapping: one reference
        mem_->Release(slot);
        continue;
      }
      const uint32_t node = free_;
      free_ = nodes_[node].next;
      nodes_[node] = {slot, heads_[id]};
      heads_[id] = node;
    }
  }
  void OnPush(UsedToken token, uint32_t, uint16_t) {
    if (token.id >= heads_.size()) return;
    uint32_t k = heads_[token.id];
    while (k != Mem::kNoSlot) {
      const uint32_t next = nodes_[k].next;
      mem_->Release(nodes_[k].slot);
      nodes_[k].next = free_;
      free_ = k;
      k = next;
    }
    heads_[token.id] = Mem::kNoSlot;
  }
  void OnPublish(const QueueState&) {}

 private:
  struct Node {
    uint32_t slot = 0;
    uint32_t next = 0;
  };
  const Mem* mem_;
  std::vector<uint32_t> heads_;  // by token id (split head / packed buffer id)
  std::vector<Node> nodes_;
  uint32_t free_ = Mem::kNoSlot;
  uint32_t taken_[Mem::kMaxTracked];
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
