// vhost-user/daemon_log.h — where vhost-user-device's log lines go: the
// library's log sink (virtio/log.h) installed with a level threshold, and
// written to stderr (with timestamps), syslog(3) or the systemd journal
// (its native datagram protocol; no libsystemd). Every line names the
// vhost-user connection it belongs to ([#N]) when there is one.
//
// Example:
//   auto o = ParseDaemonLogOptions("journald", "debug");
//   if (o.ok()) InstallDaemonLog(*o);
#ifndef VHOST_USER_DAEMON_LOG_H_
#define VHOST_USER_DAEMON_LOG_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "virtio/log.h"

namespace vhost_user {

enum class LogDestination { kStderr, kSyslog, kJournald };

struct DaemonLogOptions {
  LogDestination destination = LogDestination::kStderr;
  virtio::LogLevel threshold = virtio::LogLevel::kInfo;
  // The journal's native socket (tests point it elsewhere).
  std::string journal_socket = "/run/systemd/journal/socket";
  // SYSLOG_IDENTIFIER / the syslog ident / the stderr line's program.
  std::string identifier = "vhost-user-device";
};

// --log=stderr|syslog|journald and --log-level=error|warning|info|debug.
absl::StatusOr<DaemonLogOptions> ParseDaemonLogOptions(
    std::string_view destination, std::string_view level);

// Installs the sink and threshold. journald: an error when the journal's
// socket cannot be reached (the operator asked for it; better to say so at
// startup than to log into the void).
absl::Status InstallDaemonLog(const DaemonLogOptions& options);

// One stderr line (without the newline): "2026-12-06T20:41:02.123Z
// vhost-user-device W: [#2] message". When stderr is the journal's stream
// (systemd's JOURNAL_STREAM), the journal adds its own timestamp and
// reads the priority from a "<4>" prefix instead: then `journal_stream`.
std::string FormatStderrLine(virtio::LogLevel level, std::string_view message,
                             int connection, absl::Time now,
                             bool journal_stream, std::string_view identifier);

// One journal datagram (the native protocol: FIELD=value lines, and the
// binary form for a MESSAGE holding a newline): MESSAGE, PRIORITY,
// SYSLOG_IDENTIFIER and, within a connection, VHOST_USER_CONNECTION.
std::string JournalDatagram(virtio::LogLevel level, std::string_view message,
                            int connection, std::string_view identifier);

// syslog(3) / journal priority of `level`.
int SyslogPriority(virtio::LogLevel level);

}  // namespace vhost_user

#endif  // VHOST_USER_DAEMON_LOG_H_
