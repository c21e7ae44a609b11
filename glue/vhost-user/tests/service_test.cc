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
#include "gtest/gtest.h"
#include "vhost_user/connection.h"
#include "vhost_user/frontend/blk_client.h"

namespace vhost_user {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kDiskBytes = 4ull << 20;
constexpr uint64_t kSectorBytes = 512;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vu-service-XXXXXX";
    const char* d = mkdtemp(tmpl);
    path_ = d != nullptr ? d : "";
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const {
    return path_ + "/" + name;
  }

 private:
  std::string path_;
};

// Every name in `dir`, to see what the daemon created or removed.
std::set<std::string> Listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

bool MakeImage(const std::string& path) {
  std::ofstream f(path, std::ios::binary);
  f.close();
  return truncate(path.c_str(), kDiskBytes) == 0;
}

// A listening Unix socket at `path`, as a service manager creates one.
int ListenAt(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (fd < 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(fd, 4) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// The daemon binary run with `args`, inheriting `fd` as `target_fd`
// (-1: none) and `env` on top of the test's environment; stderr goes to a
// file. With `listen_pid_self`, LISTEN_PID is set to the child's own pid,
// as systemd does. Killed (SIGTERM, then SIGKILL) when destroyed.
class Daemon {
 public:
  struct Options {
    std::string program = VHOST_USER_DEVICE_PATH;
    std::vector<std::string> args = {};
    int fd = -1;
    int target_fd = -1;
    std::map<std::string, std::string> env = {};
    bool listen_pid_self = false;
    std::string stderr_path = {};
  };

  explicit Daemon(Options o) : o_(std::move(o)) {
    std::vector<std::string> argv = {o_.program};
    argv.insert(argv.end(), o_.args.begin(), o_.args.end());
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ != 0) return;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (!o_.stderr_path.empty()) {
      const int err = open(o_.stderr_path.c_str(),
                           O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (err >= 0) dup2(err, 2);
    }
    if (o_.fd >= 0) {
      // dup2 clears close-on-exec on the target; same fd: clear it here.
      if (o_.fd == o_.target_fd) {
        fcntl(o_.fd, F_SETFD, 0);
      } else {
        dup2(o_.fd, o_.target_fd);
      }
    }
    for (const auto& [k, v] : o_.env) setenv(k.c_str(), v.c_str(), 1);
    if (o_.listen_pid_self) {
      setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    }
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  ~Daemon() { Stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  bool Alive() {
    int status;
    return pid_ > 0 && waitpid(pid_, &status, WNOHANG) == 0;
  }
  // SIGTERM; the exit status (-1: had to be killed).
  int Stop() {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 500; ++i) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return exit_status_;
      }
      usleep(10000);
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return -1;
  }

 private:
  Options o_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Connects a blk front-end, retrying while the daemon starts.
absl::StatusOr<std::unique_ptr<BlkClient>> ConnectBlk(
    const std::string& socket) {
  BlkClientOptions o;
  o.socket_path = socket;
  o.queue_size = 64;
  o.buffer_memory = 1 << 20;
  absl::StatusOr<std::unique_ptr<BlkClient>> c;
  for (int i = 0; i < 300; ++i) {
    c = BlkClient::Connect(o);
    if (c.ok()) return c;
    usleep(10000);
  }
  return c;
}

// Runs `program args...` and returns its stdout; `status` gets the exit
// status.
std::string RunProgram(const std::string& program,
                       const std::vector<std::string>& args, int* status) {
  std::string cmd = "'" + program + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

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

// What NOTIFY_SOCKET received: each datagram, waiting up to `timeout_ms`
// for the first.
std::vector<std::string> Receive(int fd, int timeout_ms) {
  std::vector<std::string> got;
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    char buf[4096];
    const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got.emplace_back(buf, static_cast<size_t>(n));
      continue;
    }
    if (!got.empty()) break;
    usleep(10000);
  }
  return got;
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
  const int notify = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(notify, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", notify_path.c_str());
  ASSERT_EQ(bind(notify, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
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
