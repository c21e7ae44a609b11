// fuzz/ring_fuzzer.cc — the device side of both ring layouts against an
// arbitrary guest.
//
// The input becomes a guest memory image (1..4 regions with gaps, each its
// own exact-size heap allocation so ASan sees every out-of-bounds host
// access), a queue configuration (split or packed, size, features, ring
// addresses — sometimes misaligned or outside memory), an optional resume
// state, and a script of guest actions interleaved with device steps: Pop,
// touch every byte of every segment, copy helpers, Push (immediately or
// deferred and out of order), Publish, notification toggles and queue
// re-creation from state(). Whatever the guest does, the device must not
// crash, hang, or touch memory outside the image, and the invariants the API
// promises must hold. Any violation abort()s.
#include <fuzzer/FuzzedDataProvider.h>
#include <sanitizer/asan_interface.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/packed_queue.h"
#include "virtio/queue.h"
#include "virtio/ring_error.h"
#include "virtio/spec.h"
#include "virtio/split_queue.h"
#include "fuzz_check.h"

namespace {

using virtio::DescriptorChain;
using virtio::GuestMemoryMap;
using virtio::PopStatus;
using virtio::QueueConfig;
using virtio::QueueState;
using virtio::UsedToken;
namespace spec = virtio::spec;

constexpr uint32_t kMaxRegionSize = 8192;
// Bytes of segment data touched one by one per input; past it, only the
// first and last byte of each segment (enough for ASan to check the bounds).
constexpr uint64_t kTouchBudget = 4u << 20;

// One guest memory region backed by its own allocation. The host pointer is
// congruent to the GPA modulo 16 so ring parts that are aligned in guest
// address space are aligned on the host too (as with real page mappings);
// the padding in front of it is poisoned.
struct Region {
  uint64_t gpa = 0;
  uint64_t size = 0;
  size_t pad = 0;
  uint8_t* alloc = nullptr;
  uint8_t* host = nullptr;
};

class Image {
 public:
  Image() = default;
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  ~Image() {
    for (Region& r : regions_) {
      ASAN_UNPOISON_MEMORY_REGION(r.alloc, r.pad);
      std::free(r.alloc);
    }
  }

  void Add(uint64_t gpa, uint64_t size) {
    Region r;
    r.gpa = gpa;
    r.size = size;
    r.pad = static_cast<size_t>(gpa % 16);
    void* p = nullptr;
    if (posix_memalign(&p, 16, r.pad + size) != 0) std::abort();
    r.alloc = static_cast<uint8_t*>(p);
    r.host = r.alloc + r.pad;
    std::memset(r.host, 0, size);
    ASAN_POISON_MEMORY_REGION(r.alloc, r.pad);
    regions_.push_back(r);
  }

  std::vector<Region>& regions() { return regions_; }
  const std::vector<Region>& regions() const { return regions_; }

  // True if [p, p+len) lies inside one region's allocation.
  bool Contains(const void* p, size_t len) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    for (const Region& r : regions_) {
      const auto h = reinterpret_cast<uintptr_t>(r.host);
      if (a >= h && a - h <= r.size && len <= r.size - (a - h)) return true;
    }
    return false;
  }

 private:
  std::vector<Region> regions_;
};

// A guest-physical address: usually inside (or just past) some region,
// sometimes anything at all.
uint64_t GenAddr(FuzzedDataProvider& fdp, const Image& img) {
  const uint8_t mode = fdp.ConsumeIntegral<uint8_t>();
  const auto& regs = img.regions();
  if (mode < 224) {
    const Region& r = regs[mode % regs.size()];
    return r.gpa + fdp.ConsumeIntegralInRange<uint64_t>(0, r.size + 32);
  }
  if (mode < 240) {
    // Just below a region, or straddling the end of the last byte.
    const Region& r = regs[mode % regs.size()];
    return r.gpa - fdp.ConsumeIntegralInRange<uint64_t>(1, 64);
  }
  return fdp.ConsumeIntegral<uint64_t>();
}

