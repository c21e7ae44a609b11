// fuzz/guest_memory_fuzzer.cc — GuestMemoryMap against a brute-force model.
//
// The input is a table of guest regions (arbitrary GPAs and sizes: adjacent,
// overlapping, empty, wrapping, at the top of the address space; null or
// fake host pointers that are never dereferenced) and a list of lookups.
// Create() must accept exactly the tables the O(n^2) reference accepts, and
// every TranslateContiguous / TranslateScatter answer must equal the one
// computed by a linear scan: same status, same segments, each inside the
// region that produced it, lengths summing to the request.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "virtio/guest_memory.h"
#include "fuzz_check.h"

namespace {

using virtio::GuestMemoryMap;
using virtio::GuestRegion;
using virtio::ScatterResult;
using virtio::TranslateStatus;
using u128 = unsigned __int128;

constexpr uint32_t kMaxSegments = 16;

uint64_t GenSize(FuzzedDataProvider& fdp) {
  switch (fdp.ConsumeIntegral<uint8_t>() % 8) {
    case 0: return 0;
    case 1: return fdp.ConsumeIntegral<uint64_t>();
    case 2: return UINT64_MAX - fdp.ConsumeIntegralInRange<uint64_t>(0, 4096);
    case 3: return uint64_t{1} << fdp.ConsumeIntegralInRange<unsigned>(0, 63);
    default: return fdp.ConsumeIntegralInRange<uint64_t>(1, 0x10000);
  }
}

uint64_t GenRegionGpa(FuzzedDataProvider& fdp,
                      const std::vector<GuestRegion>& prev) {
  const uint8_t mode = fdp.ConsumeIntegral<uint8_t>() % 8;
  if (!prev.empty() && mode < 4) {
    const GuestRegion& p = prev[fdp.ConsumeIntegralInRange<size_t>(
        0, prev.size() - 1)];
    const uint64_t d = fdp.ConsumeIntegralInRange<uint64_t>(0, 64);
    switch (mode) {
      case 0: return p.gpa + p.size;       // adjacent
      case 1: return p.gpa + p.size + d;   // small gap
      case 2: return p.gpa + p.size - d;   // overlapping tail
      default: return p.gpa - d;           // overlapping head / before
    }
  }
  switch (mode) {
    case 4: return 0 - fdp.ConsumeIntegralInRange<uint64_t>(1, 0x10000);
    case 5: return fdp.ConsumeIntegral<uint64_t>();
    default: return fdp.ConsumeIntegralInRange<uint64_t>(0, 0x10000);
  }
}

// Reference Create(): every region non-empty, mapped, not wrapping, and no
// two regions sharing a byte.
bool RefValid(const std::vector<GuestRegion>& rs) {
  for (const GuestRegion& r : rs) {
    if (r.size == 0 || r.host == nullptr) return false;
    if (u128{r.gpa} + r.size > (u128{1} << 64)) return false;
  }
  for (size_t i = 0; i < rs.size(); ++i) {
    for (size_t j = i + 1; j < rs.size(); ++j) {
      const u128 a = rs[i].gpa, ae = a + rs[i].size;
      const u128 b = rs[j].gpa, be = b + rs[j].size;
      if (a < be && b < ae) return false;
    }
  }
  return true;
}

const GuestRegion* RefFind(const std::vector<GuestRegion>& rs, u128 gpa) {
  for (const GuestRegion& r : rs) {
    if (gpa >= r.gpa && gpa < u128{r.gpa} + r.size) return &r;
  }
  return nullptr;
}

uintptr_t Addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

void CheckContiguous(const GuestMemoryMap& mem,
                     const std::vector<GuestRegion>& rs, uint64_t gpa,
                     uint64_t len) {
  const uint8_t* got = mem.TranslateContiguous(gpa, len);
  const GuestRegion* r = RefFind(rs, gpa);
  uintptr_t want = 0;
  if (r != nullptr && len <= r->size - (gpa - r->gpa)) {
    want = Addr(r->host) + (gpa - r->gpa);
  }
  FUZZ_CHECK(Addr(got) == want);
}

void CheckScatter(const GuestMemoryMap& mem, const std::vector<GuestRegion>& rs,
                  uint64_t gpa, uint64_t len, uint32_t capacity) {
  // Model: split [gpa, gpa+len) at region boundaries, unlimited capacity.
  struct Seg {
    uintptr_t base;
    uint64_t len;
  };
  std::vector<Seg> ref;
  bool hole = false;
  u128 cur = gpa;
  const u128 end = u128{gpa} + len;
  while (cur < end) {
    const GuestRegion* r =
        cur >= (u128{1} << 64) ? nullptr : RefFind(rs, cur);
    if (r == nullptr) {
      hole = true;
      break;
    }
    const uint64_t off = static_cast<uint64_t>(cur) - r->gpa;
    const u128 take128 = std::min<u128>(end - cur, u128{r->size} - off);
    const auto take = static_cast<uint64_t>(take128);
    ref.push_back({Addr(r->host) + off, take});
    cur += take;
    if (ref.size() > kMaxSegments + 1) break;  // enough to decide
  }

  iovec out[kMaxSegments + 1];
  const ScatterResult res = mem.TranslateScatter(gpa, len, out, capacity);
  if (!hole && ref.size() <= capacity) {
    FUZZ_CHECK(res.status == TranslateStatus::kOk);
    FUZZ_CHECK(res.segments == ref.size());
    uint64_t sum = 0;
    for (uint32_t i = 0; i < res.segments; ++i) {
      FUZZ_CHECK(Addr(out[i].iov_base) == ref[i].base);
      FUZZ_CHECK(out[i].iov_len == ref[i].len);
      FUZZ_CHECK(out[i].iov_len > 0);
      // Inside the region table entry that produced it.
      bool inside = false;
      for (const GuestRegion& r : rs) {
        const uintptr_t h = Addr(r.host);
        const uintptr_t b = Addr(out[i].iov_base);
        if (b >= h && b - h < r.size && out[i].iov_len <= r.size - (b - h)) {
          inside = true;
        }
      }
      FUZZ_CHECK(inside);
      sum += out[i].iov_len;
    }
    FUZZ_CHECK(sum == len);
  } else if (hole && ref.size() <= capacity) {
    FUZZ_CHECK(res.status == TranslateStatus::kOutOfRange);
  } else if (!hole) {
    FUZZ_CHECK(res.status == TranslateStatus::kTooManySegments);
  } else {
    // Both a hole and too few iovecs: either answer is truthful.
    FUZZ_CHECK(res.status != TranslateStatus::kOk);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);

  std::vector<GuestRegion> rs;
  const size_t n = fdp.ConsumeIntegralInRange<size_t>(0, 12);
  for (size_t i = 0; i < n; ++i) {
    GuestRegion r;
    r.gpa = GenRegionGpa(fdp, rs);
    r.size = GenSize(fdp);
    // Fake host addresses, never dereferenced, chosen so host + size stays
    // inside the address space as it would for a real mapping.
    const uintptr_t fake = (uintptr_t{i} + 1) << 40;
    uintptr_t host = fake;
    if (host > UINTPTR_MAX - r.size) host = (UINTPTR_MAX - r.size) & ~uintptr_t{15};
    if (fdp.ConsumeIntegral<uint8_t>() == 0) host = 0;
    r.host = reinterpret_cast<uint8_t*>(host);
    rs.push_back(r);
  }

  auto created = GuestMemoryMap::Create(rs);
  const bool valid = RefValid(rs);
  FUZZ_CHECK(created.ok() == valid);
  if (!valid) return 0;

  GuestMemoryMap mem = std::move(*created);
  // regions(): the same table, sorted by GPA.
  FUZZ_CHECK(mem.regions().size() == rs.size());
  uint64_t total = 0;
  for (size_t i = 0; i < mem.regions().size(); ++i) {
    if (i > 0) FUZZ_CHECK(mem.regions()[i - 1].gpa < mem.regions()[i].gpa);
    total += rs[i].size;
    bool found = false;
    for (const GuestRegion& r : rs) {
      if (r.gpa == mem.regions()[i].gpa && r.size == mem.regions()[i].size &&
          r.host == mem.regions()[i].host) {
        found = true;
      }
    }
    FUZZ_CHECK(found);
  }
  FUZZ_CHECK(mem.total_size() == total);

  GuestMemoryMap copy;
  while (fdp.remaining_bytes() > 0) {
    const uint8_t op = fdp.ConsumeIntegral<uint8_t>();
    // Lookups near region edges, or anywhere.
    uint64_t gpa;
    if (!rs.empty() && op < 200) {
      const GuestRegion& r = rs[op % rs.size()];
      switch (fdp.ConsumeIntegral<uint8_t>() % 4) {
        case 0: gpa = r.gpa + fdp.ConsumeIntegralInRange<uint64_t>(0, 64); break;
        case 1: gpa = r.gpa + r.size - fdp.ConsumeIntegralInRange<uint64_t>(0, 64); break;
        case 2: gpa = r.gpa - fdp.ConsumeIntegralInRange<uint64_t>(0, 64); break;
        default: gpa = r.gpa + fdp.ConsumeIntegral<uint64_t>() % r.size; break;
      }
    } else {
      gpa = fdp.ConsumeIntegral<uint64_t>();
    }
    uint64_t len;
    switch (fdp.ConsumeIntegral<uint8_t>() % 4) {
      case 0: len = 0; break;
      case 1: len = fdp.ConsumeIntegral<uint64_t>(); break;
      case 2: len = 0 - gpa + fdp.ConsumeIntegralInRange<uint64_t>(0, 2); break;
      default: len = fdp.ConsumeIntegralInRange<uint64_t>(1, 0x20000); break;
    }
    const uint32_t capacity =
        fdp.ConsumeIntegralInRange<uint32_t>(0, kMaxSegments);

    // Copies and moves must answer like the original (the last-hit cache
    // is not part of the value).
    const GuestMemoryMap* m = &mem;
    switch (op % 5) {
      case 1:
        copy = mem;
        m = &copy;
        break;
      case 2: {
        GuestMemoryMap c(mem);
        CheckContiguous(c, rs, gpa, len);
        CheckScatter(c, rs, gpa, len, capacity);
        GuestMemoryMap moved(std::move(c));
        m = &mem;
        CheckContiguous(moved, rs, gpa, len);
        copy = std::move(moved);
        CheckScatter(copy, rs, gpa, len, capacity);
        break;
      }
      default: break;
    }
    CheckContiguous(*m, rs, gpa, len);
    CheckScatter(*m, rs, gpa, len, capacity);
  }
  return 0;
}
