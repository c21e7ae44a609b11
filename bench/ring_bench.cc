// ring_bench — device-side virtqueue throughput, split vs packed.
//
// WHAT IS MEASURED
//   The cost of the DEVICE half of a virtqueue: SplitQueue / PackedQueue
//   Pop() (read + validate the ring, walk the chain, translate every buffer
//   through GuestMemoryMap into iovecs), Push() and Publish(). The unit is
//   chains per second (one chain = one request). No data is copied: the
//   device only looks at the chain it got (benchmark::DoNotOptimize), as a
//   device that hands the iovecs to readv/writev/io_uring would.
//
//   1thread/<layout>/<shape>/batch:B/q:Q
//     One thread plays both sides. Per benchmark iteration the driver makes B
//     chains available, the device pops B chains, pushes each, calls
//     Publish() once, and the driver reaps the B chains. items_per_second and
//     the "chains/s" column count chains; "ns/chain" is its inverse.
//     The driver is a lean, allocation-free one written for this bench (not
//     the test harness, whose bookkeeping would dominate), doing the minimum
//     a correct driver must do on each layout:
//       split : descriptors (and indirect tables) are written once at setup;
//               making a chain available = one avail ring entry, plus one
//               release store of avail->idx per batch; reaping = one acquire
//               load of used->idx per batch.
//       packed: making a chain available = rewriting the ring slots it
//               occupies (the device overwrote the head slot with a used
//               descriptor) with the head's flags stored last (release);
//               reaping = acquire load of the first used descriptor's flags
//               plus a check of the last one's.
//     Shapes: 1desc           one 2048-byte device-writable buffer (net rx)
//             3desc           16-byte header (readable) + 512-byte data and
//                             1-byte status (writable): a virtio-blk read
//             3desc_indirect  the same three buffers in one indirect table
//     Batches 1/8/32/256; queue size 256, or 1024 when a batch of 3-descriptor
//     direct chains does not fit in 256 descriptors.
//     Before timing, every configuration runs a checked warm-up over several
//     ring wraps: every Pop() must return an ok() chain with the expected
//     descriptor count and byte counts, every used element must carry the
//     expected ID and length; otherwise the program aborts.
//
//   2thread/<layout>/1desc/q:256
//     A driver thread and a device thread, pinned to the first two CPUs the
//     process may use (when there are two), both busy-polling; no
//     notifications (avail NO_INTERRUPT / driver event DISABLE). The driver
//     keeps the ring full (re-posts each buffer as it is reaped); the device
//     pops/pushes whatever it finds, up to 32 chains per Publish(). Measured:
//     wall time for 20 million chains to travel the full round trip (or as
//     many as complete in 10 s). Extra columns: dev_batch = average chains
//     per Publish(), idle_polls = fraction of device polls that found nothing,
//     preempted = involuntary context switches of the two threads,
//     win_median / win_p90 = chains/s of the median / 90th-percentile window
//     of 16384 chains. Busy-pollers need the two CPUs to themselves: when
//     other processes run there, a preempted thread stalls its partner for a
//     whole time slice, the overall rate collapses, and the label says so;
//     the window rates still show what the rings do between preemptions.
//
// TARGETS
//   single thread, 1desc, batch 32 : >= 50M chains/s on both layouts
//   two threads,   1desc, q 256    : >= 15M chains/s on both layouts
//   A summary table with split and packed side by side and the targets is
//   printed after the benchmark table.
//
// RUNNING
//   build/release/bench/ring_bench --benchmark_counters_tabular=true
//   build/release/bench/ring_bench --benchmark_filter='batch:32'
//   build/release/bench/ring_bench --benchmark_filter=2thread
//   JSON (Google Benchmark built-in): add
//       --benchmark_out=ring_bench.json --benchmark_out_format=json
//   (the console table still goes to stdout; --benchmark_format=json puts JSON
//   on stdout instead, and the summary then goes to stderr).
//   Build with optimisation (the "release" preset: -O2 -g -DNDEBUG); numbers
//   from a debug or sanitizer build are meaningless.

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "virtio/descriptor_chain.h"
#include "virtio/guest_memory.h"
#include "virtio/packed_queue.h"
#include "virtio/queue.h"
#include "virtio/ring_access.h"
#include "virtio/spec.h"
#include "virtio/split_queue.h"
#include "virtio/testing/test_memory.h"

namespace {

namespace spec = virtio::spec;
using virtio::DescriptorChain;
using virtio::GuestMemoryMap;
using virtio::LoadAcquire;
using virtio::LoadRelaxed;
using virtio::PopStatus;
using virtio::StoreRelaxed;
using virtio::StoreRelease;
using virtio::testing::TestGuestMemory;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "ring_bench: FATAL: %s\n", what.c_str());
  std::abort();
}

// ---------------------------------------------------------------------------
// Chain shapes.

struct Shape {
  const char* name;
  uint32_t descs;     // buffers per chain
  bool indirect;      // all buffers in one indirect table
  uint64_t readable;  // expected chain.readable_bytes()
  uint64_t writable;  // expected chain.writable_bytes()
  uint32_t used_len;  // what the device reports written
};

constexpr Shape kOneDesc{"1desc", 1, false, 0, 2048, 2048};
constexpr Shape kThreeDesc{"3desc", 3, false, 16, 513, 513};
constexpr Shape kThreeIndirect{"3desc_indirect", 3, true, 16, 513, 513};

// Every chain slot k owns kBufStride bytes of buffer space.
constexpr uint64_t kBufStride = 2048;

struct Buf {
  uint64_t gpa;
  uint32_t len;
  bool writable;
};