// Ring part address: mostly aligned and fitting inside a region.
uint64_t GenRingAddr(FuzzedDataProvider& fdp, const Image& img,
                     uint64_t part_size, uint64_t align) {
  const uint8_t mode = fdp.ConsumeIntegral<uint8_t>();
  const auto& regs = img.regions();
  const Region& r = regs[mode % regs.size()];
  if (mode < 224) {
    const uint64_t room = r.size > part_size ? r.size - part_size : 0;
    uint64_t gpa = r.gpa + fdp.ConsumeIntegralInRange<uint64_t>(0, room);
    gpa -= gpa % align;  // may fall below the region: a Create() failure
    if (mode >= 208) gpa += fdp.ConsumeIntegralInRange<uint64_t>(1, align);
    return gpa;
  }
  if (mode < 240) return r.gpa + r.size - part_size + (mode % 4) * align;
  return fdp.ConsumeIntegral<uint64_t>();
}

// Writes `len` bytes at `gpa` if they lie inside one region (the guest
// writing to its own memory); otherwise does nothing.
void GuestWrite(const GuestMemoryMap& mem, uint64_t gpa, const void* src,
                size_t len) {
  if (len == 0) return;
  uint8_t* p = mem.TranslateContiguous(gpa, len);
  if (p != nullptr) std::memcpy(p, src, len);
}

struct Layout {
  bool packed = false;
  QueueConfig cfg;
  uint64_t desc_size = 0;
  uint64_t driver_size = 0;
  uint64_t device_size = 0;
};

// Device-side driver of one queue, generic over the layout.
template <typename Q>
class Harness {
 public:
  Harness(FuzzedDataProvider& fdp, Image& img, const GuestMemoryMap& mem,
          const Layout& layout, Q q, uint32_t max_segments)
      : fdp_(fdp),
        img_(img),
        mem_(mem),
        layout_(layout),
        q_(std::move(q)),
        chain_(max_segments) {}

