// GuestMemoryMap: validation, lookup over many regions, overflow-safe bounds
// checks at the edges of the 64-bit space, scatter translation across
// adjacent regions, concurrent lookups; and DescriptorChain::Append errors
// (and AssignSingle, its one-descriptor shortcut, against it).
//
// Many tests use fake host pointers (large made-up addresses) so that huge
// guest regions cost nothing; such pointers are only compared, never
// dereferenced.
#include "virtio/guest_memory.h"

#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "virtio/descriptor_chain.h"
#include "virtio/ring_error.h"

namespace virtio {
namespace {

constexpr uint64_t kTop = UINT64_MAX;  // last byte of the 64-bit space

// A made-up host address; never dereferenced.
uint8_t* FakeHost(uint64_t addr) {
  return reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(addr));
}
uintptr_t Addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// Fake host bases far apart so that regions of up to 2^36 bytes never meet.
uint8_t* FakeBase(int i) {
  return FakeHost(0x100000000000ull + (static_cast<uint64_t>(i) << 36));
}

GuestMemoryMap MustCreate(const std::vector<GuestRegion>& regions) {
  auto map = GuestMemoryMap::Create(regions);
  EXPECT_TRUE(map.ok()) << map.status();
  if (!map.ok()) return GuestMemoryMap();
  return *std::move(map);
}

// --- Create() validation
// ------------------------------------------------------

TEST(GuestMemoryCreateTest, RejectsZeroSize) {
  auto map = GuestMemoryMap::Create(
      {{GuestRegion{.gpa = 0x1000, .size = 0x1000, .host = FakeBase(0)},
        GuestRegion{.gpa = 0x4000, .size = 0, .host = FakeBase(1)}}});
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsNullHost) {
  auto map = GuestMemoryMap::Create(
      {{GuestRegion{.gpa = 0x1000, .size = 0x1000, .host = nullptr}}});
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsRegionWrappingAddressSpace) {
  for (const GuestRegion r :
       {GuestRegion{.gpa = kTop - 10, .size = 100, .host = FakeBase(0)},
        GuestRegion{.gpa = kTop, .size = 2, .host = FakeBase(0)},
        GuestRegion{.gpa = 2, .size = kTop, .host = FakeBase(0)},
        GuestRegion{.gpa = 0x1000, .size = kTop, .host = FakeBase(0)}}) {
    auto map = GuestMemoryMap::Create({&r, 1});
    EXPECT_FALSE(map.ok()) << "gpa=" << r.gpa << " size=" << r.size;
  }
}

TEST(GuestMemoryCreateTest, AcceptsRegionsEndingExactlyAtTopOfSpace) {
  // Last byte == UINT64_MAX does not wrap.
  for (const GuestRegion r :
       {GuestRegion{.gpa = kTop, .size = 1, .host = FakeBase(0)},
        GuestRegion{.gpa = kTop - 99, .size = 100, .host = FakeBase(0)},
        GuestRegion{.gpa = kTop - (1ull << 36) + 1, .size = 1ull << 36,
                    .host = FakeBase(0)}}) {
    auto map = GuestMemoryMap::Create({&r, 1});
    ASSERT_TRUE(map.ok()) << map.status();
    EXPECT_EQ(Addr(map->TranslateContiguous(kTop, 1)),
              Addr(FakeBase(0)) + (kTop - r.gpa));
  }
}

TEST(GuestMemoryCreateTest, RejectsHostMappingThatWraps) {
  // No real mapping can wrap the host address space; translating into one
  // would overflow a pointer.
  const GuestRegion r{.gpa = 1, .size = kTop, .host = FakeBase(0)};
  auto map = GuestMemoryMap::Create({&r, 1});
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsOverlaps) {
  const std::vector<std::vector<GuestRegion>> bad = {
      // Identical.
      {{0x1000, 0x1000, FakeBase(0)}, {0x1000, 0x1000, FakeBase(1)}},
      // Same start, different size.
      {{0x1000, 0x1000, FakeBase(0)}, {0x1000, 0x10, FakeBase(1)}},
      // Contained.
      {{0x1000, 0x10000, FakeBase(0)}, {0x2000, 0x1000, FakeBase(1)}},
      // Contained, given in the other order.
      {{0x2000, 0x1000, FakeBase(1)}, {0x1000, 0x10000, FakeBase(0)}},
      // Partial overlap by one byte.
      {{0x1000, 0x1001, FakeBase(0)}, {0x2000, 0x1000, FakeBase(1)}},
      // Overlap with a non-neighbour in unsorted input: the big region
      // covers the two after it.
      {{0x8000, 0x100, FakeBase(2)},
       {0x1000, 0x10000, FakeBase(0)},
       {0x4000, 0x100, FakeBase(1)}},
      // Overlap at the very top of the space.
      {{kTop - 0xfff, 0x1000, FakeBase(0)}, {kTop, 1, FakeBase(1)}},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    auto map = GuestMemoryMap::Create(bad[i]);
    ASSERT_FALSE(map.ok()) << "case " << i;
    EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(GuestMemoryCreateTest, SortsUnsortedInputAndAllowsAdjacentRegions) {
  const std::vector<GuestRegion> in = {
      {0x3000, 0x1000, FakeBase(3)},
      {0x1000, 0x1000, FakeBase(1)},
      {kTop - 0xfff, 0x1000, FakeBase(9)},
      {0x2000, 0x1000, FakeBase(2)},  // adjacent to both neighbours
      {0, 0x1000, FakeBase(0)},       // adjacent, starts at GPA 0
  };
  GuestMemoryMap map = MustCreate(in);
  ASSERT_EQ(map.regions().size(), 5u);
  const uint64_t want_gpa[] = {0, 0x1000, 0x2000, 0x3000, kTop - 0xfff};
  const int want_base[] = {0, 1, 2, 3, 9};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(map.regions()[i].gpa, want_gpa[i]);
    EXPECT_EQ(map.regions()[i].host, FakeBase(want_base[i]));
  }
  EXPECT_EQ(map.total_size(), 0x5000u);
  // Every region answers for its own bytes, including the shared borders.
  EXPECT_EQ(map.Find(0x1fff)->host, FakeBase(1));
  EXPECT_EQ(map.Find(0x2000)->host, FakeBase(2));
  EXPECT_EQ(map.Find(0x3fff)->host, FakeBase(3));
  EXPECT_EQ(map.Find(0x4000), nullptr);
}

TEST(GuestMemoryCreateTest, EmptyMapFindsNothing) {
  GuestMemoryMap map = MustCreate({});
  EXPECT_EQ(map.Find(0), nullptr);
  EXPECT_EQ(map.TranslateContiguous(0, 0), nullptr);
  iovec iov[1];
  EXPECT_EQ(map.TranslateScatter(0, 1, iov, 1).status,
            TranslateStatus::kOutOfRange);
  GuestMemoryMap def;
  EXPECT_EQ(def.Find(0x1000), nullptr);
  EXPECT_EQ(def.total_size(), 0u);
}

// --- Many regions against a linear reference
// -----------------------------------

struct ManyRegions {
  std::vector<GuestRegion> sorted;
  GuestMemoryMap map;
};

// 600 regions (more than vhost-user's 509) with gaps of varying size between
// them, handed to Create() shuffled.
ManyRegions MakeManyRegions(uint32_t count, uint32_t seed) {
  std::mt19937_64 rng(seed);
  ManyRegions m;
  uint64_t gpa = 0x1000 + (rng() % 4) * 0x1000;
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t size = 1 + rng() % 0x20000;  // 1 byte .. 128 KiB
    m.sorted.push_back({.gpa = gpa, .size = size, .host = FakeBase(int(i))});
    gpa += size + 1 + rng() % 0x8000;  // gap of at least one byte
  }
  std::vector<GuestRegion> shuffled = m.sorted;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  m.map = MustCreate(shuffled);
  return m;
}

const GuestRegion* LinearFind(const std::vector<GuestRegion>& regions,
                              uint64_t gpa) {
  for (const GuestRegion& r : regions) {
    if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
  }
  return nullptr;
}

// Checks every lookup API at `gpa` against the linear reference.
void CheckLookup(const ManyRegions& m, uint64_t gpa) {
  const GuestRegion* want = LinearFind(m.sorted, gpa);
  const GuestRegion* got = m.map.Find(gpa);
  if (want == nullptr) {
    ASSERT_EQ(got, nullptr) << "gpa 0x" << std::hex << gpa;
    ASSERT_EQ(m.map.TranslateContiguous(gpa, 1), nullptr);
    ASSERT_EQ(m.map.TranslateContiguous(gpa, 0), nullptr);
    return;
  }
  ASSERT_NE(got, nullptr) << "gpa 0x" << std::hex << gpa;
  ASSERT_EQ(got->gpa, want->gpa);
  ASSERT_EQ(got->host, want->host);
  const uint64_t off = gpa - want->gpa;
  ASSERT_EQ(Addr(m.map.TranslateContiguous(gpa, 1)), Addr(want->host) + off);
  ASSERT_EQ(Addr(m.map.TranslateContiguous(gpa, want->size - off)),
            Addr(want->host) + off);
  ASSERT_EQ(m.map.TranslateContiguous(gpa, want->size - off + 1), nullptr);
}

TEST(GuestMemoryManyRegionsTest, EveryEdgeAndGapMatchesLinearReference) {
  const ManyRegions m = MakeManyRegions(600, 1);
  ASSERT_EQ(m.map.regions().size(), 600u);
  for (size_t i = 0; i < m.sorted.size(); ++i) {
    ASSERT_EQ(m.map.regions()[i].gpa, m.sorted[i].gpa);
  }
  std::vector<uint64_t> probes = {0, 1, m.sorted.front().gpa - 1, kTop,
                                  kTop - 1};
  for (size_t i = 0; i < m.sorted.size(); ++i) {
    const GuestRegion& r = m.sorted[i];
    const uint64_t end = r.gpa + r.size;  // first byte after
    probes.insert(probes.end(), {r.gpa, r.gpa + r.size / 2, end - 1, end});
    if (i + 1 < m.sorted.size()) {
      const uint64_t next = m.sorted[i + 1].gpa;
      probes.insert(probes.end(), {(end + next) / 2, next - 1});
    } else {
      probes.push_back(end + 0x123456);
    }
  }
  // In order (cache mostly misses on region changes) ...
  for (uint64_t gpa : probes) {
    ASSERT_NO_FATAL_FAILURE(CheckLookup(m, gpa));
  }
  // ... repeated (cache hits) ...
  for (uint64_t gpa : probes) {
    ASSERT_NO_FATAL_FAILURE(CheckLookup(m, gpa));
    ASSERT_NO_FATAL_FAILURE(CheckLookup(m, gpa));
  }
  // ... and shuffled.
  std::mt19937_64 rng(7);
  std::shuffle(probes.begin(), probes.end(), rng);
  for (uint64_t gpa : probes) {
    ASSERT_NO_FATAL_FAILURE(CheckLookup(m, gpa));
  }
}

TEST(GuestMemoryManyRegionsTest, RandomLookupsMatchLinearReference) {
  const ManyRegions m = MakeManyRegions(509, 2);
  const uint64_t span = m.sorted.back().gpa + m.sorted.back().size + 0x10000;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 20000; ++i) {
    ASSERT_NO_FATAL_FAILURE(CheckLookup(m, rng() % span));
  }
}