// The buffers of the chain that uses buffer area `base`.
inline uint32_t ChainBuffers(const Shape& s, uint64_t base, Buf out[3]) {
  if (s.descs == 1) {
    out[0] = {base, 2048, true};
    return 1;
  }
  out[0] = {base, 16, false};       // request header
  out[1] = {base + 64, 512, true};  // data
  out[2] = {base + 576, 1, true};   // status byte
  return 3;
}

// Ring slots (split: descriptor-table entries) one chain occupies.
inline uint32_t SlotsPerChain(const Shape& s) {
  return s.indirect ? 1 : s.descs;
}

// Queue size for a batch: 256 unless the batch does not fit.
inline uint32_t QueueSizeFor(const Shape& s, uint32_t batch) {
  return batch * SlotsPerChain(s) <= 256 ? 256 : 1024;
}

// Guest RAM for one configuration: rings + buffers of a 1024-entry queue
// need ~2.1 MiB.
constexpr virtio::testing::RegionSpec kGuestRam{.gpa = 0x100000,
                                                .size = 4 << 20};

// CPU time of the calling thread, in seconds (what Google Benchmark's "CPU"
// column and its rates use for single-threaded benchmarks).
inline double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// Involuntary context switches of the calling thread so far.
inline long Preemptions() {
  rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_nivcsw;
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// ---------------------------------------------------------------------------
// Lean split driver.

class LeanSplitDriver {
 public:
  using Queue = virtio::SplitQueue<GuestMemoryMap>;
  static constexpr const char* kLayout = "split";

  LeanSplitDriver(TestGuestMemory& mem, uint32_t size, const Shape& shape)
      : shape_(shape), size_(size), mask_(static_cast<uint16_t>(size - 1)) {
    const uint32_t slots = SlotsPerChain(shape);
    capacity_ = size / slots;
    desc_gpa_ = mem.Alloc(spec::SplitDescTableSize(size), 64);
    // Cache-line aligned so that avail and used never share a line.
    avail_gpa_ = mem.Alloc(spec::SplitAvailRingSize(size), 64);
    used_gpa_ = mem.Alloc(spec::SplitUsedRingSize(size), 64);
    const uint64_t bufs = mem.Alloc(uint64_t{size} * kBufStride, 64);
    const uint64_t tables =
        shape.indirect ? mem.Alloc(uint64_t{size} * 16 * shape.descs, 64) : 0;

    desc_ = reinterpret_cast<spec::SplitDesc*>(
        mem.Host(desc_gpa_, spec::SplitDescTableSize(size)));
    uint8_t* avail = mem.Host(avail_gpa_, spec::SplitAvailRingSize(size));
    uint8_t* used = mem.Host(used_gpa_, spec::SplitUsedRingSize(size));
    avail_ = reinterpret_cast<spec::SplitAvailHeader*>(avail);
    avail_ring_ = reinterpret_cast<uint16_t*>(avail + 4);
    used_ = reinterpret_cast<spec::SplitUsedHeader*>(used);
    used_ring_ = reinterpret_cast<spec::SplitUsedElem*>(used + 4);
    // A polling driver does not want interrupts.
    StoreRelaxed(&avail_->flags, spec::kAvailFlagNoInterrupt);

    // Chain c: head descriptor c * slots; it owns buffer area c.
    for (uint32_t c = 0; c < capacity_; ++c) {
      Buf b[3];
      const uint32_t n = ChainBuffers(shape, bufs + c * kBufStride, b);
      const uint16_t head = static_cast<uint16_t>(c * slots);
      spec::SplitDesc* out = desc_ + head;
      if (shape.indirect) {
        const uint64_t table_gpa = tables + uint64_t{c} * 16 * n;
        out = reinterpret_cast<spec::SplitDesc*>(
            mem.Host(table_gpa, uint64_t{16} * n));
        desc_[head] = {.addr = table_gpa,
                       .len = 16 * n,
                       .flags = spec::kDescFlagIndirect,
                       .next = 0};
      }
      const uint16_t first = shape.indirect ? 0 : head;
      for (uint32_t i = 0; i < n; ++i) {
        const bool last = i + 1 == n;
        out[i] = {.addr = b[i].gpa,
                  .len = b[i].len,
                  .flags = static_cast<uint16_t>(
                      (b[i].writable ? spec::kDescFlagWrite : 0) |
                      (last ? 0 : spec::kDescFlagNext)),
                  .next = static_cast<uint16_t>(last ? 0 : first + i + 1)};
      }
      free_.push_back(head);
    }
    free_.resize(size);  // FIFO storage for the two-thread driver
    free_count_ = capacity_;
  }

  virtio::QueueConfig config() const {
    return {.size = size_,
            .desc_addr = desc_gpa_,
            .driver_addr = avail_gpa_,
            .device_addr = used_gpa_,
            .event_idx = false,
            .indirect = true};
  }
  // Chains that fit in the ring at once.
  uint32_t capacity() const { return capacity_; }

  // --- Single-thread driver: chains are posted round-robin and come back
  // --- in order, in full, before the next batch is posted.

  // Makes `n` (<= capacity) chains available.
  void Post(uint32_t n) {
    const uint32_t slots = SlotsPerChain(shape_);
    for (uint32_t i = 0; i < n; ++i) {
      StoreRelaxed(&avail_ring_[avail_idx_ & mask_],
                   static_cast<uint16_t>(next_chain_ * slots));
      ++avail_idx_;
      if (++next_chain_ == capacity_) next_chain_ = 0;
    }
    StoreRelease(&avail_->idx, avail_idx_);
  }

  // True if exactly the `n` chains of the last Post() came back.
  bool Reap(uint32_t n) {
    const uint16_t want = static_cast<uint16_t>(last_used_ + n);
    if (LoadAcquire(&used_->idx) != want) return false;
    last_used_ = want;
    reap_chain_ += n;
    if (reap_chain_ >= capacity_) reap_chain_ -= capacity_;
    return true;
  }

  // Reap() plus a check of every used element; "" or what went wrong.
  std::string ReapChecked(uint32_t n) {
    const uint16_t idx = LoadAcquire(&used_->idx);
    if (idx != static_cast<uint16_t>(last_used_ + n)) {
      return absl::StrFormat("used->idx %u, expected %u", idx,
                             static_cast<uint16_t>(last_used_ + n));
    }
    uint32_t c = reap_chain_;
    for (uint32_t i = 0; i < n; ++i) {
      const spec::SplitUsedElem e =
          used_ring_[static_cast<uint16_t>(last_used_ + i) & mask_];
      const uint32_t want_id = c * SlotsPerChain(shape_);
      if (e.id != want_id || e.len != shape_.used_len) {
        return absl::StrFormat("used elem {id %u, len %u}, expected {%u, %u}",
                               e.id, e.len, want_id, shape_.used_len);
      }
      if (++c == capacity_) c = 0;
    }
    last_used_ = idx;
    reap_chain_ = c;
    return "";
  }

  // --- Two-thread driver: keeps the ring full; heads come back in any
  // --- order and are re-posted from a FIFO free list.

  // Reaps everything the device published; returns how many, or -1 on a
  // bogus used element.
  int64_t ReapAll() {
    const uint16_t idx = LoadAcquire(&used_->idx);
    const uint16_t n = static_cast<uint16_t>(idx - last_used_);
    if (n > capacity_ - free_count_) return -1;
    for (uint16_t i = 0; i < n; ++i) {
      const uint32_t id = LoadRelaxed(&used_ring_[(last_used_ + i) & mask_].id);
      if (id >= size_) return -1;
      free_[(free_head_ + free_count_) & mask_] = static_cast<uint16_t>(id);
      ++free_count_;
    }
    last_used_ = idx;
    return n;
  }

  // Posts up to `max` chains from the free list; returns how many.
  uint32_t PostFree(uint64_t max) {
    const uint32_t n =
        static_cast<uint32_t>(max < free_count_ ? max : free_count_);
    if (n == 0) return 0;
    for (uint32_t i = 0; i < n; ++i) {
      StoreRelaxed(&avail_ring_[avail_idx_ & mask_], free_[free_head_ & mask_]);
      ++free_head_;
      ++avail_idx_;
    }
    free_count_ -= n;
    StoreRelease(&avail_->idx, avail_idx_);
    return n;
  }

 private:
  const Shape& shape_;
  uint32_t size_;
  uint16_t mask_;
  uint32_t capacity_;
  uint64_t desc_gpa_, avail_gpa_, used_gpa_;
  spec::SplitDesc* desc_;
  spec::SplitAvailHeader* avail_;
  uint16_t* avail_ring_;
  spec::SplitUsedHeader* used_;
  spec::SplitUsedElem* used_ring_;
  uint16_t avail_idx_ = 0;
  uint16_t last_used_ = 0;
  uint32_t next_chain_ = 0;
  uint32_t reap_chain_ = 0;
  std::vector<uint16_t> free_;
  uint32_t free_head_ = 0;
  uint32_t free_count_ = 0;
};

// ---------------------------------------------------------------------------
// Lean packed driver.

class LeanPackedDriver {
 public:
  using Queue = virtio::PackedQueue<GuestMemoryMap>;
  static constexpr const char* kLayout = "packed";

  LeanPackedDriver(TestGuestMemory& mem, uint32_t size, const Shape& shape)
      : shape_(shape), size_(size), slots_(SlotsPerChain(shape)) {
    capacity_ = size / slots_;
    ring_gpa_ = mem.Alloc(spec::PackedDescRingSize(size), 64);
    // Separate cache lines for the two event suppression structures.
    driver_event_gpa_ = mem.Alloc(4, 64);
    device_event_gpa_ = mem.Alloc(4, 64);
    bufs_ = mem.Alloc(uint64_t{size} * kBufStride, 64);
    tables_ =
        shape.indirect ? mem.Alloc(uint64_t{size} * 16 * shape.descs, 64) : 0;
    ring_ = reinterpret_cast<spec::PackedDesc*>(
        mem.Host(ring_gpa_, spec::PackedDescRingSize(size)));
    auto* driver_event = reinterpret_cast<spec::PackedEventSuppress*>(
        mem.Host(driver_event_gpa_, 4));
    // A polling driver does not want interrupts.
    StoreRelaxed(&driver_event->flags, spec::kRingEventFlagsDisable);

    // Buffers are tied to the buffer ID; ID k owns buffer area k (and
    // indirect table k, written once here: the device never writes tables).
    if (shape.indirect) {
      for (uint32_t k = 0; k < size; ++k) {
        Buf b[3];
        const uint32_t n = ChainBuffers(shape, bufs_ + k * kBufStride, b);
        auto* t = reinterpret_cast<spec::PackedDesc*>(
            mem.Host(tables_ + uint64_t{k} * 16 * n, uint64_t{16} * n));
        for (uint32_t i = 0; i < n; ++i) {
          t[i] = {.addr = b[i].gpa,
                  .len = b[i].len,
                  .id = 0,
                  .flags = b[i].writable ? spec::kDescFlagWrite : uint16_t{0}};
        }
      }
    }
    if (shape.indirect) {
      one_slot_base_ = tables_;
      one_slot_stride_ = uint64_t{16} * shape.descs;
      one_slot_len_ = 16 * shape.descs;
      one_slot_flags_ = spec::kDescFlagIndirect;
    } else {
      one_slot_base_ = bufs_;
      one_slot_stride_ = kBufStride;
      one_slot_len_ = 2048;  // matches ChainBuffers() for 1desc
      one_slot_flags_ = spec::kDescFlagWrite;
    }
    free_.resize(size);
    for (uint32_t k = 0; k < capacity_; ++k)
      free_[k] = static_cast<uint16_t>(k);
    free_count_ = capacity_;
  }

  virtio::QueueConfig config() const {
    return {.size = size_,
            .desc_addr = ring_gpa_,
            .driver_addr = driver_event_gpa_,
            .device_addr = device_event_gpa_,
            .event_idx = false,
            .indirect = true};
  }
  uint32_t capacity() const { return capacity_; }

  // --- Single-thread driver. Buffer ID = ring offset of the chain's head
  // --- (unique among outstanding chains, no free list needed).

  void Post(uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) PostChain(avail_pos_);
  }

  bool Reap(uint32_t n) {
    // Publish() stores the first used descriptor's flags last (release):
    // once it is used, the whole batch is.
    if (!IsUsed(LoadAcquire(&ring_[used_pos_].flags), used_wrap_)) {
      return false;
    }
    uint16_t last = used_pos_;
    bool last_wrap = used_wrap_;
    Advance(last, last_wrap, (n - 1) * slots_);
    if (!IsUsed(LoadRelaxed(&ring_[last].flags), last_wrap)) return false;
    Advance(used_pos_, used_wrap_, n * slots_);
    return true;
  }

  std::string ReapChecked(uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) {
      const uint16_t flags = LoadAcquire(&ring_[used_pos_].flags);
      if (!IsUsed(flags, used_wrap_)) {
        return absl::StrFormat("chain %u of %u: slot %u flags 0x%x not used", i,
                               n, used_pos_, flags);
      }
      const spec::PackedDesc d = ring_[used_pos_];
      const bool write = (d.flags & spec::kDescFlagWrite) != 0;
      if (d.id != used_pos_ || d.len != shape_.used_len ||
          write != (shape_.used_len != 0)) {
        return absl::StrFormat(
            "used desc at %u {id %u, len %u, flags 0x%x}, expected id %u len "
            "%u",
            used_pos_, d.id, d.len, d.flags, used_pos_, shape_.used_len);
      }
      Advance(used_pos_, used_wrap_, slots_);
    }
    return "";
  }

  // --- Two-thread driver (IDs from a FIFO free list, any completion order).

  int64_t ReapAll() {
    int64_t n = 0;
    for (;;) {
      const uint16_t flags = LoadAcquire(&ring_[used_pos_].flags);
      if (!IsUsed(flags, used_wrap_)) return n;
      const uint16_t id = LoadRelaxed(&ring_[used_pos_].id);
      if (id >= capacity_ || free_count_ == capacity_) return -1;
      // A conditional wrap: a division here cost the driver ~15% (size_
      // is not a compile-time constant).
      uint32_t slot = free_head_ + free_count_;
      if (slot >= size_) slot -= size_;
      free_[slot] = id;
      ++free_count_;
      Advance(used_pos_, used_wrap_, slots_);
      ++n;
    }
  }

  uint32_t PostFree(uint64_t max) {
    const uint32_t n =
        static_cast<uint32_t>(max < free_count_ ? max : free_count_);
    for (uint32_t i = 0; i < n; ++i) {
      PostChain(free_[free_head_]);
      if (++free_head_ == size_) free_head_ = 0;
    }
    free_count_ -= n;
    return n;
  }

 private:
  static bool IsUsed(uint16_t flags, bool wrap) {
    const bool avail = (flags & spec::kDescFlagAvail) != 0;
    const bool used = (flags & spec::kDescFlagUsed) != 0;
    return avail == used && used == wrap;
  }
  void Advance(uint16_t& pos, bool& wrap, uint32_t by) const {
    uint32_t p = pos + by;
    if (p >= size_) {
      p -= size_;
      wrap = !wrap;
    }
    pos = static_cast<uint16_t>(p);
  }
  uint16_t AvailBits(bool wrap) const {
    return wrap ? spec::kDescFlagAvail : spec::kDescFlagUsed;
  }
  static void WriteDesc(spec::PackedDesc* d, uint64_t addr, uint32_t len,
                        uint16_t id) {
    StoreRelaxed(&d->addr, addr);
    StoreRelaxed(&d->len, len);
    StoreRelaxed(&d->id, id);
  }

  // Writes the chain owning buffer area `id` at the avail position: every
  // slot is rewritten in full (the device turned the head into a used
  // descriptor, and for 3-descriptor chains the slots of a buffer shift every
  // lap), the head's flags last, with release.
  void PostChain(uint16_t id) {
    const uint16_t head = avail_pos_;
    if (slots_ == 1) {  // 1desc, or 3desc_indirect: one slot
      const uint16_t flags =
          static_cast<uint16_t>(one_slot_flags_ | AvailBits(avail_wrap_));
      WriteDesc(&ring_[head], one_slot_base_ + id * one_slot_stride_,
                one_slot_len_, id);
      if (++avail_pos_ == size_) {
        avail_pos_ = 0;
        avail_wrap_ = !avail_wrap_;
      }
      StoreRelease(&ring_[head].flags, flags);
      return;
    }
    Buf b[3];
    const uint32_t n = ChainBuffers(shape_, bufs_ + id * kBufStride, b);
    uint16_t head_flags = 0;
    for (uint32_t i = 0; i < n; ++i) {
      const bool last = i + 1 == n;
      const uint16_t flags = static_cast<uint16_t>(
          (b[i].writable ? spec::kDescFlagWrite : 0) |
          (last ? 0 : spec::kDescFlagNext) | AvailBits(avail_wrap_));
      spec::PackedDesc* d = &ring_[avail_pos_];
      WriteDesc(d, b[i].gpa, b[i].len, id);
      if (i == 0) {
        head_flags = flags;
      } else {
        StoreRelaxed(&d->flags, flags);
      }
      Advance(avail_pos_, avail_wrap_, 1);
    }
    StoreRelease(&ring_[head].flags, head_flags);
  }

  const Shape& shape_;
  uint32_t size_;
  uint32_t slots_;
  uint32_t capacity_;
  uint64_t ring_gpa_, driver_event_gpa_, device_event_gpa_;
  uint64_t bufs_, tables_;
  spec::PackedDesc* ring_;
  // Single-slot chains: the head descriptor for ID k is
  // {one_slot_base_ + k * one_slot_stride_, one_slot_len_, k, one_slot_flags_}.
  uint64_t one_slot_base_ = 0;
  uint64_t one_slot_stride_ = 0;
  uint32_t one_slot_len_ = 0;
  uint16_t one_slot_flags_ = 0;
  uint16_t avail_pos_ = 0;
  bool avail_wrap_ = true;
  uint16_t used_pos_ = 0;
  bool used_wrap_ = true;
  std::vector<uint16_t> free_;
  uint32_t free_head_ = 0;
  uint32_t free_count_ = 0;
};

