// virtio/catalog/backend_opener.h — opens the backend a parsed `--device`
// (device_spec.h) names: the one place that turns a BlockSpec, NetSpec or
// ConsoleSpec into a bundled backend, for every glue.
//
//   absl::StatusOr<BlockBackend> disk = OpenBlockBackend(spec.blk, {});
//   std::visit([&](auto& d) { /* BlkDevice<Traits, decltype(*d)> */ },
//              *disk);
//
// Block and net backends come as variants of shared pointers (the glue
// instantiates its device per alternative, and keeps the backend alive as
// long as the device); consoles as one AnyConsoleBackend. How to watch a
// net backend's fds is in net_wakeup.h.
#ifndef VIRTIO_CATALOG_BACKEND_OPENER_H_
#define VIRTIO_CATALOG_BACKEND_OPENER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <variant>

#include "absl/status/statusor.h"
#include "virtio/backends/generator_net.h"
#include "virtio/backends/loopback_net.h"
#include "virtio/backends/null_disk.h"
#include "virtio/backends/null_net.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/backends/tap_net.h"
#include "virtio/backends/uring_disk.h"
#include "virtio/catalog/any_console_backend.h"
#include "virtio/catalog/device_spec.h"

namespace virtio::catalog {

using BlockBackend =
    std::variant<std::shared_ptr<UringDisk>, std::shared_ptr<RamDisk>,
                 std::shared_ptr<NullDisk>>;

// What the glue, not the user, decides about a disk.
struct BlockOpenOptions {
  // Requests in flight per queue; empty: the backend's default.
  std::optional<uint32_t> queue_depth;
};

absl::StatusOr<BlockBackend> OpenBlockBackend(const BlockSpec& spec,
                                              const BlockOpenOptions& options);

using NetBackend =
    std::variant<std::shared_ptr<LoopbackNet>, std::shared_ptr<TapNet>,
                 std::shared_ptr<NullNet>, std::shared_ptr<GeneratorNet>>;

// One backend pair per queue pair of `spec`. Logs the TAP interface's name
// (the kernel's choice when ifname= was not given) under `device_name`.
absl::StatusOr<NetBackend> OpenNetBackend(const NetSpec& spec,
                                          std::string_view device_name);

absl::StatusOr<std::unique_ptr<AnyConsoleBackend>> OpenConsoleBackend(
    const ConsoleSpec& spec);

}  // namespace virtio::catalog

#endif  // VIRTIO_CATALOG_BACKEND_OPENER_H_
