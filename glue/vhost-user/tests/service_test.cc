// vhost-user-device as a service: QEMU's backend program conventions
// (--print-capabilities, --fd, the program name choosing the type) and
// systemd's protocols (socket activation, readiness notification), plus
// the socket permissions (--socket-mode, --socket-group). Each case runs
// the daemon binary the way a service manager or libvirt would and talks
// to it with the front-end library (BlkClient).
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backend_conventions.h"
#include "daemon_process.h"
#include "gtest/gtest.h"
#include "vhost_user/connection.h"
#include "vhost_user/frontend/blk_client.h"

namespace vhost_user {
namespace {

using daemon_test::BindNotifySocket;
using daemon_test::ConnectBlk;
using daemon_test::Daemon;
using daemon_test::kDiskBytes;
using daemon_test::kSectorBytes;
using daemon_test::ListenAt;
using daemon_test::Listing;
using daemon_test::MakeImage;
using daemon_test::ReadFile;
using daemon_test::Receive;
using daemon_test::RunProgram;
using daemon_test::TempDir;

TEST(ServiceTest, PrintCapabilitiesFollowsTheSchemaForEachType) {
  const std::pair<const char*, const char*> cases[] = {
      {"blk", R"({"type": "block", "features": ["read-only", "blk-file"]})"},
      {"net", R"({"type": "net", "features": []})"},
      {"console", R"({"type": "console", "features": []})"},
      {"rng", R"({"type": "rng", "features": []})"},
  };
  for (const auto& [type, json] : cases) {
    int status = -1;
    // Everything else on the command line is ignored, even nonsense.
    const std::string out =
        RunProgram(VHOST_USER_DEVICE_PATH,
                   {"--print-capabilities", "--device",
                    std::string(type) + ",bogus=1", "--fd=12345"},
                   &status);
    EXPECT_EQ(status, 0) << type << ": " << out;
    EXPECT_EQ(out, std::string(json) + "\n") << type;
  }
  int status = -1;
  EXPECT_EQ(
      RunProgram(VHOST_USER_DEVICE_PATH,
                 {"--print-capabilities", "--blk-file=/nonexistent"}, &status),
      std::string(cases[0].second) + "\n");
  EXPECT_EQ(status, 0);
  // vhost-user-device itself stands for no type.
  const std::string out =
      RunProgram(VHOST_USER_DEVICE_PATH, {"--print-capabilities"}, &status);
  EXPECT_EQ(status, 2);
  EXPECT_TRUE(absl::StrContains(out, "needs a device type")) << out;
}

// The installed links (vhost-user-blk, ...) are the daemon under the
// conventions' names: the name gives the type, as the discovery files
// expect from `binary --print-capabilities`.
TEST(ServiceTest, ProgramNameGivesTheType) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  for (const char* name : {"vhost-user-blk", "vhost-user-rng"}) {
    const std::string link = dir / name;
    ASSERT_EQ(symlink(VHOST_USER_DEVICE_PATH, link.c_str()), 0);
    int status = -1;
    const std::string out = RunProgram(link, {"--print-capabilities"}, &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_TRUE(absl::StrContains(
        out, std::string(name) == std::string("vhost-user-blk")
                 ? R"("type": "block")"
                 : R"("type": "rng")"))
        << out;
  }
  EXPECT_EQ(DeviceTypeOfProgram("/usr/libexec/vhost-user-block"),
            virtio::catalog::DeviceType::kBlk);
  EXPECT_EQ(DeviceTypeOfProgram("vhost-user-device"), std::nullopt);
  EXPECT_EQ(DeviceTypeOfProgram("vhost-user-blk,path=x"), std::nullopt);
}

// --fd: the inherited listening socket is served; the daemon creates no
// file and removes none (the socket belongs to whoever passed it).
TEST(ServiceTest, ServesAnInheritedSocketAndLeavesItsFileAlone) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string image = dir / "disk.img";
  ASSERT_TRUE(MakeImage(image));
  const std::string socket = dir / "inherited.sock";
  const int listener = ListenAt(socket);
  ASSERT_GE(listener, 0);
  const std::set<std::string> before = Listing(dir.path());
  {
    Daemon d({.args = {"--fd=5", "--blk-file", image, "--read-only"},
              .fd = listener,
              .target_fd = 5,
              .stderr_path = "/dev/null"});
    auto client = ConnectBlk(socket);
    ASSERT_TRUE(client.ok()) << client.status();
    EXPECT_EQ((*client)->capacity_sectors(), kDiskBytes / kSectorBytes);
    EXPECT_TRUE((*client)->read_only());
    client->reset();
    EXPECT_EQ(d.Stop(), 0);
  }
  close(listener);
  EXPECT_EQ(Listing(dir.path()), before);
}

// systemd's way: the socket as fd 3 with LISTEN_FDS / LISTEN_PID, and
// READY=1 on NOTIFY_SOCKET once it serves, STOPPING=1 on SIGTERM.
TEST(ServiceTest, SocketActivationAndReadiness) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string socket_path = dir / "activated.sock";
  const int listener = ListenAt(socket_path);
  ASSERT_GE(listener, 0);
  const std::string notify_path = dir / "notify";
  const int notify = BindNotifySocket(notify_path);
  ASSERT_GE(notify, 0);
  const std::string log = dir / "stderr";
  const std::set<std::string> before = Listing(dir.path());
  Daemon d({.args = {"--device", "blk,backend=ram,size=4M"},
            .fd = listener,
            .target_fd = 3,
            .env = {{"LISTEN_FDS", "1"},
                    {"LISTEN_FDNAMES", "vhost-user"},
                    {"NOTIFY_SOCKET", notify_path}},
            .listen_pid_self = true,
            .stderr_path = log});
  const std::vector<std::string> ready = Receive(notify, 10000);
  ASSERT_EQ(ready.size(), 1u) << ReadFile(log);
  EXPECT_TRUE(absl::StartsWith(ready[0], "READY=1\n")) << ready[0];
  EXPECT_TRUE(absl::StrContains(ready[0], "STATUS=serving blk")) << ready[0];
  auto client = ConnectBlk(socket_path);
  ASSERT_TRUE(client.ok()) << client.status() << "\n" << ReadFile(log);
  EXPECT_EQ((*client)->capacity_sectors(), kDiskBytes / kSectorBytes);
  client->reset();
  EXPECT_EQ(d.Stop(), 0) << ReadFile(log);
  const std::vector<std::string> stopping = Receive(notify, 5000);
  ASSERT_EQ(stopping.size(), 1u);
  EXPECT_EQ(stopping[0], "STOPPING=1");
  EXPECT_TRUE(absl::StrContains(ReadFile(log), "socket-activated fd 3"))
      << ReadFile(log);
  close(notify);
  close(listener);
  // Nothing created or removed but its log (the socket is systemd's).
  std::set<std::string> expected = before;
  expected.insert("stderr");
  EXPECT_EQ(Listing(dir.path()), expected);
}

