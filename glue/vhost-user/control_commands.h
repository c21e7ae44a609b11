// vhost-user/control_commands.h — the commands vhost-user-device's control
// socket (control_server.h) answers, for the one device it serves:
//
//   stats   the statistics document (stats_json.h; README "Statistics")
//   resize  re-read the disk's size and grow the device (blk on a file or
//           block device): {"resized":BOOL,"old_capacity_sectors":N,
//           "new_capacity_sectors":N,"config_change_sent":BOOL}; an error
//           reply when the disk shrank or cannot be resized
//   help    {"commands":["help","resize","stats"]}
//
// Anything else is an error reply naming the commands.
//
// A daemon serving several devices (HandleDaemonCommand) takes
// `COMMAND [DEVICE]`: with a device name (its id=, or the name its log
// lines carry) the command goes to that device and the reply is as above;
// without one, `stats` answers {"devices":[DOCUMENT,...]} and `resize`
// resizes every blk device, answering {"devices":{"NAME":REPLY,...}} (with
// a leading "error" member when one of them failed). With one device the
// name is optional and the replies are the single-device ones.
#ifndef VHOST_USER_CONTROL_COMMANDS_H_
#define VHOST_USER_CONTROL_COMMANDS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "device_control.h"
#include "stats_json.h"

namespace vhost_user {

// Answers `command` for `subject` (see the top of this file).
std::string HandleControlCommand(const StatsSubject& subject,
                                 DeviceControl& control,
                                 absl::string_view command);

// The resize command: resizes, logs the outcome (why: SIGHUP has no other
// reply) and returns the JSON reply. `trigger` names what asked ("the
// control socket", "SIGHUP") for the log line.
std::string ResizeDevice(const StatsSubject& subject, DeviceControl& control,
                         absl::string_view trigger);

// One device of the daemon, as the control socket sees it.
struct ControlTarget {
  StatsSubject subject;
  DeviceControl* control = nullptr;
};

// Answers `COMMAND [DEVICE]` for the daemon's devices (see the top of this
// file).
std::string HandleDaemonCommand(absl::Span<const ControlTarget> targets,
                                absl::string_view line);

// SIGHUP: resizes every blk device (each logs its outcome).
void ResizeEveryBlk(absl::Span<const ControlTarget> targets,
                    absl::string_view trigger);

}  // namespace vhost_user

#endif  // VHOST_USER_CONTROL_COMMANDS_H_