  void Run() {
    const uint32_t iterations = 4 * q_.size() + 16;
    bool broken = false;
    for (uint32_t it = 0; it < iterations; ++it) {
      const uint8_t op = fdp_.ConsumeIntegral<uint8_t>();
      if (op & 1) GuestAction();
      if (op & 2) GuestAction();

      bool check_enable = false;
      bool enabled_result = false;
      if (op & 4) {
        if (op & 8) {
          q_.DisableNotification();
        } else {
          enabled_result = q_.EnableNotification();
          check_enable = true;
        }
      }

      // A pure hint: whatever the guest wrote, it must change nothing (the
      // state check below) and touch only memory it may (ASan).
      if (op & 0x80) {
        const virtio::QueueState before = q_.state();
        q_.PrefetchAhead((op & 0x10) != 0);
        const virtio::QueueState after = q_.state();
        FUZZ_CHECK(before.next_avail == after.next_avail &&
                   before.next_used == after.next_used &&
                   before.avail_wrap == after.avail_wrap &&
                   before.used_wrap == after.used_wrap);
      }
      const PopStatus s = q_.Pop(chain_);
      CheckQueueInvariants();
      if (check_enable) {
        // EnableNotification() re-reads exactly what Pop() looks at first;
        // nothing ran in between, so "available" must agree.
        if (enabled_result) FUZZ_CHECK(s != PopStatus::kEmpty);
        if constexpr (kPacked) {
          if (!enabled_result) FUZZ_CHECK(s != PopStatus::kChain);
        }
      }
      if (s == PopStatus::kBroken) {
        FUZZ_CHECK(virtio::IsRingError(q_.error()));
        const virtio::RingError e = q_.error();
        FUZZ_CHECK(q_.Pop(chain_) == PopStatus::kBroken);
        FUZZ_CHECK(q_.error() == e);
        broken = true;
        break;
      }
      FUZZ_CHECK(q_.error() == virtio::RingError::kNone);
      if (s == PopStatus::kEmpty) {
        if (fdp_.remaining_bytes() == 0) break;
      } else {
        HandleChain();
      }

      // Complete some deferred chains, in a scrambled order.
      if ((op & 0x30) == 0x30 && !deferred_.empty()) {
        const size_t n = 1 + fdp_.ConsumeIntegralInRange<size_t>(
                                 0, deferred_.size() - 1);
        for (size_t i = 0; i < n && !deferred_.empty(); ++i) {
          const size_t k = fdp_.ConsumeIntegralInRange<size_t>(
              0, deferred_.size() - 1);
          const UsedToken t = deferred_[k];
          deferred_[k] = deferred_.back();
          deferred_.pop_back();
          DoPush(t, fdp_.ConsumeIntegral<uint32_t>());
        }
      }
      if ((op & 0x40) || it % 4 == 3) DoPublish();
      if (op == 0xff && fdp_.ConsumeBool()) Recreate();
    }
    // Hand everything back, as a device shutting down cleanly would.
    if (!broken) {
      while (!deferred_.empty()) {
        DoPush(deferred_.back(), 0);
        deferred_.pop_back();
      }
      DoPublish();
      FUZZ_CHECK(q_.error() == virtio::RingError::kNone);
      // A device bug: pushing what was never popped must stop the queue.
      if (q_.in_flight() == 0 && fdp_.ConsumeBool()) {
        q_.Push({0, static_cast<uint16_t>(fdp_.ConsumeBool() ? 1 : 0)}, 0);
        FUZZ_CHECK(q_.error() == virtio::RingError::kUsedOverflow);
        FUZZ_CHECK(q_.Pop(chain_) == PopStatus::kBroken);
      }
    }
  }

 private:
  static constexpr bool kPacked =
      std::is_same_v<Q, virtio::PackedQueue<GuestMemoryMap>>;

  void CheckQueueInvariants() {
    FUZZ_CHECK(q_.in_flight() <= q_.size());
    const QueueState st = q_.state();
    if constexpr (kPacked) {
      FUZZ_CHECK(st.next_avail < q_.size());
      FUZZ_CHECK(st.next_used < q_.size());
      const uint32_t n = q_.size();
      const uint32_t used_lin = st.next_used + (st.used_wrap ? 0 : n);
      const uint32_t avail_lin = st.next_avail + (st.avail_wrap ? 0 : n);
      const uint32_t dist = avail_lin >= used_lin ? avail_lin - used_lin
                                                  : avail_lin + 2 * n - used_lin;
      FUZZ_CHECK(dist == q_.in_flight());
    } else {
      FUZZ_CHECK(static_cast<uint16_t>(st.next_avail - st.next_used) ==
                 q_.in_flight());
    }
  }