TEST(GuestMemoryManyRegionsTest, CopiesAndMovesLookUpTheSame) {
  const ManyRegions m = MakeManyRegions(600, 4);
  // Warm the cache on a late region, then copy and move.
  ASSERT_NE(m.map.Find(m.sorted[599].gpa), nullptr);
  GuestMemoryMap copy(m.map);
  GuestMemoryMap assigned;
  assigned = copy;
  GuestMemoryMap moved(std::move(copy));
  GuestMemoryMap move_assigned;
  move_assigned = std::move(assigned);
  for (const GuestMemoryMap* map : {&moved, &move_assigned}) {
    for (size_t i = 0; i < m.sorted.size(); i += 37) {
      const GuestRegion& r = m.sorted[i];
      ASSERT_EQ(Addr(map->TranslateContiguous(r.gpa + r.size - 1, 1)),
                Addr(r.host) + r.size - 1);
      ASSERT_EQ(map->TranslateContiguous(r.gpa + r.size, 1), nullptr);
    }
  }
}

// --- TranslateContiguous edge cases
// ---------------------------------------------

class ContiguousTest : public ::testing::Test {
 protected:
  // [0x1000, 0x2000) and [0x2000, 0x3000) adjacent; [0x5000, 0x6000) after a
  // gap; a region ending exactly at 2^64.
  GuestMemoryMap map_ = MustCreate({{0x1000, 0x1000, FakeBase(0)},
                                    {0x2000, 0x1000, FakeBase(1)},
                                    {0x5000, 0x1000, FakeBase(2)},
                                    {kTop - 0xfff, 0x1000, FakeBase(3)}});
};