// In the single-thread Post(), the packed driver uses the head offset as ID.
// (PostChain(avail_pos_) passes the offset before it advances.)

// ---------------------------------------------------------------------------
// Results for the summary printed after the run.

std::mutex g_results_mu;
std::map<std::string, double> g_results;  // key -> chains/s

void Record(const std::string& key, double rate) {
  std::lock_guard<std::mutex> lock(g_results_mu);
  g_results[key] = rate;
}

std::string Key1(const char* layout, const Shape& s, uint32_t batch) {
  return absl::StrFormat("1/%s/%u/%s", s.name, batch, layout);
}
std::string Key2(const char* layout) { return absl::StrFormat("2/%s", layout); }

// ---------------------------------------------------------------------------
// Single-thread benchmark.

inline bool CheckChain(const DescriptorChain& c, const Shape& s,
                       std::string* why) {
  const uint64_t readable_segs = s.readable ? 1 : 0;
  const uint64_t writable_segs = s.descs == 1 ? 1 : 2;
  if (!c.ok()) {
    *why = absl::StrFormat("chain error: %s", virtio::RingErrorName(c.error()));
  } else if (c.readable_bytes() != s.readable ||
             c.writable_bytes() != s.writable) {
    *why = absl::StrFormat(
        "chain has %u readable / %u writable bytes, "
        "expected %u / %u",
        c.readable_bytes(), c.writable_bytes(), s.readable, s.writable);
  } else if (c.descriptor_count() != s.descs ||
             c.readable().size() != readable_segs ||
             c.writable().size() != writable_segs) {
    *why = absl::StrFormat(
        "chain has %u descriptors, %u+%u segments, expected %u, %u+%u",
        c.descriptor_count(), c.readable().size(), c.writable().size(), s.descs,
        readable_segs, writable_segs);
  } else {
    return true;
  }
  return false;
}

