#include "virtio/guest_memory.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_format.h"

namespace virtio {

absl::StatusOr<GuestMemoryMap> GuestMemoryMap::Create(
    absl::Span<const GuestRegion> regions) {
  std::vector<GuestRegion> sorted(regions.begin(), regions.end());
  for (const GuestRegion& r : sorted) {
    if (r.size == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("guest region at 0x%x has zero size", r.gpa));
    }
    if (r.host == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("guest region at 0x%x has no host mapping", r.gpa));
    }
    const auto host = reinterpret_cast<uintptr_t>(r.host);
    if (host + (r.size - 1) < host) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "guest region at 0x%x: host mapping of 0x%x bytes wraps", r.gpa,
          r.size));
    }
    if (r.gpa + (r.size - 1) < r.gpa) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "guest region 0x%x+0x%x wraps the address space", r.gpa, r.size));
    }
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const GuestRegion& a, const GuestRegion& b) {
              return a.gpa < b.gpa;
            });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const GuestRegion& prev = sorted[i - 1];
    const GuestRegion& cur = sorted[i];
    // prev.gpa + prev.size cannot wrap past cur.gpa unwinding: checked above
    // that prev's last byte is representable.
    if (cur.gpa - prev.gpa < prev.size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "guest regions 0x%x+0x%x and 0x%x+0x%x overlap", prev.gpa,
          prev.size, cur.gpa, cur.size));
    }
  }
  return GuestMemoryMap(std::move(sorted));
}

GuestMemoryMap::GuestMemoryMap(const GuestMemoryMap& other)
    : regions_(other.regions_) {}

GuestMemoryMap& GuestMemoryMap::operator=(const GuestMemoryMap& other) {
  regions_ = other.regions_;
  last_hit_.store(0, std::memory_order_relaxed);
  return *this;
}

GuestMemoryMap::GuestMemoryMap(GuestMemoryMap&& other) noexcept
    : regions_(std::move(other.regions_)) {}

GuestMemoryMap& GuestMemoryMap::operator=(GuestMemoryMap&& other) noexcept {
  regions_ = std::move(other.regions_);
  last_hit_.store(0, std::memory_order_relaxed);
  return *this;
}

uint64_t GuestMemoryMap::total_size() const {
  uint64_t total = 0;
  for (const GuestRegion& r : regions_) total += r.size;
  return total;
}

const GuestRegion* GuestMemoryMap::FindSlow(uint64_t gpa) const {
  // First region whose start is above gpa; the candidate is the one before.
  auto it = std::upper_bound(
      regions_.begin(), regions_.end(), gpa,
      [](uint64_t a, const GuestRegion& r) { return a < r.gpa; });
  if (it == regions_.begin()) return nullptr;
  --it;
  if (gpa - it->gpa >= it->size) return nullptr;
  last_hit_.store(static_cast<uint32_t>(it - regions_.begin()),
                  std::memory_order_relaxed);
  return &*it;
}

}  // namespace virtio