TEST_F(ContiguousTest, ZeroLength) {
  EXPECT_EQ(map_.TranslateContiguous(0x1000, 0), FakeBase(0));
  EXPECT_EQ(Addr(map_.TranslateContiguous(0x1fff, 0)),
            Addr(FakeBase(0)) + 0xfff);
  // Zero length still needs gpa inside a region.
  EXPECT_EQ(map_.TranslateContiguous(0x3000, 0), nullptr);
  EXPECT_EQ(map_.TranslateContiguous(0x6000, 0), nullptr);
  EXPECT_EQ(map_.TranslateContiguous(0, 0), nullptr);
  EXPECT_EQ(Addr(map_.TranslateContiguous(kTop, 0)), Addr(FakeBase(3)) + 0xfff);
}

TEST_F(ContiguousTest, ExactlyToTheEndAndOneBytePast) {
  EXPECT_EQ(map_.TranslateContiguous(0x1000, 0x1000), FakeBase(0));
  EXPECT_EQ(map_.TranslateContiguous(0x1000, 0x1001), nullptr);
  EXPECT_EQ(Addr(map_.TranslateContiguous(0x1ff0, 0x10)),
            Addr(FakeBase(0)) + 0xff0);
  EXPECT_EQ(map_.TranslateContiguous(0x1ff0, 0x11), nullptr);
  // Adjacent regions are still two regions: no contiguous range across.
  EXPECT_EQ(map_.TranslateContiguous(0x1fff, 2), nullptr);
  EXPECT_EQ(Addr(map_.TranslateContiguous(0x5fff, 1)),
            Addr(FakeBase(2)) + 0xfff);
  EXPECT_EQ(map_.TranslateContiguous(0x5fff, 2), nullptr);
  // The top region, up to and past 2^64.
  EXPECT_EQ(map_.TranslateContiguous(kTop - 0xfff, 0x1000), FakeBase(3));
  EXPECT_EQ(map_.TranslateContiguous(kTop - 0xfff, 0x1001), nullptr);
  EXPECT_EQ(Addr(map_.TranslateContiguous(kTop, 1)), Addr(FakeBase(3)) + 0xfff);
  EXPECT_EQ(map_.TranslateContiguous(kTop, 2), nullptr);
}