  void HandleChain() {
    const UsedToken t = chain_.token();
    if constexpr (kPacked) {
      FUZZ_CHECK(t.ring_slots >= 1 && t.ring_slots <= q_.size());
    } else {
      FUZZ_CHECK(t.id < q_.size());
      FUZZ_CHECK(t.ring_slots == 1);
    }
    FUZZ_CHECK(chain_.descriptor_count() >= 1);
    const auto rd = chain_.readable();
    const auto wr = chain_.writable();
    FUZZ_CHECK(rd.size() + wr.size() <= chain_.max_segments());
    uint64_t rsum = 0;
    uint64_t wsum = 0;
    for (const iovec& v : rd) {
      FUZZ_CHECK(v.iov_len > 0);
      FUZZ_CHECK(img_.Contains(v.iov_base, v.iov_len));
      rsum += v.iov_len;
      Touch(static_cast<uint8_t*>(v.iov_base), v.iov_len, /*write=*/false);
    }
    for (const iovec& v : wr) {
      FUZZ_CHECK(v.iov_len > 0);
      FUZZ_CHECK(img_.Contains(v.iov_base, v.iov_len));
      wsum += v.iov_len;
      Touch(static_cast<uint8_t*>(v.iov_base), v.iov_len, /*write=*/true);
    }
    FUZZ_CHECK(rsum == chain_.readable_bytes());
    FUZZ_CHECK(wsum == chain_.writable_bytes());
    if (chain_.ok()) {
      FUZZ_CHECK(chain_.readable_bytes() + chain_.writable_bytes() <=
                 UINT32_MAX);
    } else {
      FUZZ_CHECK(!virtio::IsRingError(chain_.error()));
    }
    ExerciseCopies();

    if (fdp_.ConsumeBool()) {
      uint32_t len = 0;
      switch (fdp_.ConsumeIntegral<uint8_t>() % 3) {
        case 0: len = 0; break;
        case 1: len = static_cast<uint32_t>(chain_.writable_bytes()); break;
        default: len = fdp_.ConsumeIntegral<uint32_t>(); break;
      }
      DoPush(t, len);
    } else {
      deferred_.push_back(t);
    }
  }

  void Touch(uint8_t* p, size_t len, bool write) {
    if (touched_ + len > kTouchBudget) {
      // Ends only: still enough for ASan to check both bounds.
      if (write) {
        p[0] = 0xa5;
        p[len - 1] = 0x5a;
      } else {
        sink_ += p[0] + p[len - 1];
      }
      return;
    }
    touched_ += len;
    if (write) {
      std::memset(p, 0xa5, len);
    } else {
      const volatile uint8_t* vp = p;
      uint32_t acc = 0;
      for (size_t i = 0; i < len; ++i) acc += vp[i];
      sink_ += acc;
    }
  }

  // Reference for CopyFromReadable: walk the segments byte by byte.
  static size_t RefCopy(absl::Span<const iovec> segs, uint64_t offset,
                        uint8_t* dst, size_t n) {
    size_t done = 0;
    for (const iovec& v : segs) {
      if (done == n) break;
      if (offset >= v.iov_len) {
        offset -= v.iov_len;
        continue;
      }
      const size_t take = std::min<uint64_t>(n - done, v.iov_len - offset);
      std::memcpy(dst + done, static_cast<uint8_t*>(v.iov_base) + offset,
                  take);
      done += take;
      offset = 0;
    }
    return done;
  }

  void ExerciseCopies() {
    static uint8_t buf[4096];
    static uint8_t ref[4096];
    const int rounds = fdp_.ConsumeIntegralInRange<int>(0, 3);
    for (int i = 0; i < rounds; ++i) {
      const bool from_readable = fdp_.ConsumeBool();
      const uint64_t total =
          from_readable ? chain_.readable_bytes() : chain_.writable_bytes();
      const uint64_t offset = fdp_.ConsumeBool()
                                  ? fdp_.ConsumeIntegral<uint64_t>()
                                  : fdp_.ConsumeIntegralInRange<uint64_t>(
                                        0, total + 8);
      const size_t n = fdp_.ConsumeIntegralInRange<size_t>(0, sizeof buf);
      const size_t expect =
          offset >= total ? 0 : static_cast<size_t>(std::min<uint64_t>(
                                    n, total - offset));
      if (from_readable) {
        const size_t got = chain_.CopyFromReadable(offset, buf, n);
        FUZZ_CHECK(got == expect);
        FUZZ_CHECK(RefCopy(chain_.readable(), offset, ref, n) == expect);
        FUZZ_CHECK(std::memcmp(buf, ref, got) == 0);
      } else {
        std::memset(buf, static_cast<int>(i + 1), n);
        FUZZ_CHECK(chain_.CopyToWritable(offset, buf, n) == expect);
      }
    }
  }

