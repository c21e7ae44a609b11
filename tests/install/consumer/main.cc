// Built against an *installed* libvirtio by tests/install/run.sh, once via
// find_package(libvirtio) and once via pkg-config. Exits non-zero on failure.
#include <virtio/guest_memory.h>
#include <virtio/spec.h>

#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  std::printf("virtio::spec::kMaxQueueSize = %u\n",
              static_cast<unsigned>(virtio::spec::kMaxQueueSize));

  // Link-time check: GuestMemoryMap::Create lives in libvirtio.a.
  std::vector<uint8_t> ram(4096);
  const virtio::GuestRegion regions[] = {
      {.gpa = 0x1000, .size = ram.size(), .host = ram.data()}};
  absl::StatusOr<virtio::GuestMemoryMap> mem =
      virtio::GuestMemoryMap::Create(regions);
  if (!mem.ok()) {
    std::fprintf(stderr, "GuestMemoryMap::Create: %s\n",
                 mem.status().ToString().c_str());
    return 1;
  }
  if (mem->TranslateContiguous(0x1000, 16) != ram.data()) {
    std::fprintf(stderr, "TranslateContiguous returned the wrong pointer\n");
    return 1;
  }
  std::printf("install consumer OK\n");
  return 0;
}