// Runs the exact loop of the benchmark with every result checked, over
// several ring wraps. Aborts on any discrepancy: a benchmark of a driver or
// device that does not work measures nothing.
template <typename Driver>
void VerifySetup(Driver& driver, typename Driver::Queue& q,
                 DescriptorChain& chain, const Shape& s, uint32_t batch,
                 const std::string& name) {
  const uint32_t rounds = 3 * (q.size() / batch) + 3;
  for (uint32_t r = 0; r < rounds; ++r) {
    driver.Post(batch);
    for (uint32_t i = 0; i < batch; ++i) {
      const PopStatus st = q.Pop(chain);
      if (st != PopStatus::kChain) {
        Die(
            absl::StrFormat("%s: setup check round %u chain %u: Pop() = %d "
                            "(%s)",
                            name, r, i, static_cast<int>(st),
                            virtio::RingErrorName(q.error())));
      }
      std::string why;
      if (!CheckChain(chain, s, &why)) {
        Die(absl::StrFormat("%s: setup check round %u chain %u: %s", name, r, i,
                            why));
      }
      q.Push(chain.token(), s.used_len);
    }
    if (q.Pop(chain) != PopStatus::kEmpty) {
      Die(name + ": setup check: ring not empty after a batch");
    }
    q.Publish();
    if (q.error() != virtio::RingError::kNone || q.in_flight() != 0) {
      Die(absl::StrFormat("%s: setup check: queue error %s, in flight %u", name,
                          virtio::RingErrorName(q.error()), q.in_flight()));
    }
    const std::string err = driver.ReapChecked(batch);
    if (!err.empty()) {
      Die(absl::StrFormat("%s: setup check round %u: %s", name, r, err));
    }
  }
}