// A group other than the daemon's primary one, if it belongs to any (to
// see chown really happen); else its primary group.
gid_t SomeGroupOfOurs() {
  std::vector<gid_t> groups(256);
  const int n = getgroups(static_cast<int>(groups.size()), groups.data());
  for (int i = 0; i < n; ++i) {
    if (groups[i] != getegid()) return groups[i];
  }
  return getegid();
}

TEST(ServiceTest, SocketModeAndGroupLetAnotherUserIn) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string socket = dir / "shared.sock";
  const gid_t group = SomeGroupOfOurs();
  Daemon d(
      {.args = {"--socket-path", socket, "--socket-group",
                std::to_string(group), "--device", "blk,backend=ram,size=4M"},
       .stderr_path = "/dev/null"});
  auto client = ConnectBlk(socket);
  ASSERT_TRUE(client.ok()) << client.status();
  struct stat st {};
  ASSERT_EQ(stat(socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  // --socket-group without --socket-mode: owner and group read/write.
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, group);
  client->reset();
  EXPECT_EQ(d.Stop(), 0);
  EXPECT_NE(access(socket.c_str(), F_OK), 0) << "created, so removed on exit";
}

TEST(ServiceTest, SocketModeAlone) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string socket = dir / "mode.sock";
  Daemon d({.args = {"--socket", socket, "--socket-mode", "0666", "--device",
                     "blk,backend=ram,size=4M"},
            .stderr_path = "/dev/null"});
  auto client = ConnectBlk(socket);
  ASSERT_TRUE(client.ok()) << client.status();
  struct stat st {};
  ASSERT_EQ(stat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u);
}