TEST_F(ContiguousTest, HugeLengthsDoNotWrap) {
  // gpa + len overflows 64 bits; a wrapping check would accept these.
  EXPECT_EQ(map_.TranslateContiguous(kTop - 10, kTop), nullptr);
  EXPECT_EQ(map_.TranslateContiguous(kTop - 10, kTop - 5), nullptr);
  EXPECT_EQ(map_.TranslateContiguous(kTop, kTop), nullptr);
  EXPECT_EQ(map_.TranslateContiguous(kTop - 0xfff, uint64_t{1} << 63), nullptr);
  EXPECT_EQ(map_.TranslateContiguous(0x1000, kTop), nullptr);
  EXPECT_EQ(map_.TranslateContiguous(0x1800, kTop - 0x7ff), nullptr);
  // gpa + len wraps to 0x1700, inside the same region: a naive
  // `gpa + len <= region end` check would accept it.
  EXPECT_EQ(map_.TranslateContiguous(0x1800, kTop - 0xff), nullptr);
}

// --- TranslateScatter
// ----------------------------------------------------------

class ScatterTest : public ::testing::Test {
 protected:
  // Three adjacent regions A, B, C; a gap; D; then two adjacent regions
  // ending exactly at 2^64, and one at GPA 0 (which a wrapping range would
  // reach).
  static constexpr uint64_t kA = 0x10000, kB = 0x11000, kC = 0x12000,
                            kD = 0x20000;
  static constexpr uint64_t kHi = kTop - 0x1fff, kHi2 = kTop - 0xfff;
  GuestMemoryMap map_ = MustCreate({{kA, 0x1000, FakeBase(0)},
                                    {kB, 0x1000, FakeBase(1)},
                                    {kC, 0x1000, FakeBase(2)},
                                    {kD, 0x1000, FakeBase(3)},
                                    {kHi, 0x1000, FakeBase(4)},
                                    {kHi2, 0x1000, FakeBase(5)},
                                    {0, 0x1000, FakeBase(6)}});
  iovec iov_[8] = {};

  void ExpectSeg(int i, const uint8_t* base, uint64_t off, uint64_t len) {
    EXPECT_EQ(Addr(iov_[i].iov_base), Addr(base) + off) << "segment " << i;
    EXPECT_EQ(iov_[i].iov_len, len) << "segment " << i;
  }
};

TEST_F(ScatterTest, SingleRegion) {
  const ScatterResult r = map_.TranslateScatter(kA + 0x10, 0x20, iov_, 8);
  ASSERT_EQ(r.status, TranslateStatus::kOk);
  ASSERT_EQ(r.segments, 1u);
  ExpectSeg(0, FakeBase(0), 0x10, 0x20);
}