template <typename Driver>
void BM_SingleThread(benchmark::State& state, const Shape* shape,
                     uint32_t batch) {
  const Shape& s = *shape;
  const uint32_t qsize = QueueSizeFor(s, batch);
  TestGuestMemory mem({&kGuestRam, 1});
  Driver driver(mem, qsize, s);
  if (driver.capacity() < batch) Die("batch does not fit in the queue");
  auto queue = Driver::Queue::Create(mem.map(), driver.config());
  if (!queue.ok()) Die(absl::StrCat(queue.status().message()));
  typename Driver::Queue& q = *queue;
  DescriptorChain chain;
  VerifySetup(
      driver, q, chain, s, batch,
      absl::StrFormat("%s/%s/batch:%u", Driver::kLayout, s.name, batch));

  const uint32_t used_len = s.used_len;
  bool failed = false;
  const double t0 = ThreadCpuSeconds();
  for (auto _ : state) {
    driver.Post(batch);
    for (uint32_t i = 0; i < batch; ++i) {
      // A device must check ok() (a chain error still pops as kChain).
      if (q.Pop(chain) != PopStatus::kChain || !chain.ok()) [[unlikely]] {
        failed = true;
        break;
      }
      benchmark::DoNotOptimize(chain);
      q.Push(chain.token(), used_len);
    }
    benchmark::DoNotOptimize(q.Publish());
    if (failed || !driver.Reap(batch)) [[unlikely]] {
      failed = true;
      break;
    }
  }
  const double secs = ThreadCpuSeconds() - t0;
  if (failed) {
    state.SkipWithError(absl::StrFormat("ring stopped working: %s",
                                        virtio::RingErrorName(q.error()))
                            .c_str());
    return;
  }
  const double chains = static_cast<double>(state.iterations()) * batch;
  state.SetItemsProcessed(static_cast<int64_t>(chains));
  state.counters["chains/s"] =
      benchmark::Counter(chains, benchmark::Counter::kIsRate);
  if (secs > 0) {
    state.counters["ns/chain"] = secs * 1e9 / chains;
    Record(Key1(Driver::kLayout, s, batch), chains / secs);
  }
}