  void DoPush(UsedToken t, uint32_t len) {
    const QueueState before = q_.state();
    const uint32_t in_flight = q_.in_flight();
    q_.Push(t, len);
    FUZZ_CHECK(q_.error() == virtio::RingError::kNone);
    ++pushed_since_publish_;
    if constexpr (kPacked) {
      FUZZ_CHECK(q_.in_flight() == in_flight - t.ring_slots);
      uint8_t* d = mem_.TranslateContiguous(
          layout_.cfg.desc_addr + uint64_t{before.next_used} * 16, 16);
      FUZZ_CHECK(d != nullptr);
      const auto desc = virtio::ReadOnce<spec::PackedDesc>(d);
      FUZZ_CHECK(desc.id == t.id);
      FUZZ_CHECK(desc.len == len);
      uint16_t flags = before.used_wrap
                           ? uint16_t{spec::kDescFlagAvail | spec::kDescFlagUsed}
                           : uint16_t{0};
      if (len != 0) flags |= spec::kDescFlagWrite;
      if (pushed_since_publish_ == 1) {
        batch_slot_ = before.next_used;
        batch_flags_ = flags;
      } else {
        FUZZ_CHECK(desc.flags == flags);
      }
      CheckQueueInvariants();
    } else {
      FUZZ_CHECK(q_.in_flight() == in_flight - 1);
      const uint32_t slot = before.next_used & (q_.size() - 1);
      uint8_t* e = mem_.TranslateContiguous(
          layout_.cfg.device_addr + 4 + uint64_t{slot} * 8, 8);
      FUZZ_CHECK(e != nullptr);
      const auto elem = virtio::ReadOnce<spec::SplitUsedElem>(e);
      FUZZ_CHECK(elem.id == t.id);
      FUZZ_CHECK(elem.len == len);
      FUZZ_CHECK(q_.state().next_used ==
                 static_cast<uint16_t>(before.next_used + 1));
    }
  }

  void DoPublish() {
    const bool nothing = pushed_since_publish_ == 0;
    const bool notify = q_.Publish();
    if (nothing) FUZZ_CHECK(!notify);
    if (!nothing) {
      if constexpr (kPacked) {
        uint8_t* d = mem_.TranslateContiguous(
            layout_.cfg.desc_addr + uint64_t{batch_slot_} * 16 + 14, 2);
        FUZZ_CHECK(d != nullptr);
        FUZZ_CHECK(virtio::ReadOnce<uint16_t>(d) == batch_flags_);
      } else {
        uint8_t* idx = mem_.TranslateContiguous(layout_.cfg.device_addr + 2, 2);
        FUZZ_CHECK(idx != nullptr);
        FUZZ_CHECK(virtio::ReadOnce<uint16_t>(idx) == q_.state().next_used);
      }
    }
    pushed_since_publish_ = 0;
  }

  // Saves the position and builds the queue anew from it (vhost-user
  // GET/SET_VRING_BASE); a live queue's state() must always be accepted.
  void Recreate() {
    DoPublish();
    const QueueState st = q_.state();
    const uint32_t in_flight = q_.in_flight();
    auto r = Q::Create(mem_, layout_.cfg, st);
    FUZZ_CHECK(r.ok());
    q_ = std::move(*r);
    FUZZ_CHECK(q_.in_flight() == in_flight);
    CheckQueueInvariants();
  }

