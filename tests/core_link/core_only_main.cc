// A program linked against libvirtio::virtio alone (tests/core_link): it
// must build, run and need no liburing. check.sh inspects the binary.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "virtio/guest_memory.h"
#include "virtio/log.h"

int main() {
  // Something from libvirtio.a, so the archive is really linked.
  std::vector<uint8_t> ram(4096);
  const virtio::GuestRegion regions[] = {
      {.gpa = 0, .size = ram.size(), .host = ram.data()}};
  absl::StatusOr<virtio::GuestMemoryMap> memory =
      virtio::GuestMemoryMap::Create(regions);
  if (!memory.ok() || memory->TranslateContiguous(0, 8) != ram.data()) {
    std::fprintf(stderr, "GuestMemoryMap does not map the region\n");
    return 1;
  }
  virtio::Logf(virtio::LogLevel::kInfo, "core-only program runs");
  return 0;
}
