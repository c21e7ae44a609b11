// vhost-user/daemon_plan.h — which devices one vhost-user-device process
// serves and where each one's front-end comes from, decided from the
// command line (and the sockets a service manager passed) before anything
// is opened.
//
// One device: its socket is --socket-path (alias --socket), --fd, one
// socket-activated fd, or the spec's own socket-path=; exactly one of
// them.
//
// Several devices (--device repeated, like qemu-storage-daemon's repeated
// --export): each is served on its own socket by its own threads, and
// nothing may leave a front-end guessing which device it reaches:
//   - every device names its socket with socket-path=PATH, or, under
//     socket activation with several sockets, its id= is the
//     FileDescriptorName= of its socket (LISTEN_FDNAMES);
//   - --socket-path, --socket and --fd are refused (they name one socket);
//   - two devices on one socket path, or two with one log name, are
//     refused.
// With --client, socket-path= is the front-end's socket to connect to.
#ifndef VHOST_USER_DAEMON_PLAN_H_
#define VHOST_USER_DAEMON_PLAN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "service_manager.h"
#include "virtio/catalog/device_spec.h"

namespace vhost_user {

// The command line's part that says what to serve and where.
struct DaemonFlags {
  std::string argv0 = {};                 // the program's name (vhost-user-blk)
  std::vector<std::string> devices = {};  // every --device, in order
  std::string blk_file = {};              // --blk-file
  bool read_only = false;                 // --read-only
  std::string socket_path = {};           // --socket-path
  std::string socket_alias = {};          // --socket
  int fd = -1;                            // --fd (-1: not given)
  bool client = false;                    // --client
  bool socket_access_given = false;       // --socket-mode or --socket-group
  bool no_packed = false;                 // --no-packed
};

// Where one device's front-end comes from.
struct Endpoint {
  std::string socket_path = {};  // created (server) or connected (--client)
  int inherited_fd = -1;         // --fd or LISTEN_FDS: not created/removed
  std::string description = {};  // for log lines
};

// One device to serve.
struct PlannedDevice {
  virtio::catalog::DeviceSpec spec = {};
  // The name its log lines carry: "vhost-user-device[TYPE]" for a single
  // device, "vhost-user-device[ID]" (or [TYPE] when that is unique, else
  // [TYPE.N] for the N-th --device) when several.
  std::string name = {};
  // What the control socket calls it: its id=, else the bracketed part of
  // `name` (TYPE or TYPE.N).
  std::string label = {};
  Endpoint endpoint = {};
};

// The devices and their endpoints (see the top of this file), or an
// InvalidArgument error saying what is missing or ambiguous. Parses the
// specs (catalogue syntax plus socket-path=); opens nothing.
absl::StatusOr<std::vector<PlannedDevice>> PlanDaemon(
    const DaemonFlags& flags, absl::Span<const ActivatedSocket> activated);

}  // namespace vhost_user

#endif  // VHOST_USER_DAEMON_PLAN_H_