TEST_F(ScatterTest, ZeroLengthIsOkWithNoSegments) {
  for (uint64_t gpa : {kA, uint64_t{0x5000000}, kTop}) {
    const ScatterResult r = map_.TranslateScatter(gpa, 0, iov_, 0);
    EXPECT_EQ(r.status, TranslateStatus::kOk);
    EXPECT_EQ(r.segments, 0u);
  }
}

TEST_F(ScatterTest, SpansTwoAdjacentRegions) {
  const ScatterResult r = map_.TranslateScatter(kA + 0x800, 0x1000, iov_, 8);
  ASSERT_EQ(r.status, TranslateStatus::kOk);
  ASSERT_EQ(r.segments, 2u);
  ExpectSeg(0, FakeBase(0), 0x800, 0x800);
  ExpectSeg(1, FakeBase(1), 0, 0x800);
  // One byte on each side of the border.
  const ScatterResult r2 = map_.TranslateScatter(kB - 1, 2, iov_, 2);
  ASSERT_EQ(r2.status, TranslateStatus::kOk);
  ASSERT_EQ(r2.segments, 2u);
  ExpectSeg(0, FakeBase(0), 0xfff, 1);
  ExpectSeg(1, FakeBase(1), 0, 1);
}

TEST_F(ScatterTest, SpansThreeAdjacentRegions) {
  const ScatterResult r = map_.TranslateScatter(kA + 0xc00, 0x1800, iov_, 8);
  ASSERT_EQ(r.status, TranslateStatus::kOk);
  ASSERT_EQ(r.segments, 3u);
  ExpectSeg(0, FakeBase(0), 0xc00, 0x400);
  ExpectSeg(1, FakeBase(1), 0, 0x1000);
  ExpectSeg(2, FakeBase(2), 0, 0x400);
  // Exactly the three regions, capacity exactly 3.
  const ScatterResult all = map_.TranslateScatter(kA, 0x3000, iov_, 3);
  ASSERT_EQ(all.status, TranslateStatus::kOk);
  ASSERT_EQ(all.segments, 3u);
  ExpectSeg(0, FakeBase(0), 0, 0x1000);
  ExpectSeg(1, FakeBase(1), 0, 0x1000);
  ExpectSeg(2, FakeBase(2), 0, 0x1000);
}

TEST_F(ScatterTest, GapGivesOutOfRange) {
  // Runs off the end of C into the gap before D.
  EXPECT_EQ(map_.TranslateScatter(kC + 0x800, 0x801, iov_, 8).status,
            TranslateStatus::kOutOfRange);
  // Spans the whole gap from C into D.
  EXPECT_EQ(map_.TranslateScatter(kC + 0x800, kD - kC, iov_, 8).status,
            TranslateStatus::kOutOfRange);
  // Starts in the gap.
  EXPECT_EQ(map_.TranslateScatter(kC + 0x1000, 1, iov_, 8).status,
            TranslateStatus::kOutOfRange);
  // Ends exactly at C's end: fine.
  EXPECT_EQ(map_.TranslateScatter(kC + 0x800, 0x800, iov_, 8).status,
            TranslateStatus::kOk);
}

TEST_F(ScatterTest, CapacityExceeded) {
  EXPECT_EQ(map_.TranslateScatter(kA + 0xc00, 0x1800, iov_, 2).status,
            TranslateStatus::kTooManySegments);
  EXPECT_EQ(map_.TranslateScatter(kA + 0x800, 0x1000, iov_, 1).status,
            TranslateStatus::kTooManySegments);
  EXPECT_EQ(map_.TranslateScatter(kA, 1, iov_, 0).status,
            TranslateStatus::kTooManySegments);
  const ScatterResult ok = map_.TranslateScatter(kA + 0x800, 0x1000, iov_, 2);
  EXPECT_EQ(ok.status, TranslateStatus::kOk);
  EXPECT_EQ(ok.segments, 2u);
}

TEST_F(ScatterTest, RegionEndingAtTopOfSpace) {
  // Exactly to 2^64 inside the top region.
  ScatterResult r = map_.TranslateScatter(kHi2 + 0x800, 0x800, iov_, 8);
  ASSERT_EQ(r.status, TranslateStatus::kOk);
  ASSERT_EQ(r.segments, 1u);
  ExpectSeg(0, FakeBase(5), 0x800, 0x800);
  // Across the two top regions, up to 2^64.
  r = map_.TranslateScatter(kHi + 0x10, 0x2000 - 0x10, iov_, 8);
  ASSERT_EQ(r.status, TranslateStatus::kOk);
  ASSERT_EQ(r.segments, 2u);
  ExpectSeg(0, FakeBase(4), 0x10, 0xff0);
  ExpectSeg(1, FakeBase(5), 0, 0x1000);
  // The last byte alone.
  r = map_.TranslateScatter(kTop, 1, iov_, 8);
  ASSERT_EQ(r.status, TranslateStatus::kOk);
  ASSERT_EQ(r.segments, 1u);
  ExpectSeg(0, FakeBase(5), 0xfff, 1);
}