  // One thing a (possibly hostile) guest might do between device steps.
  void GuestAction() {
    const QueueConfig& cfg = layout_.cfg;
    const uint32_t n = q_.size();
    switch (fdp_.ConsumeIntegral<uint8_t>() % 6) {
      case 0: {  // Scribble over a ring part.
        const uint8_t part = fdp_.ConsumeIntegral<uint8_t>() % 3;
        const uint64_t base = part == 0   ? cfg.desc_addr
                              : part == 1 ? cfg.driver_addr
                                          : cfg.device_addr;
        const uint64_t size = part == 0   ? layout_.desc_size
                              : part == 1 ? layout_.driver_size
                                          : layout_.device_size;
        const uint64_t off = fdp_.ConsumeIntegralInRange<uint64_t>(0, size - 1);
        const size_t len = std::min<uint64_t>(
            size - off, fdp_.ConsumeIntegralInRange<size_t>(1, 8));
        const std::vector<uint8_t> bytes = fdp_.ConsumeBytes<uint8_t>(len);
        GuestWrite(mem_, base + off, bytes.data(), bytes.size());
        break;
      }
      case 1:
      case 2: {  // Write a descriptor into the ring / table.
        const uint16_t idx = fdp_.ConsumeIntegral<uint16_t>() % n;
        const uint64_t addr = GenAddr(fdp_, img_);
        const uint32_t len = fdp_.ConsumeBool()
                                 ? fdp_.ConsumeIntegral<uint32_t>()
                                 : fdp_.ConsumeIntegralInRange<uint32_t>(0, 512);
        const uint16_t flags = fdp_.ConsumeIntegral<uint16_t>();
        const uint16_t other = fdp_.ConsumeIntegral<uint16_t>();
        if constexpr (kPacked) {
          // Make it available in the device's current round, or the next.
          const QueueState st = q_.state();
          bool wrap = st.avail_wrap;
          if (idx < st.next_avail) wrap = !wrap;
          uint16_t f = static_cast<uint16_t>(
              flags & (spec::kDescFlagNext | spec::kDescFlagWrite |
                       spec::kDescFlagIndirect));
          if ((flags & 0x8000) != 0) {
            f = flags;  // raw
          } else {
            f |= wrap ? spec::kDescFlagAvail : spec::kDescFlagUsed;
          }
          spec::PackedDesc d{addr, len, static_cast<uint16_t>(other % (n + 1)),
                             f};
          GuestWrite(mem_, cfg.desc_addr + uint64_t{idx} * 16, &d, sizeof d);
        } else {
          const uint16_t f =
              (flags & 0x8000) != 0
                  ? flags
                  : static_cast<uint16_t>(flags & (spec::kDescFlagNext |
                                                   spec::kDescFlagWrite |
                                                   spec::kDescFlagIndirect));
          spec::SplitDesc d{addr, len, f, static_cast<uint16_t>(other % (n + 1))};
          GuestWrite(mem_, cfg.desc_addr + uint64_t{idx} * 16, &d, sizeof d);
        }
        break;
      }
      case 3: {  // Write a descriptor anywhere (indirect tables).
        const uint64_t at = GenAddr(fdp_, img_);
        spec::SplitDesc d{GenAddr(fdp_, img_),
                          fdp_.ConsumeIntegralInRange<uint32_t>(0, 256),
                          static_cast<uint16_t>(fdp_.ConsumeIntegral<uint8_t>() & 7),
                          fdp_.ConsumeIntegral<uint8_t>()};
        if constexpr (kPacked) {
          spec::PackedDesc p{d.addr, d.len, d.next, d.flags};
          GuestWrite(mem_, at, &p, sizeof p);
        } else {
          GuestWrite(mem_, at, &d, sizeof d);
        }
        break;
      }
      case 4: {  // Make a chain available.
        if constexpr (kPacked) {
          const QueueState st = q_.state();
          uint8_t* f = mem_.TranslateContiguous(
              cfg.desc_addr + uint64_t{st.next_avail} * 16 + 14, 2);
          if (f == nullptr) break;
          uint16_t flags = virtio::ReadOnce<uint16_t>(f);
          flags &= static_cast<uint16_t>(
              ~(spec::kDescFlagAvail | spec::kDescFlagUsed));
          flags |= st.avail_wrap ? spec::kDescFlagAvail : spec::kDescFlagUsed;
          std::memcpy(f, &flags, 2);
        } else {
          uint8_t* hdr = mem_.TranslateContiguous(cfg.driver_addr, 4 + 2 * n);
          if (hdr == nullptr) break;
          uint16_t idx;
          std::memcpy(&idx, hdr + 2, 2);
          const uint16_t head = fdp_.ConsumeIntegral<uint16_t>() % (n + 1);
          std::memcpy(hdr + 4 + 2 * (idx & (n - 1)), &head, 2);
          ++idx;
          std::memcpy(hdr + 2, &idx, 2);
        }
        break;
      }
      case 5: {  // Event suppression / flags from the driver.
        const uint16_t v = fdp_.ConsumeIntegral<uint16_t>();
        const uint16_t w = fdp_.ConsumeIntegral<uint16_t>();
        if constexpr (kPacked) {
          spec::PackedEventSuppress e{v, w};
          GuestWrite(mem_, cfg.driver_addr, &e, sizeof e);
        } else {
          GuestWrite(mem_, cfg.driver_addr, &v, 2);  // avail->flags
          GuestWrite(mem_, cfg.driver_addr + spec::SplitUsedEventOffset(n), &w,
                     2);
        }
        break;
      }
    }
  }

