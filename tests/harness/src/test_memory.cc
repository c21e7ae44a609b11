#include "virtio/testing/test_memory.h"

#include <cstdio>
#include <cstdlib>

namespace virtio::testing {
namespace {

[[noreturn]] void Die(const char* what, uint64_t a, uint64_t b) {
  std::fprintf(stderr, "TestGuestMemory: %s (0x%llx, 0x%llx)\n", what,
               static_cast<unsigned long long>(a),
               static_cast<unsigned long long>(b));
  std::abort();
}

constexpr RegionSpec kDefaultRegion{.gpa = 0x10000, .size = 4 << 20};

}  // namespace

TestGuestMemory::TestGuestMemory()
    : TestGuestMemory(absl::Span<const RegionSpec>(&kDefaultRegion, 1)) {}

TestGuestMemory::TestGuestMemory(absl::Span<const RegionSpec> regions) {
  std::vector<GuestRegion> table;
  for (const RegionSpec& spec : regions) {
    Region r{spec.gpa, spec.size, std::make_unique<uint8_t[]>(spec.size), nullptr, 0};
    r.host = r.data.get();
    table.push_back({.gpa = r.gpa, .size = r.size, .host = r.host});
    regions_.push_back(std::move(r));
  }
  auto map = GuestMemoryMap::Create(table);
  if (!map.ok()) Die("invalid region table", regions.size(), 0);
  map_ = *std::move(map);
}

TestGuestMemory::TestGuestMemory(ExternalMemoryTag,
                                 absl::Span<const GuestRegion> regions) {
  for (const GuestRegion& g : regions) {
    if (g.host == nullptr) Die("external region without host memory", g.gpa, g.size);
    regions_.push_back(Region{g.gpa, g.size, nullptr, g.host, 0});
  }
  auto map = GuestMemoryMap::Create(regions);
  if (!map.ok()) Die("invalid region table", regions.size(), 0);
  map_ = *std::move(map);
}

uint64_t TestGuestMemory::Alloc(uint64_t size, uint64_t align) {
  for (Region& r : regions_) {
    uint64_t start = (r.gpa + r.next_free + align - 1) / align * align;
    if (start - r.gpa <= r.size && size <= r.size - (start - r.gpa)) {
      r.next_free = start - r.gpa + size;
      std::memset(r.host + (start - r.gpa), 0, size);
      return start;
    }
  }
  Die("out of guest memory", size, align);
}

uint8_t* TestGuestMemory::Host(uint64_t gpa, uint64_t len) const {
  uint8_t* p = map_.TranslateContiguous(gpa, len);
  if (p == nullptr) Die("range not inside one region", gpa, len);
  return p;
}

template <typename Fn>
void TestGuestMemory::ForEachPiece(uint64_t gpa, uint64_t len, Fn fn) const {
  uint64_t done = 0;
  while (done < len) {
    const GuestRegion* r = map_.Find(gpa + done);
    if (r == nullptr) Die("range outside memory", gpa, len);
    const uint64_t offset = gpa + done - r->gpa;
    const uint64_t avail = r->size - offset;
    const uint64_t take = len - done < avail ? len - done : avail;
    fn(r->host + offset, done, take);
    done += take;
  }
}

void TestGuestMemory::Write(uint64_t gpa, const void* src, uint64_t len) {
  const auto* in = static_cast<const uint8_t*>(src);
  ForEachPiece(gpa, len, [in](uint8_t* host, uint64_t at, uint64_t n) {
    std::memcpy(host, in + at, n);
  });
}

void TestGuestMemory::Read(uint64_t gpa, void* dst, uint64_t len) const {
  auto* out = static_cast<uint8_t*>(dst);
  ForEachPiece(gpa, len, [out](uint8_t* host, uint64_t at, uint64_t n) {
    std::memcpy(out + at, host, n);
  });
}

void TestGuestMemory::Fill(uint64_t gpa, uint8_t byte, uint64_t len) {
  ForEachPiece(gpa, len, [byte](uint8_t* host, uint64_t, uint64_t n) {
    std::memset(host, byte, n);
  });
}

}  // namespace virtio::testing
