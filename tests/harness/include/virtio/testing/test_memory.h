// virtio/testing/test_memory.h — in-process guest memory for device tests.
//
// TestGuestMemory plays the guest's RAM: one or more regions, each backed by
// its own host allocation (so AddressSanitizer flags any access that strays
// past a region), a GuestMemoryMap over them for the device side, and a bump
// allocator plus typed accessors for the driver side.
//
// A variant wraps memory the caller owns instead (kExternalMemory): e.g. a
// simulated hypervisor's guest RAM, so the driver-side helpers lay rings and
// buffers out in the very pages a device reaches through its own mapping.
//
// Example:
//   virtio::testing::TestGuestMemory mem({{.gpa = 0x10000, .size = 1 << 20}});
//   uint64_t buf = mem.Alloc(4096, 16);
//   mem.Fill(buf, 0xab, 4096);
//   DeviceUnderTest dev(mem.map());
#ifndef VIRTIO_TESTING_TEST_MEMORY_H_
#define VIRTIO_TESTING_TEST_MEMORY_H_

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "virtio/guest_memory.h"

namespace virtio::testing {

// Tag of the constructor over caller-owned memory.
struct ExternalMemoryTag {};
inline constexpr ExternalMemoryTag kExternalMemory{};

// A region to create: `size` bytes at guest-physical `gpa`.
struct RegionSpec {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

class TestGuestMemory {
 public:
  // Default: one 4 MiB region at GPA 0x10000.
  TestGuestMemory();
  // Regions must not overlap; adjacent regions (a.gpa + a.size == b.gpa)
  // get separate host allocations, so buffers crossing them come back as
  // several segments. Aborts on an invalid table (a test bug).
  explicit TestGuestMemory(absl::Span<const RegionSpec> regions);
  TestGuestMemory(std::initializer_list<RegionSpec> regions)
      : TestGuestMemory(absl::Span<const RegionSpec>(regions.begin(),
                                                     regions.size())) {}

  // Wraps caller-owned memory: each region's `host` must stay valid (and
  // mapped) for this object's lifetime; nothing is allocated or freed, and
  // the contents are left as they are (Alloc() still zeroes what it hands
  // out). Same validity rules as above; aborts on an invalid table.
  TestGuestMemory(ExternalMemoryTag, absl::Span<const GuestRegion> regions);

  TestGuestMemory(const TestGuestMemory&) = delete;
  TestGuestMemory& operator=(const TestGuestMemory&) = delete;

  // The device's view.
  const GuestMemoryMap& map() const { return map_; }

  // Allocates `size` bytes aligned to `align` within one region, zeroed.
  // Aborts when memory runs out (a test bug).
  uint64_t Alloc(uint64_t size, uint64_t align = 8);

  // Host pointer for [gpa, gpa+len) inside one region; aborts otherwise.
  uint8_t* Host(uint64_t gpa, uint64_t len = 1) const;

  // Byte copies that may cross region boundaries; abort outside memory.
  void Write(uint64_t gpa, const void* src, uint64_t len);
  void Read(uint64_t gpa, void* dst, uint64_t len) const;
  void Fill(uint64_t gpa, uint8_t byte, uint64_t len);

  template <typename T>
  T Load(uint64_t gpa) const {
    T v;
    Read(gpa, &v, sizeof v);
    return v;
  }
  template <typename T>
  void Store(uint64_t gpa, const T& v) {
    Write(gpa, &v, sizeof v);
  }

 private:
  struct Region {
    uint64_t gpa;
    uint64_t size;
    std::unique_ptr<uint8_t[]> data;  // null for caller-owned memory
    uint8_t* host;
    uint64_t next_free;  // bump allocator offset
  };
  // Calls fn(host, n) for each piece of [gpa, gpa+len).
  template <typename Fn>
  void ForEachPiece(uint64_t gpa, uint64_t len, Fn fn) const;

  std::vector<Region> regions_;
  GuestMemoryMap map_;
};

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_TEST_MEMORY_H_
