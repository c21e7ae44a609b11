// virtio/catalog/device_spec.h — the device catalogue: one `--device`
// syntax for every libvirtio glue (vhost-user-device, virtio-kvm,
// xen-virtio-backend). The user's reference is docs/devices.md.
//
//   blk,path=FILE | backend=ram|null,size=BYTES
//       [,readonly=on][,direct=on][,num-queues=N][,serial=S]
//   net[,backend=loopback|tap|null|generator][,ifname=NAME][,mac=MAC]
//       [,queue-pairs=N][,mtu=N][,ctrl-vq=off][,frame-len=N]
//   console[,backend=stdio|pty|socket=PATH|file=PATH]
//   rng[,rate=BYTES_PER_SECOND]
//   every type: [,id=NAME][,packed=off][,queue-size=N]
//
// plus the glue's own keys (where the device sits and how it interrupts:
// transport=, addr=, irq=, grant=, msix=), which the glue reads through
// `GlueKeys` from the same SpecReader. Unknown and repeated keys are
// refused; values are typed (spec_values.h). Parsing opens nothing: the
// backends are opened by backend_opener.h.
#ifndef VIRTIO_CATALOG_DEVICE_SPEC_H_
#define VIRTIO_CATALOG_DEVICE_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "virtio/catalog/spec_reader.h"
#include "virtio/catalog/spec_values.h"

namespace virtio::catalog {

enum class DeviceType { kBlk, kNet, kConsole, kRng };
// "blk", "net", "console", "rng".
std::string_view DeviceTypeName(DeviceType type);

enum class BlockBackendKind { kFile, kRam, kNull };
enum class NetBackendKind { kLoopback, kTap, kNull, kGenerator };
enum class ConsoleBackendKind { kStdio, kPty, kSocket, kFile };
std::string_view BackendName(BlockBackendKind kind);
std::string_view BackendName(NetBackendKind kind);
std::string_view BackendName(ConsoleBackendKind kind);

// blk: the disk behind the device.
struct BlockSpec {
  BlockBackendKind backend = BlockBackendKind::kFile;
  std::string path = {};  // backend=file
  uint64_t size = 0;      // backend=ram|null: capacity in bytes
  bool readonly = false;
  bool direct = false;      // backend=file: O_DIRECT
  uint16_t num_queues = 1;  // request queues (VIRTIO_BLK_F_MQ when > 1)
  std::string serial = {};  // empty: the glue's choice
};

// net: where the guest's frames go.
struct NetSpec {
  NetBackendKind backend = NetBackendKind::kLoopback;
  std::string ifname = {};  // backend=tap; empty: the kernel picks
  std::optional<MacAddress> mac = {};
  uint16_t queue_pairs = 1;
  uint16_t mtu = 0;  // 0: no VIRTIO_NET_F_MTU
  bool ctrl_vq = true;
  uint32_t frame_len = 0;  // backend=generator; 0: its default
};

// console: one port, on this backend.
struct ConsoleSpec {
  ConsoleBackendKind backend = ConsoleBackendKind::kStdio;
  std::string path = {};  // backend=socket|file
};

// rng: entropy, optionally throttled.
struct RngSpec {
  uint64_t rate = 0;  // bytes per second; 0: unlimited
};

// One parsed `--device`. Only the member of `type` is meaningful.
struct DeviceSpec {
  std::string text = {};  // as given, for messages
  DeviceType type = DeviceType::kRng;
  std::string id = {};                      // empty: the glue names it
  bool packed = true;                       // offer VIRTIO_F_RING_PACKED
  std::optional<uint32_t> queue_size = {};  // the largest ring; glue default
  BlockSpec blk = {};
  NetSpec net = {};
  ConsoleSpec console = {};
  RngSpec rng = {};
};

// Reads the glue's own keys from the spec (after the shared ones, before
// unknown keys are refused). `spec` is the shared part, already parsed.
using GlueKeys =
    absl::FunctionRef<absl::Status(SpecReader& reader, const DeviceSpec& spec)>;

// Parses one `--device` argument: the shared keys of its type, then
// `glue_keys`, then refuses anything left.
absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view text,
                                           GlueKeys glue_keys);
// The same for a glue without keys of its own.
absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view text);

// The shared keys of `spec` that differ from their defaults, as
// "type,key=value,..." (id= included), to print a layout users can paste.
std::string FormatDeviceSpec(const DeviceSpec& spec);

// The shared syntax, for a glue's --help (indented two spaces per line).
const char* DeviceSpecHelp();

}  // namespace virtio::catalog

#endif  // VIRTIO_CATALOG_DEVICE_SPEC_H_
