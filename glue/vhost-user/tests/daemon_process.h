// daemon_process.h — the vhost-user-device binary run as a service
// manager would run it, for the tests that drive it from outside
// (service_test.cc, multi_device_test.cc): a scratch directory, listening
// sockets to hand over, the daemon as a child process, and a blk front-end
// connected to it.
#ifndef VHOST_USER_TESTS_DAEMON_PROCESS_H_
#define VHOST_USER_TESTS_DAEMON_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "vhost_user/frontend/blk_client.h"

namespace vhost_user::daemon_test {

inline constexpr uint64_t kDiskBytes = 4ull << 20;
inline constexpr uint64_t kSectorBytes = 512;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vu-service-XXXXXX";
    const char* d = mkdtemp(tmpl);
    path_ = d != nullptr ? d : "";
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const {
    return path_ + "/" + name;
  }

 private:
  std::string path_;
};

// Every name in `dir`, to see what the daemon created or removed.
inline std::set<std::string> Listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

inline bool MakeImage(const std::string& path) {
  std::ofstream f(path, std::ios::binary);
  f.close();
  return truncate(path.c_str(), kDiskBytes) == 0;
}

// A listening Unix socket at `path`, as a service manager creates one.
inline int ListenAt(const std::string& path) {
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
    // More inherited fds: {fd, target_fd} each (socket activation with
    // several sockets).
    std::vector<std::pair<int, int>> more_fds = {};
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
    for (const auto& [fd, target] : o_.more_fds) {
      if (fd == target) {
        fcntl(fd, F_SETFD, 0);
      } else {
        dup2(fd, target);
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

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Connects a blk front-end, retrying while the daemon starts.
inline absl::StatusOr<std::unique_ptr<BlkClient>> ConnectBlk(
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
inline std::string RunProgram(const std::string& program,
                              const std::vector<std::string>& args,
                              int* status) {
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

// A datagram socket bound at `path`, as a service manager's NOTIFY_SOCKET
// (-1 on failure).
inline int BindNotifySocket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (fd < 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// What NOTIFY_SOCKET received: each datagram, waiting up to `timeout_ms`
// for the first.
inline std::vector<std::string> Receive(int fd, int timeout_ms) {
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

}  // namespace vhost_user::daemon_test

#endif  // VHOST_USER_TESTS_DAEMON_PROCESS_H_
