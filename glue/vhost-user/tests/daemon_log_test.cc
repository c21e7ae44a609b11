// vhost-user-device's log destinations (daemon_log.h): the stderr line
// format, the journal's native datagrams (sent to a socket standing in for
// journald), and the --log / --log-level parsing.
#include "daemon_log.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "virtio/log.h"

namespace vhost_user {
namespace {

using virtio::LogLevel;

const absl::Time kNoon = absl::FromUnixSeconds(1765022400) +  // 2025-12-06
                         absl::Milliseconds(42);

TEST(DaemonLogTest, StderrLineHasTimestampLevelAndConnection) {
  EXPECT_EQ(FormatStderrLine(LogLevel::kWarning, "blk: slow", 3, kNoon,
                             /*journal_stream=*/false, "vhost-user-device"),
            "2025-12-06T12:00:00.042Z vhost-user-device W: [#3] blk: slow");
  EXPECT_EQ(FormatStderrLine(LogLevel::kDebug, "x", 0, kNoon, false, "d"),
            "2025-12-06T12:00:00.042Z d D: x");
}

// Under systemd the journal timestamps the line and takes its priority
// from the <N> prefix.
TEST(DaemonLogTest, JournalStreamLineCarriesThePriority) {
  EXPECT_EQ(FormatStderrLine(LogLevel::kError, "disk error", 1, kNoon,
                             /*journal_stream=*/true, "vhost-user-device"),
            "<3>[#1] disk error");
  EXPECT_EQ(FormatStderrLine(LogLevel::kInfo, "up", 0, kNoon, true, "x"),
            "<6>up");
}

TEST(DaemonLogTest, JournalDatagramFields) {
  EXPECT_EQ(JournalDatagram(LogLevel::kWarning, "hello", 2, "vud"),
            "PRIORITY=4\nSYSLOG_IDENTIFIER=vud\nVHOST_USER_CONNECTION=2\n"
            "MESSAGE=[#2] hello\n");
  // A newline in the message: the binary form (name, newline, 64-bit LE
  // length, value, newline).
  const std::string d = JournalDatagram(LogLevel::kInfo, "a\nb", 0, "vud");
  const std::string want = std::string("PRIORITY=6\nSYSLOG_IDENTIFIER=vud\n") +
                           "MESSAGE\n" + std::string("\x03\0\0\0\0\0\0\0", 8) +
                           "a\nb\n";
  EXPECT_EQ(d, want);
}

TEST(DaemonLogTest, ParseOptions) {
  auto o = ParseDaemonLogOptions("journald", "debug");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->destination, LogDestination::kJournald);
  EXPECT_EQ(o->threshold, LogLevel::kDebug);
  o = ParseDaemonLogOptions("syslog", "error");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->destination, LogDestination::kSyslog);
  EXPECT_EQ(o->threshold, LogLevel::kError);
  o = ParseDaemonLogOptions("stderr", "warning");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->threshold, LogLevel::kWarning);
  EXPECT_FALSE(ParseDaemonLogOptions("file", "info").ok());
  EXPECT_FALSE(ParseDaemonLogOptions("stderr", "verbose").ok());
}

// The journald sink against a datagram socket in journald's place, with
// the threshold applied before anything is sent.
TEST(DaemonLogTest, JournaldSinkSendsNativeDatagrams) {
  char dir_template[] = "/tmp/vu-journal-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string path = std::string(dir_template) + "/socket";
  const int journal = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(journal, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(bind(journal, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);

  DaemonLogOptions o;
  o.destination = LogDestination::kJournald;
  o.threshold = LogLevel::kWarning;
  o.journal_socket = path;
  o.identifier = "vhost-user-device";
  ASSERT_TRUE(InstallDaemonLog(o).ok());
  virtio::Log(LogLevel::kInfo, "below the threshold");
  virtio::Log(LogLevel::kError, "disk0: queue 0: disk error");
  virtio::SetLogSink(nullptr);
  virtio::SetLogThreshold(LogLevel::kInfo);

  char buf[4096];
  std::string got;
  // The reachability probe (empty), then only the error.
  for (int i = 0; i < 3; ++i) {
    const ssize_t n = recv(journal, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) break;
    if (n > 0) got.append(buf, static_cast<size_t>(n)).append("|");
  }
  EXPECT_EQ(got,
            "PRIORITY=3\nSYSLOG_IDENTIFIER=vhost-user-device\n"
            "MESSAGE=disk0: queue 0: disk error\n|");
  close(journal);
  unlink(path.c_str());
  rmdir(dir_template);

  o.journal_socket = path;  // gone now
  const absl::Status missing = InstallDaemonLog(o);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.message()).find("cannot reach the journal"),
            std::string::npos)
      << missing;
  virtio::SetLogSink(nullptr);
  virtio::SetLogThreshold(LogLevel::kInfo);
}

}  // namespace
}  // namespace vhost_user