// Only root may give a file to a group it is not in: the message says why.
TEST(ServiceTest, ForeignGroupIsRefusedWithTheReason) {
  if (geteuid() == 0) {
    GTEST_SKIP() << "running as root, which may use any group";
  }
  gid_t foreign = 0;  // root's group, unless we are in it
  std::vector<gid_t> groups(256);
  const int n = getgroups(static_cast<int>(groups.size()), groups.data());
  for (int i = 0; i < n; ++i) {
    if (groups[i] == foreign) GTEST_SKIP() << "the test user is in group 0";
  }
  TempDir dir;
  const std::string socket = dir / "foreign.sock";
  int status = -1;
  const std::string out = RunProgram(
      VHOST_USER_DEVICE_PATH,
      {"--socket-path", socket, "--socket-group", "0", "--device", "rng"},
      &status);
  EXPECT_EQ(status, 2) << out;
  EXPECT_TRUE(absl::StrContains(out, "--socket-group=0: cannot give")) << out;
  EXPECT_TRUE(absl::StrContains(out, "may only use a group")) << out;
  EXPECT_NE(access(socket.c_str(), F_OK), 0) << "left behind after the error";
}

// The operator's view: a startup summary per device, a line per
// connection with the negotiated features, timestamps and levels; and
// --log-level dropping what is below it.
TEST(ServiceTest, LogsSummaryAndNegotiatedFeatures) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string socket = dir / "log.sock";
  const std::string log = dir / "stderr";
  {
    Daemon d(
        {.args = {"--socket-path", socket, "--device",
                  "blk,backend=ram,size=4M,readonly=on", "--log-level=debug"},
         .stderr_path = log});
    auto client = ConnectBlk(socket);
    ASSERT_TRUE(client.ok()) << client.status();
    client->reset();
    EXPECT_EQ(d.Stop(), 0);
  }
  const std::string text = ReadFile(log);
  EXPECT_TRUE(absl::StrContains(
      text,
      " vhost-user-device I: vhost-user-device[blk]: serving "
      "blk,backend=ram,size=4M,readonly=on: 8192 sectors of 512 bytes (4 "
      "MiB), read-only, 1 queue of up to 32768 entries, rings offered: "
      "split packed, features offered 0x"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "I: [#1] vhost-user-device[blk]: features negotiated: 0x"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "VERSION_1")) << text;
  // Every line starts with a UTC timestamp.
  std::istringstream lines(text);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    ++count;
    EXPECT_TRUE(line.size() > 24 && line[4] == '-' && line[10] == 'T' &&
                line[23] == 'Z')
        << line;
  }
  EXPECT_GE(count, 4);

  const std::string quiet_log = dir / "quiet";
  {
    Daemon d({.args = {"--socket-path", socket, "--device",
                       "blk,backend=ram,size=4M", "--log-level", "warning"},
              .stderr_path = quiet_log});
    auto client = ConnectBlk(socket);
    ASSERT_TRUE(client.ok()) << client.status();
    client->reset();
    EXPECT_EQ(d.Stop(), 0);
  }
  EXPECT_EQ(ReadFile(quiet_log), "");
}

TEST(ServiceTest, ParseSocketAccess) {
  auto a = ParseSocketAccess("", "");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mode, 0600u);
  EXPECT_FALSE(a->group);
  a = ParseSocketAccess("", "0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mode, 0660u);
  EXPECT_EQ(a->group, gid_t{0});
  a = ParseSocketAccess("0770", "0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mode, 0770u);
  EXPECT_FALSE(ParseSocketAccess("0640", "0").ok());  // group can't write
  EXPECT_FALSE(ParseSocketAccess("0060", "").ok());   // owner can't
  EXPECT_FALSE(ParseSocketAccess("0888", "").ok());
  EXPECT_FALSE(ParseSocketAccess("10666", "").ok());
  EXPECT_FALSE(ParseSocketAccess("rw", "").ok());
  EXPECT_FALSE(ParseSocketAccess("", "no-such-group-here").ok());
}

}  // namespace
}  // namespace vhost_user