TEST_F(ScatterTest, RangePastTopDoesNotWrapToGpaZero) {
  // GPA 0 is mapped: a wrapping implementation would continue there.
  EXPECT_EQ(map_.TranslateScatter(kTop - 1, 4, iov_, 8).status,
            TranslateStatus::kOutOfRange);
  EXPECT_EQ(map_.TranslateScatter(kHi, 0x2001, iov_, 8).status,
            TranslateStatus::kOutOfRange);
  EXPECT_EQ(map_.TranslateScatter(kTop, kTop, iov_, 8).status,
            TranslateStatus::kOutOfRange);
  EXPECT_EQ(map_.TranslateScatter(kHi2, kTop, iov_, 8).status,
            TranslateStatus::kOutOfRange);
  // Huge lengths from low addresses also fail cleanly.
  EXPECT_EQ(map_.TranslateScatter(kA, kTop, iov_, 8).status,
            TranslateStatus::kOutOfRange);
}

// --- Concurrency
// --------------------------------------------------------------

TEST(GuestMemoryConcurrencyTest, TwoThreadsOnDifferentRegions) {
  // Each thread alternates between lookups in its own regions, so the shared
  // last-hit cache keeps being overwritten by the other thread. A stale or
  // torn hint must only cost a miss, never a wrong answer.
  const ManyRegions m = MakeManyRegions(64, 5);
  std::atomic<bool> go{false};
  std::atomic<uint64_t> errors{0};
  auto worker = [&](int parity) {
    while (!go.load()) {
    }
    std::mt19937_64 rng(100 + parity);
    for (int i = 0; i < 200000; ++i) {
      const size_t idx = 2 * (rng() % 32) + parity;
      const GuestRegion& r = m.sorted[idx];
      const uint64_t off = rng() % r.size;
      const uint8_t* p = m.map.TranslateContiguous(r.gpa + off, r.size - off);
      if (Addr(p) != Addr(r.host) + off) errors.fetch_add(1);
      // Also the first byte after the region (a gap): must miss.
      if (m.map.TranslateContiguous(r.gpa + r.size, 1) != nullptr) {
        errors.fetch_add(1);
      }
      iovec iov[2];
      const ScatterResult s = m.map.TranslateScatter(r.gpa, r.size, iov, 2);
      if (s.status != TranslateStatus::kOk || s.segments != 1 ||
          iov[0].iov_base != r.host || iov[0].iov_len != r.size) {
        errors.fetch_add(1);
      }
    }
  };
  std::thread a(worker, 0), b(worker, 1);
  go.store(true);
  a.join();
  b.join();
  EXPECT_EQ(errors.load(), 0u);
}

// --- DescriptorChain::Append errors
// ----------------------------------------------

class AppendTest : public ::testing::Test {
 protected:
  // A huge, sparse map: 16 GiB at 4 GiB (fake host memory, never touched),
  // three adjacent 4 KiB regions, and a region ending at 2^64.
  GuestMemoryMap map_ =
      MustCreate({{0x100000000ull, 0x400000000ull, FakeBase(0)},
                  {0x1000, 0x1000, FakeBase(1)},
                  {0x2000, 0x1000, FakeBase(2)},
                  {0x3000, 0x1000, FakeBase(3)},
                  {kTop - 0xfff, 0x1000, FakeBase(4)}});
};

TEST_F(AppendTest, WellFormedChainCollectsSegments) {
  DescriptorChain chain(8);
  chain.Reset();
  EXPECT_EQ(chain.Append(map_, 0x1800, 0x1000, false), RingError::kNone);
  EXPECT_EQ(chain.Append(map_, 0x3000, 0, false), RingError::kNone);
  EXPECT_EQ(chain.Append(map_, 0x3000, 0x10, true), RingError::kNone);
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain.readable().size(), 2u);
  ASSERT_EQ(chain.writable().size(), 1u);
  EXPECT_EQ(Addr(chain.readable()[0].iov_base), Addr(FakeBase(1)) + 0x800);
  EXPECT_EQ(chain.readable()[1].iov_base, FakeBase(2));
  EXPECT_EQ(chain.writable()[0].iov_base, FakeBase(3));
  EXPECT_EQ(chain.readable_bytes(), 0x1000u);
  EXPECT_EQ(chain.writable_bytes(), 0x10u);
  EXPECT_EQ(chain.descriptor_count(), 3u);
}