  FuzzedDataProvider& fdp_;
  Image& img_;
  const GuestMemoryMap& mem_;
  const Layout& layout_;
  Q q_;
  DescriptorChain chain_;
  std::vector<UsedToken> deferred_;
  uint32_t pushed_since_publish_ = 0;
  uint16_t batch_slot_ = 0;
  uint16_t batch_flags_ = 0;
  uint64_t touched_ = 0;
  uint32_t sink_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);

  // --- Header. ---
  Layout layout;
  layout.packed = fdp.ConsumeBool();
  QueueConfig& cfg = layout.cfg;
  if (layout.packed) {
    cfg.size = fdp.ConsumeIntegralInRange<uint32_t>(1, 256);
  } else {
    cfg.size = 1u << fdp.ConsumeIntegralInRange<uint32_t>(0, 8);
  }
  const uint8_t bad_size = fdp.ConsumeIntegral<uint8_t>();
  if (bad_size == 0xfe) cfg.size = 0;  // Create() must refuse these
  if (bad_size == 0xff) cfg.size = layout.packed ? 32769 : cfg.size * 3;
  cfg.event_idx = fdp.ConsumeBool();
  cfg.indirect = fdp.ConsumeBool();
  const uint32_t max_segments = fdp.ConsumeIntegralInRange<uint32_t>(1, 64);

  // --- Guest memory layout. ---
  const uint32_t num_regions = fdp.ConsumeIntegralInRange<uint32_t>(1, 4);
  std::vector<uint64_t> sizes(num_regions);
  std::vector<uint64_t> gaps(num_regions);
  uint64_t span = 0;
  for (uint32_t i = 0; i < num_regions; ++i) {
    // The first region can always hold a ring of this size.
    const uint64_t min =
        i == 0 ? 16u * std::min<uint32_t>(cfg.size, 256) + 64 : 1;
    sizes[i] = fdp.ConsumeIntegralInRange<uint64_t>(min, kMaxRegionSize);
    switch (fdp.ConsumeIntegral<uint8_t>() % 4) {
      case 0: gaps[i] = 0; break;  // adjacent: buffers straddle regions
      case 1: gaps[i] = fdp.ConsumeIntegralInRange<uint64_t>(1, 64); break;
      case 2: gaps[i] = 16 * fdp.ConsumeIntegralInRange<uint64_t>(1, 256); break;
      default: gaps[i] = fdp.ConsumeIntegralInRange<uint64_t>(1, 1u << 20); break;
    }
    span += sizes[i] + (i == 0 ? 0 : gaps[i]);
  }
  uint64_t base = 0;
  switch (fdp.ConsumeIntegral<uint8_t>() % 4) {
    case 0: base = 0; break;
    case 1: base = 0x1000; break;
    case 2: base = uint64_t{1} << 32; break;
    default: base = (uint64_t{0} - span) & ~uint64_t{15}; break;  // top of 2^64
  }
  Image img;
  uint64_t gpa = base;
  for (uint32_t i = 0; i < num_regions; ++i) {
    if (i != 0) gpa += gaps[i];
    img.Add(gpa, sizes[i]);
    gpa += sizes[i];
  }

  // --- Ring addresses, resume state. ---
  const uint32_t n = cfg.size;
  if (layout.packed) {
    layout.desc_size = spec::PackedDescRingSize(n);
    layout.driver_size = layout.device_size = sizeof(spec::PackedEventSuppress);
    cfg.desc_addr =
        GenRingAddr(fdp, img, layout.desc_size, spec::kPackedDescAlign);
    cfg.driver_addr =
        GenRingAddr(fdp, img, layout.driver_size, spec::kPackedEventAlign);
    cfg.device_addr =
        GenRingAddr(fdp, img, layout.device_size, spec::kPackedEventAlign);
  } else {
    layout.desc_size = spec::SplitDescTableSize(n);
    layout.driver_size = spec::SplitAvailRingSize(n);
    layout.device_size = spec::SplitUsedRingSize(n);
    cfg.desc_addr =
        GenRingAddr(fdp, img, layout.desc_size, spec::kSplitDescAlign);
    cfg.driver_addr =
        GenRingAddr(fdp, img, layout.driver_size, spec::kSplitAvailAlign);
    cfg.device_addr =
        GenRingAddr(fdp, img, layout.device_size, spec::kSplitUsedAlign);
  }
  QueueState state;
  if (fdp.ConsumeBool()) {
    const bool raw = fdp.ConsumeIntegral<uint8_t>() < 32;
    state.next_avail = fdp.ConsumeIntegral<uint16_t>();
    state.next_used = fdp.ConsumeIntegral<uint16_t>();
    state.avail_wrap = fdp.ConsumeBool();
    state.used_wrap = fdp.ConsumeBool();
    if (!raw && n != 0) {
      if (layout.packed) {
        state.next_avail %= n;
        state.next_used %= n;
      } else {
        state.next_used = static_cast<uint16_t>(
            state.next_avail - state.next_used % (n + 1));
      }
    }
  }

  // --- Image contents. ---
  uint64_t total = 0;
  for (const Region& r : img.regions()) total += r.size;
  const size_t fill_len = fdp.ConsumeIntegralInRange<size_t>(0, total);
  const std::vector<uint8_t> fill = fdp.ConsumeBytes<uint8_t>(fill_len);
  size_t at = 0;
  for (Region& r : img.regions()) {
    const size_t k = std::min<size_t>(r.size, fill.size() - at);
    if (k != 0) std::memcpy(r.host, fill.data() + at, k);
    at += k;
  }

  std::vector<virtio::GuestRegion> table;
  for (const Region& r : img.regions()) {
    table.push_back({.gpa = r.gpa, .size = r.size, .host = r.host});
  }
  auto mem = GuestMemoryMap::Create(table);
  FUZZ_CHECK(mem.ok());  // gaps are >= 0 and nothing wraps

  if (layout.packed) {
    auto q = virtio::PackedQueue<GuestMemoryMap>::Create(*mem, cfg, state);
    if (!q.ok()) return 0;
    Harness<virtio::PackedQueue<GuestMemoryMap>> h(fdp, img, *mem, layout,
                                                   std::move(*q), max_segments);
    h.Run();
  } else {
    auto q = virtio::SplitQueue<GuestMemoryMap>::Create(*mem, cfg, state);
    if (!q.ok()) return 0;
    Harness<virtio::SplitQueue<GuestMemoryMap>> h(fdp, img, *mem, layout,
                                                  std::move(*q), max_segments);
    h.Run();
  }
  return 0;
}