// ---------------------------------------------------------------------------
// Two-thread benchmark.

constexpr uint64_t kTwoThreadChains = 20'000'000;
constexpr auto kTwoThreadMaxTime = std::chrono::seconds(10);
constexpr uint32_t kDeviceMaxBatch = 32;
// The driver timestamps every kWindow chains (~1 ms). When other load shares
// the CPUs, the overall rate mostly measures scheduler time slices lost by a
// preempted busy-poller; the rates of the median and the 90th-percentile
// window show what the rings do between preemptions.
constexpr uint64_t kWindow = 1 << 14;

// The first two CPUs this process may run on, or {-1, -1}.
std::pair<int, int> PickCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return {-1, -1};
  int found[2] = {-1, -1};
  int n = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE && n < 2; ++cpu) {
    if (CPU_ISSET(cpu, &set)) found[n++] = cpu;
  }
  if (n < 2) return {-1, -1};
  return {found[0], found[1]};
}

void PinSelf(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

struct alignas(64) TwoThreadShared {
  alignas(64) std::atomic<bool> go{false};
  alignas(64) std::atomic<bool> stop{false};
  alignas(64) std::atomic<int> ready{0};
  // Written once by each thread when it exits.
  alignas(64) std::atomic<uint64_t> reaped{0};
  std::chrono::steady_clock::time_point driver_end;
  long driver_preempted = 0;
  std::string driver_error;
  std::vector<double> window_secs;  // duration of each kWindow chains
  alignas(64) uint64_t device_chains = 0;
  uint64_t device_publishes = 0;
  uint64_t device_polls = 0;
  uint64_t device_idle_polls = 0;
  long device_preempted = 0;
  std::string device_error;
  alignas(64) std::mutex mu;
  std::condition_variable cv;
  bool driver_done = false;
};

// Checks the two-thread driver paths (PostFree/ReapAll) single-threaded over
// a few laps before the threads start; aborts on any discrepancy.
template <typename Driver>
void VerifyTwoThreadSetup(Driver& driver, typename Driver::Queue& q,
                          const Shape& s) {
  DescriptorChain chain;
  for (int lap = 0; lap < 3; ++lap) {
    const uint32_t posted = driver.PostFree(driver.capacity());
    if (posted != driver.capacity()) Die("2thread setup: free list short");
    for (uint32_t i = 0; i < posted; ++i) {
      std::string why;
      if (q.Pop(chain) != PopStatus::kChain) {
        Die(absl::StrFormat("2thread setup: Pop() failed: %s",
                            virtio::RingErrorName(q.error())));
      }
      if (!CheckChain(chain, s, &why)) Die("2thread setup: " + why);
      q.Push(chain.token(), s.used_len);
    }
    q.Publish();
    if (driver.ReapAll() != posted) Die("2thread setup: reap mismatch");
  }
}

template <typename Driver>
void BM_TwoThread(benchmark::State& state) {
  const Shape& s = kOneDesc;
  const std::pair<int, int> cpus = PickCpus();
  const int cpu_driver = cpus.first;
  const int cpu_device = cpus.second;
  const bool spin = cpu_driver >= 0;  // two CPUs: busy-poll; else yield
  for (auto _ : state) {
    TestGuestMemory mem({&kGuestRam, 1});
    Driver driver(mem, 256, s);
    auto queue = Driver::Queue::Create(mem.map(), driver.config());
    if (!queue.ok()) Die(absl::StrCat(queue.status().message()));
    typename Driver::Queue& q = *queue;
    VerifyTwoThreadSetup(driver, q, s);
    TwoThreadShared sh;
    sh.window_secs.reserve(kTwoThreadChains / kWindow + 2);

    std::thread device([&] {
      PinSelf(cpu_device);
      DescriptorChain chain;
      sh.ready.fetch_add(1);
      while (!sh.go.load(std::memory_order_acquire)) CpuRelax();
      const long preempted0 = Preemptions();
      uint64_t chains = 0, publishes = 0, polls = 0, idle = 0;
      while (!sh.stop.load(std::memory_order_relaxed)) {
        uint32_t n = 0;
        PopStatus st = PopStatus::kEmpty;
        while (n < kDeviceMaxBatch &&
               (st = q.Pop(chain)) == PopStatus::kChain) {
          if (!chain.ok()) [[unlikely]] {
            st = PopStatus::kBroken;
            break;
          }
          benchmark::DoNotOptimize(chain);
          q.Push(chain.token(), s.used_len);
          ++n;
        }
        ++polls;
        if (st == PopStatus::kBroken) [[unlikely]] {
          sh.device_error = virtio::RingErrorName(
              q.error() != virtio::RingError::kNone ? q.error()
                                                    : chain.error());
          sh.stop.store(true);
          break;
        }
        if (n != 0) {
          benchmark::DoNotOptimize(q.Publish());
          chains += n;
          ++publishes;
        } else {
          ++idle;
          if (spin) {
            CpuRelax();
          } else {
            std::this_thread::yield();
          }
        }
      }
      sh.device_chains = chains;
      sh.device_publishes = publishes;
      sh.device_polls = polls;
      sh.device_idle_polls = idle;
      sh.device_preempted = Preemptions() - preempted0;
    });

    std::thread driver_thread([&] {
      PinSelf(cpu_driver);
      sh.ready.fetch_add(1);
      while (!sh.go.load(std::memory_order_acquire)) CpuRelax();
      const long preempted0 = Preemptions();
      uint64_t posted = 0, reaped = 0;
      uint64_t next_mark = kWindow;
      auto mark_time = std::chrono::steady_clock::now();
      while (!sh.stop.load(std::memory_order_relaxed)) {
        const int64_t got = driver.ReapAll();
        if (got < 0) {
          sh.driver_error = "device returned a bogus used element";
          break;
        }
        reaped += static_cast<uint64_t>(got);
        if (reaped >= next_mark) [[unlikely]] {
          const auto now = std::chrono::steady_clock::now();
          sh.window_secs.push_back(
              std::chrono::duration<double>(now - mark_time).count());
          mark_time = now;
          next_mark += kWindow;
        }
        if (reaped >= kTwoThreadChains) break;
        const uint32_t put = driver.PostFree(kTwoThreadChains - posted);
        posted += put;
        if (got == 0 && put == 0) {
          if (spin) {
            CpuRelax();
          } else {
            std::this_thread::yield();
          }
        }
      }
      sh.driver_end = std::chrono::steady_clock::now();
      sh.driver_preempted = Preemptions() - preempted0;
      sh.reaped.store(reaped);
      sh.stop.store(true);
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.driver_done = true;
      sh.cv.notify_all();
    });

    while (sh.ready.load() < 2) std::this_thread::yield();
    const auto t0 = std::chrono::steady_clock::now();
    sh.go.store(true, std::memory_order_release);
    bool timed_out = false;
    {
      std::unique_lock<std::mutex> lock(sh.mu);
      if (!sh.cv.wait_for(lock, kTwoThreadMaxTime,
                          [&] { return sh.driver_done; })) {
        timed_out = true;  // fixed-time fallback: count what completed
        sh.stop.store(true);
      }
    }
    device.join();
    driver_thread.join();

    const uint64_t chains = sh.reaped.load();
    const double secs =
        std::chrono::duration<double>(sh.driver_end - t0).count();
    if (!sh.device_error.empty() || !sh.driver_error.empty()) {
      state.SkipWithError(
          ("ring error: " + sh.device_error + sh.driver_error).c_str());
      return;
    }
    if (chains == 0 || secs <= 0) {
      state.SkipWithError("no chain completed (stalled)");
      return;
    }
    state.SetIterationTime(secs);
    state.SetItemsProcessed(static_cast<int64_t>(chains));
    state.counters["chains/s"] = benchmark::Counter(
        static_cast<double>(chains), benchmark::Counter::kIsRate);
    state.counters["ns/chain"] = secs * 1e9 / static_cast<double>(chains);
    state.counters["dev_batch"] =
        sh.device_publishes
            ? static_cast<double>(sh.device_chains) / sh.device_publishes
            : 0.0;
    if (!sh.window_secs.empty()) {
      std::vector<double> w = sh.window_secs;
      std::sort(w.begin(), w.end());
      // Window rates in chains/s: median, and the rate 90% of windows
      // stay below (the 10th-percentile window duration).
      state.counters["win_median"] = kWindow / w[w.size() / 2];
      state.counters["win_p90"] = kWindow / w[w.size() / 10];
    }
    state.counters["idle_polls"] =
        sh.device_polls
            ? static_cast<double>(sh.device_idle_polls) / sh.device_polls
            : 0.0;
    std::string label = cpu_driver >= 0
                            ? absl::StrFormat("driver cpu%d, device cpu%d",
                                              cpu_driver, cpu_device)
                            : std::string("UNPINNED: fewer than 2 CPUs");
    // Busy-polling threads that get preempted wait for each other for whole
    // scheduler time slices: the result then says more about the machine's
    // load than about the queue.
    const long preempted = sh.device_preempted + sh.driver_preempted;
    state.counters["preempted"] = static_cast<double>(preempted);
    if (preempted > 10) {
      label += absl::StrFormat(
          ", WARNING: threads preempted %d times (other load on these CPUs?)",
          preempted);
    }
    if (timed_out) {
      label +=
          absl::StrFormat(", stopped after %ds at %u chains",
                          static_cast<int>(kTwoThreadMaxTime.count()), chains);
    }
    state.SetLabel(label);
    Record(Key2(Driver::kLayout), chains / secs);
    if (state.counters.count("win_median")) {
      Record(Key2(Driver::kLayout) + "/win",
             state.counters["win_median"].value);
    }
    if (preempted > 10) Record(Key2(Driver::kLayout) + "/preempted", 1);
  }
}

// ---------------------------------------------------------------------------
// Registration and summary.

constexpr uint32_t kBatches[] = {1, 8, 32, 256};
const Shape* const kAllShapes[] = {&kOneDesc, &kThreeDesc, &kThreeIndirect};

void RegisterAll() {
  for (const Shape* s : kAllShapes) {
    for (uint32_t batch : kBatches) {
      const uint32_t qsize = QueueSizeFor(*s, batch);
      benchmark::RegisterBenchmark(
          absl::StrFormat("1thread/split/%s/batch:%u/q:%u", s->name, batch,
                          qsize)
              .c_str(),
          BM_SingleThread<LeanSplitDriver>, s, batch);
      benchmark::RegisterBenchmark(
          absl::StrFormat("1thread/packed/%s/batch:%u/q:%u", s->name, batch,
                          qsize)
              .c_str(),
          BM_SingleThread<LeanPackedDriver>, s, batch);
    }
  }
  for (auto* b :
       {benchmark::RegisterBenchmark("2thread/split/1desc/q:256",
                                     BM_TwoThread<LeanSplitDriver>),
        benchmark::RegisterBenchmark("2thread/packed/1desc/q:256",
                                     BM_TwoThread<LeanPackedDriver>)}) {
    b->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
}

std::string Rate(const std::string& key, double target) {
  auto it = g_results.find(key);
  if (it == g_results.end()) return absl::StrFormat("%14s", "-");
  const char* verdict =
      target <= 0 ? "    " : (it->second >= target ? " ok " : " LOW");
  return absl::StrFormat("%8.1fM%s", it->second / 1e6, verdict);
}

void PrintSummary(FILE* out) {
  if (g_results.empty()) return;
  std::fprintf(out,
               "\nSummary: device-side throughput in millions of chains/s "
               "(higher is better)\n"
               "  %-34s %14s %14s\n",
               "configuration", "split", "packed");
  for (const Shape* s : kAllShapes) {
    for (uint32_t batch : kBatches) {
      const double target = (s == &kOneDesc && batch == 32) ? 50e6 : 0.0;
      const std::string name =
          absl::StrFormat("1 thread  %-14s batch %3u%s", s->name, batch,
                          target > 0 ? " *" : "");
      const std::string a = Rate(Key1("split", *s, batch), target);
      const std::string b = Rate(Key1("packed", *s, batch), target);
      if (a.find('M') == std::string::npos &&
          b.find('M') == std::string::npos) {
        continue;
      }
      std::fprintf(out, "  %-34s %14s %14s\n", name.c_str(), a.c_str(),
                   b.c_str());
    }
  }
  const std::string a = Rate(Key2("split"), 15e6);
  const std::string b = Rate(Key2("packed"), 15e6);
  if (a.find('M') != std::string::npos || b.find('M') != std::string::npos) {
    std::fprintf(out, "  %-34s %14s %14s\n", "2 threads 1desc          q 256 *",
                 a.c_str(), b.c_str());
    std::fprintf(out, "  %-34s %14s %14s\n", "  median 1 ms window",
                 Rate(Key2("split") + "/win", 0).c_str(),
                 Rate(Key2("packed") + "/win", 0).c_str());
    if (g_results.count(Key2("split") + "/preempted") ||
        g_results.count(Key2("packed") + "/preempted")) {
      std::fprintf(out,
                   "  ! the two-thread threads were preempted by other load "
                   "on their CPUs: the overall\n"
                   "    rate is then dominated by lost time slices; the "
                   "median window shows the rings' rate.\n");
    }
  }
  std::fprintf(out,
               "  * targets: 1 thread 1desc batch 32 >= 50M/s, "
               "2 threads >= 15M/s (ok / LOW)\n");
  double load[1];
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (getloadavg(load, 1) == 1 && load[0] > cpus - 0.5) {
    std::fprintf(out,
                 "  ! load average %.1f on %ld CPUs: other work competed for "
                 "the CPUs during this run,\n"
                 "    so all numbers above are pessimistic.\n",
                 load[0], cpus);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Where the summary goes: stdout unless stdout carries JSON/CSV.
  bool console = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--benchmark_format=", 19) == 0 &&
        std::strcmp(argv[i] + 19, "console") != 0) {
      console = false;
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RegisterAll();
  std::fprintf(stderr,
               "ring_bench: device-side virtqueue throughput (SplitQueue vs "
               "PackedQueue).\n"
               "  1thread/...: one thread drives both sides; per iteration the "
               "driver posts `batch` chains,\n"
               "    the device pops + pushes each and publishes once. "
               "chains/s counts chains (= items_per_second).\n"
               "  2thread/...: driver and device threads busy-polling on "
               "separate CPUs, ring kept full.\n"
               "  Shapes: 1desc = one 2 KiB writable buffer; 3desc = "
               "16 B header + 512 B data + 1 B status;\n"
               "    3desc_indirect = the same in one indirect table. "
               "See the top of bench/ring_bench.cc.\n\n");
  benchmark::RunSpecifiedBenchmarks();
  PrintSummary(console ? stdout : stderr);
  benchmark::Shutdown();
  return 0;
}
