// Built against an *installed* libvirtio by tests/install/run.sh, linked
// with libvirtio::backends (and so liburing), once via find_package and
// once via pkg-config (libvirtio-backends.pc). Exits non-zero on failure.
#include <virtio/backends/ram_disk.h>

#include <cstdio>

int main() {
  // Link-time check: RamDisk::Create lives in libvirtio_backends.a.
  absl::StatusOr<std::unique_ptr<virtio::RamDisk>> disk =
      virtio::RamDisk::Create({.capacity = 1 << 20});
  if (!disk.ok()) {
    std::fprintf(stderr, "RamDisk::Create: %s\n",
                 disk.status().ToString().c_str());
    return 1;
  }
  std::printf("install consumer (backends) OK\n");
  return 0;
}