TEST_F(AppendTest, ReadableAfterWritable) {
  DescriptorChain chain(8);
  EXPECT_EQ(chain.Append(map_, 0x1000, 16, false), RingError::kNone);
  EXPECT_EQ(chain.Append(map_, 0x1100, 16, true), RingError::kNone);
  EXPECT_EQ(chain.Append(map_, 0x1200, 16, false),
            RingError::kReadableAfterWritable);
  EXPECT_EQ(chain.error(), RingError::kReadableAfterWritable);
  EXPECT_FALSE(chain.ok());
  // Sticky: later (valid) buffers are counted but not translated.
  EXPECT_EQ(chain.Append(map_, 0x1300, 16, true),
            RingError::kReadableAfterWritable);
  EXPECT_EQ(chain.descriptor_count(), 4u);
  EXPECT_EQ(chain.writable().size(), 1u);
  EXPECT_EQ(chain.writable_bytes(), 16u);
  // Reset starts over.
  chain.Reset();
  EXPECT_TRUE(chain.ok());
  EXPECT_EQ(chain.descriptor_count(), 0u);
  EXPECT_EQ(chain.readable().size() + chain.writable().size(), 0u);
  // A zero-length readable buffer after a writable one is still misordered.
  EXPECT_EQ(chain.Append(map_, 0x1100, 16, true), RingError::kNone);
  EXPECT_EQ(chain.Append(map_, 0x1100, 0, false),
            RingError::kReadableAfterWritable);
}

TEST_F(AppendTest, AddressOverflow) {
  DescriptorChain chain(8);
  EXPECT_EQ(chain.Append(map_, kTop - 3, 8, false),
            RingError::kBufferAddressOverflow);
  chain.Reset();
  EXPECT_EQ(chain.Append(map_, kTop, UINT32_MAX, true),
            RingError::kBufferAddressOverflow);
  chain.Reset();
  // Fully inside the top region, ending one byte before 2^64.
  EXPECT_EQ(chain.Append(map_, kTop - 8, 8, false), RingError::kNone);
  // Documented behaviour: addr + len == 2^64 "overflows 64 bits", so a
  // buffer whose last byte is UINT64_MAX is rejected even though
  // GuestMemoryMap would translate it.
  chain.Reset();
  EXPECT_EQ(chain.Append(map_, kTop - 7, 8, false),
            RingError::kBufferAddressOverflow);
}

TEST_F(AppendTest, OutOfRange) {
  DescriptorChain chain(8);
  EXPECT_EQ(chain.Append(map_, 0x3800, 0x801, false),
            RingError::kBufferOutOfRange);
  chain.Reset();
  EXPECT_EQ(chain.Append(map_, 0x80000000, 1, true),
            RingError::kBufferOutOfRange);
}

TEST_F(AppendTest, ChainLargerThan4GiB) {
  constexpr uint64_t kBig = 0x100000000ull;  // start of the 16 GiB region
  DescriptorChain chain(8);
  // 3 x 1 GiB + (1 GiB - 1) = 4 GiB - 1 = UINT32_MAX: the limit, accepted.
  EXPECT_EQ(chain.Append(map_, kBig, 0x40000000, false), RingError::kNone);
  EXPECT_EQ(chain.Append(map_, kBig + 0x40000000, 0x40000000, false),
            RingError::kNone);
  EXPECT_EQ(chain.Append(map_, kBig + 0x80000000, 0x40000000, true),
            RingError::kNone);
  EXPECT_EQ(chain.Append(map_, kBig + 0xc0000000, 0x3fffffff, true),
            RingError::kNone);
  EXPECT_EQ(chain.readable_bytes() + chain.writable_bytes(),
            uint64_t{UINT32_MAX});
  // One more byte, even a writable one, exceeds it.
  EXPECT_EQ(chain.Append(map_, kBig + 0x100000000ull, 1, true),
            RingError::kChainTooLarge);
  EXPECT_EQ(chain.error(), RingError::kChainTooLarge);

  // Two maximal descriptors.
  chain.Reset();
  EXPECT_EQ(chain.Append(map_, kBig, UINT32_MAX, false), RingError::kNone);
  EXPECT_EQ(chain.Append(map_, kBig + 0x200000000ull, UINT32_MAX, true),
            RingError::kChainTooLarge);
  EXPECT_EQ(chain.writable().size(), 0u);
}

