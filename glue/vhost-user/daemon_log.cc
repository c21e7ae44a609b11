#include "daemon_log.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vhost_user/server.h"
#include "vhost_user/unique_fd.h"

namespace vhost_user {
namespace {

using virtio::LogLevel;

const char* LevelLetter(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}

// The sink's state: written once by InstallDaemonLog() before any line.
struct SinkState {
  DaemonLogOptions options;
  bool journal_stream = false;  // stderr is connected to the journal
  int journal_fd = -1;
  sockaddr_un journal_addr{};
};
SinkState g_state;

// systemd sets JOURNAL_STREAM=DEVICE:INODE for a stderr it connected to
// the journal; stderr may have been redirected since, so compare.
bool StderrIsJournal() {
  const char* stream = getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  const std::string mine =
      absl::StrFormat("%u:%u", static_cast<uint64_t>(st.st_dev),
                      static_cast<uint64_t>(st.st_ino));
  return mine == stream;
}

void StderrSink(LogLevel level, std::string_view message) {
  const std::string line =
      FormatStderrLine(level, message, CurrentConnection(), absl::Now(),
                       g_state.journal_stream, g_state.options.identifier);
  // One write per line: lines from several threads do not interleave.
  std::fprintf(stderr, "%s\n", line.c_str());
}

void SyslogSink(LogLevel level, std::string_view message) {
  const int c = CurrentConnection();
  const std::string prefix = c > 0 ? absl::StrCat("[#", c, "] ") : "";
  syslog(SyslogPriority(level), "%s%.*s", prefix.c_str(),
         static_cast<int>(message.size()), message.data());
}

void JournalSink(LogLevel level, std::string_view message) {
  const std::string datagram = JournalDatagram(
      level, message, CurrentConnection(), g_state.options.identifier);
  if (sendto(g_state.journal_fd, datagram.data(), datagram.size(), MSG_NOSIGNAL,
             reinterpret_cast<const sockaddr*>(&g_state.journal_addr),
             sizeof g_state.journal_addr) < 0) {
    // The journal went away (or the line is too long for a datagram):
    // not lost, stderr is the service's other channel.
    StderrSink(level, message);
  }
}

}  // namespace

int SyslogPriority(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return LOG_DEBUG;
    case LogLevel::kInfo:
      return LOG_INFO;
    case LogLevel::kWarning:
      return LOG_WARNING;
    case LogLevel::kError:
      return LOG_ERR;
  }
  return LOG_INFO;
}

absl::StatusOr<DaemonLogOptions> ParseDaemonLogOptions(
    std::string_view destination, std::string_view level) {
  DaemonLogOptions o;
  if (destination == "stderr" || destination.empty()) {
    o.destination = LogDestination::kStderr;
  } else if (destination == "syslog") {
    o.destination = LogDestination::kSyslog;
  } else if (destination == "journald" || destination == "journal") {
    o.destination = LogDestination::kJournald;
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--log=%s: not stderr, syslog or journald", destination));
  }
  if (level == "error") {
    o.threshold = LogLevel::kError;
  } else if (level == "warning" || level == "warn") {
    o.threshold = LogLevel::kWarning;
  } else if (level == "info" || level.empty()) {
    o.threshold = LogLevel::kInfo;
  } else if (level == "debug") {
    o.threshold = LogLevel::kDebug;
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--log-level=%s: not error, warning, info or debug", level));
  }
  return o;
}

absl::Status InstallDaemonLog(const DaemonLogOptions& options) {
  g_state.options = options;
  g_state.journal_stream = StderrIsJournal();
  virtio::SetLogThreshold(options.threshold);
  switch (options.destination) {
    case LogDestination::kStderr:
      virtio::SetLogSink(&StderrSink);
      break;
    case LogDestination::kSyslog:
      // openlog keeps a pointer to the ident: g_state's string lives on.
      openlog(g_state.options.identifier.c_str(), LOG_PID | LOG_NDELAY,
              LOG_DAEMON);
      virtio::SetLogSink(&SyslogSink);
      break;
    case LogDestination::kJournald: {
      const std::string& path = options.journal_socket;
      if (path.size() >= sizeof g_state.journal_addr.sun_path) {
        return absl::InvalidArgumentError(
            absl::StrCat("--log=journald: socket path too long: ", path));
      }
      UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      if (!fd) {
        return absl::InternalError(
            absl::StrCat("--log=journald: socket: ", std::strerror(errno)));
      }
      g_state.journal_addr.sun_family = AF_UNIX;
      std::memcpy(g_state.journal_addr.sun_path, path.data(), path.size());
      // An empty datagram is ignored by journald: a cheap reachability
      // check.
      if (sendto(fd.get(), "", 0, MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&g_state.journal_addr),
                 sizeof g_state.journal_addr) < 0) {
        return absl::UnavailableError(
            absl::StrCat("--log=journald: cannot reach the journal at ", path,
                         ": ", std::strerror(errno),
                         " (is systemd-journald running? --log=stderr or "
                         "--log=syslog otherwise)"));
      }
      g_state.journal_fd = fd.release();  // for the process's lifetime
      virtio::SetLogSink(&JournalSink);
      break;
    }
  }
  return absl::OkStatus();
}

std::string FormatStderrLine(LogLevel level, std::string_view message,
                             int connection, absl::Time now,
                             bool journal_stream, std::string_view identifier) {
  const std::string where =
      connection > 0 ? absl::StrFormat("[#%d] ", connection) : "";
  if (journal_stream) {
    return absl::StrFormat("<%d>%s%s", SyslogPriority(level), where, message);
  }
  return absl::StrFormat(
      "%s %s %s: %s%s",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone()),
      identifier, LevelLetter(level), where, message);
}

std::string JournalDatagram(LogLevel level, std::string_view message,
                            int connection, std::string_view identifier) {
  std::string d = absl::StrFormat("PRIORITY=%d\nSYSLOG_IDENTIFIER=%s\n",
                                  SyslogPriority(level), identifier);
  if (connection > 0) {
    absl::StrAppend(&d, "VHOST_USER_CONNECTION=", connection, "\n");
  }
  const std::string text =
      connection > 0 ? absl::StrFormat("[#%d] %s", connection, message)
                     : std::string(message);
  if (text.find('\n') == std::string::npos) {
    absl::StrAppend(&d, "MESSAGE=", text, "\n");
  } else {
    // Binary form: the name, a newline, the length as 64-bit little
    // endian, the value, a newline.
    d += "MESSAGE\n";
    uint64_t len = text.size();
    for (int i = 0; i < 8; ++i) {
      d += static_cast<char>(len & 0xff);
      len >>= 8;
    }
    absl::StrAppend(&d, text, "\n");
  }
  return d;
}

}  // namespace vhost_user
