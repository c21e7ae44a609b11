#include "virtio/catalog/backend_opener.h"

#include <utility>

#include "virtio/log.h"

namespace virtio::catalog {
namespace {

// A StatusOr<unique_ptr<T>> as the variant `V` holding shared_ptr<T>.
template <typename V, typename T>
absl::StatusOr<V> Share(absl::StatusOr<std::unique_ptr<T>> made) {
  if (!made.ok()) return made.status();
  return V(std::shared_ptr<T>(*std::move(made)));
}

}  // namespace

absl::StatusOr<BlockBackend> OpenBlockBackend(const BlockSpec& spec,
                                              const BlockOpenOptions& options) {
  switch (spec.backend) {
    case BlockBackendKind::kFile: {
      UringDiskOptions disk{.path = spec.path,
                            .read_only = spec.readonly,
                            .direct = spec.direct,
                            .num_queues = spec.num_queues};
      if (options.queue_depth) disk.queue_depth = *options.queue_depth;
      return Share<BlockBackend>(UringDisk::Open(disk));
    }
    case BlockBackendKind::kRam: {
      RamDiskOptions disk{.capacity = spec.size,
                          .read_only = spec.readonly,
                          .num_queues = spec.num_queues};
      if (options.queue_depth) disk.queue_depth = *options.queue_depth;
      return Share<BlockBackend>(RamDisk::Create(disk));
    }
    case BlockBackendKind::kNull: {
      NullDiskOptions disk{.capacity = spec.size,
                           .read_only = spec.readonly,
                           .num_queues = spec.num_queues};
      if (options.queue_depth) disk.queue_depth = *options.queue_depth;
      return Share<BlockBackend>(NullDisk::Create(disk));
    }
  }
  return absl::InternalError("unknown block backend");
}

absl::StatusOr<NetBackend> OpenNetBackend(const NetSpec& spec,
                                          std::string_view device_name) {
  const uint16_t pairs = spec.queue_pairs;
  switch (spec.backend) {
    case NetBackendKind::kLoopback:
      return Share<NetBackend>(LoopbackNet::Create({.num_pairs = pairs}));
    case NetBackendKind::kTap: {
      absl::StatusOr<std::unique_ptr<TapNet>> tap =
          TapNet::Open({.name = spec.ifname, .num_pairs = pairs});
      if (tap.ok()) {
        Logf(LogLevel::kInfo, "%s: TAP interface %s", device_name,
             (*tap)->name());
      }
      return Share<NetBackend>(std::move(tap));
    }
    case NetBackendKind::kNull:
      return Share<NetBackend>(NullNet::Create({.num_pairs = pairs}));
    case NetBackendKind::kGenerator: {
      const uint32_t frame_len = spec.frame_len == 0 ? 64 : spec.frame_len;
      Logf(LogLevel::kInfo, "%s: generator backend, %u-byte frames",
           device_name, frame_len);
      return Share<NetBackend>(
          GeneratorNet::Create({.num_pairs = pairs, .frame_len = frame_len}));
    }
  }
  return absl::InternalError("unknown net backend");
}

absl::StatusOr<std::unique_ptr<AnyConsoleBackend>> OpenConsoleBackend(
    const ConsoleSpec& spec) {
  auto wrap =
      [](auto made) -> absl::StatusOr<std::unique_ptr<AnyConsoleBackend>> {
    if (!made.ok()) return made.status();
    return std::make_unique<AnyConsoleBackend>(
        AnyConsoleBackend::Variant(*std::move(made)));
  };
  switch (spec.backend) {
    case ConsoleBackendKind::kStdio:
      return wrap(StdioConsoleBackend::Create({}));
    case ConsoleBackendKind::kPty:
      return wrap(PtyConsoleBackend::Create({}));
    case ConsoleBackendKind::kSocket:
      return wrap(SocketConsoleBackend::Create({.path = spec.path}));
    case ConsoleBackendKind::kFile:
      return wrap(FileConsoleBackend::Create({.path = spec.path}));
  }
  return absl::InternalError("unknown console backend");
}

}  // namespace virtio::catalog