TEST_F(AppendTest, TooManySegments) {
  DescriptorChain chain(2);
  // One buffer spanning three regions needs three segments.
  EXPECT_EQ(chain.Append(map_, 0x1800, 0x2000, false),
            RingError::kTooManySegments);
  EXPECT_EQ(chain.error(), RingError::kTooManySegments);

  // Capacity filled exactly across appends, then one more segment.
  chain.Reset();
  EXPECT_EQ(chain.Append(map_, 0x1f00, 0x200, false), RingError::kNone);  // 2
  EXPECT_EQ(chain.Append(map_, 0x2800, 0, true), RingError::kNone);       // 0
  EXPECT_EQ(chain.Append(map_, 0x2800, 1, true), RingError::kTooManySegments);

  // Zero capacity accepts only empty buffers.
  DescriptorChain none(0);
  EXPECT_EQ(none.Append(map_, 0x1000, 0, false), RingError::kNone);
  EXPECT_EQ(none.Append(map_, 0x1000, 1, false), RingError::kTooManySegments);
}

// AssignSingle(), PackedQueue's path for a one-descriptor chain, must
// leave the chain exactly as Reset() + Append() would, whatever state it
// was in.
TEST_F(AppendTest, AssignSingleMatchesResetThenAppend) {
  struct Case {
    uint64_t addr;
    uint32_t len;
    bool writable;
    uint32_t capacity;
  };
  const Case cases[] = {
      {0x1800, 0x100, false, 8},              // inside one region
      {0x1800, 0x100, true, 8},               // writable
      {0x1800, 0, false, 8},                  // zero length
      {0x1800, 0, true, 8},                   // zero length, writable
      {0x1800, 0x2000, false, 8},             // three adjacent regions
      {0x1800, 0x2000, true, 2},              // ... with room for two
      {0x1800, 0x10, false, 0},               // no room at all
      {0x1800, 0, false, 0},                  // no room, nothing to put
      {0x3800, 0x801, false, 8},              // runs off the end
      {0x80000000, 1, true, 8},               // in no region
      {0x80000000, 0, false, 8},              // in no region, zero length
      {kTop - 3, 8, false, 8},                // wraps the address space
      {kTop - 7, 8, true, 8},                 // ends exactly at 2^64
      {kTop - 8, 8, false, 8},                // last bytes before it
      {0x100000000ull, UINT32_MAX, true, 8},  // the largest buffer
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << std::hex << "addr 0x" << c.addr << " len 0x" << c.len
                 << " writable " << c.writable << " capacity " << c.capacity);
    DescriptorChain want(c.capacity), got(c.capacity);
    want.Reset();
    const RingError want_error = want.Append(map_, c.addr, c.len, c.writable);
    // Leave `got` dirty first: an error, segments, a token.
    got.Reset();
    got.Append(map_, 0x1000, 0x10, true);
    got.Append(map_, 0x1000, 0x10, false);
    got.set_token({7, 3});
    EXPECT_EQ(got.AssignSingle(map_, c.addr, c.len, c.writable), want_error);
    EXPECT_EQ(got.error(), want.error());
    EXPECT_EQ(got.readable_bytes(), want.readable_bytes());
    EXPECT_EQ(got.writable_bytes(), want.writable_bytes());
    EXPECT_EQ(got.descriptor_count(), want.descriptor_count());
    EXPECT_EQ(got.token().id, want.token().id);
    EXPECT_EQ(got.token().ring_slots, want.token().ring_slots);
    ASSERT_EQ(got.readable().size(), want.readable().size());
    ASSERT_EQ(got.writable().size(), want.writable().size());
    for (size_t i = 0; i < got.readable().size(); ++i) {
      EXPECT_EQ(got.readable()[i].iov_base, want.readable()[i].iov_base);
      EXPECT_EQ(got.readable()[i].iov_len, want.readable()[i].iov_len);
    }
    for (size_t i = 0; i < got.writable().size(); ++i) {
      EXPECT_EQ(got.writable()[i].iov_base, want.writable()[i].iov_base);
      EXPECT_EQ(got.writable()[i].iov_len, want.writable()[i].iov_len);
    }
    // What a later descriptor sees (a readable one after a writable one is
    // misordered) is the same too, on a chain with room for it.
    if (c.capacity > 0 && want.ok()) {
      EXPECT_EQ(got.Append(map_, 0x1000, 0x10, false),
                want.Append(map_, 0x1000, 0x10, false));
    }
  }
}

}  // namespace
}  // namespace virtio
