// vhost-user/backend_conventions.h — QEMU's "Backend program conventions"
// (docs/interop/vhost-user.rst in QEMU) for the vhost-user-device daemon:
// the device type names of QEMU's vhost-user.json schema, the
// --print-capabilities document, and the listening socket with the
// permissions an operator asked for (--socket-mode, --socket-group).
#ifndef VHOST_USER_BACKEND_CONVENTIONS_H_
#define VHOST_USER_BACKEND_CONVENTIONS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "vhost_user/unique_fd.h"
#include "virtio/catalog/device_spec.h"

namespace vhost_user {

// The schema's VHostUserBackendType for `type`: "block", "net", "console",
// "rng".
std::string_view QemuBackendType(virtio::catalog::DeviceType type);

// The device type a program name stands for: "vhost-user-blk" (also
// "vhost-user-block"), "vhost-user-net", "vhost-user-console",
// "vhost-user-rng", with or without a directory; nullopt for any other
// name (vhost-user-device itself).
std::optional<virtio::catalog::DeviceType> DeviceTypeOfProgram(
    std::string_view argv0);

// The device type named by the first field of a --device spec, without
// parsing (or opening) the rest; nullopt when it names none.
std::optional<virtio::catalog::DeviceType> DeviceTypeOfSpec(
    std::string_view spec);

// The --print-capabilities document (the schema's
// VHostUserBackendCapabilities) for `type`, one line of JSON. Block lists
// the schema's features this daemon has options for ("read-only",
// "blk-file"); the other types have none defined.
std::string CapabilitiesJson(virtio::catalog::DeviceType type);

// Who may connect to a socket the daemon creates.
struct SocketAccess {
  mode_t mode = 0600;
  // Group owner to set; nullopt keeps the daemon's.
  std::optional<gid_t> group;
  std::string group_name;  // as given, for messages
};

// --socket-mode / --socket-group as given (empty: not given) into a
// SocketAccess: the mode is octal, at most 0777, and keeps read/write for
// the owner; a group (name or number) must exist; with a group and no mode
// the mode is 0660, and a mode that leaves the group without read/write
// while a group is named is refused (it would let nobody new in).
absl::StatusOr<SocketAccess> ParseSocketAccess(std::string_view mode,
                                               std::string_view group);

// Creates the listening socket at `path` (replacing a stale socket file;
// vhost_user::Listen) with `access`. The socket is created 0600 and
// widened after the group is set, so nobody unintended can connect in
// between; on an error the file is removed again. The errors name the
// mode or group and the reason (a non-root daemon may only give its files
// to groups it is a member of).
absl::StatusOr<UniqueFd> CreateListeningSocket(const std::string& path,
                                               const SocketAccess& access);

}  // namespace vhost_user

#endif  // VHOST_USER_BACKEND_CONVENTIONS_H_
