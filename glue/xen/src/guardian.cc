// src/guardian.cc — see xen_glue/guardian.h.
#include "xen_glue/guardian.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "virtio/log.h"

namespace virtio::xg {

namespace {

// One pipe message; 8 bytes, so every write is atomic (< PIPE_BUF).
struct Record {
  char kind;  // 'P' protect, 'R' release
  uint8_t pad;
  uint16_t id;
  uint32_t domid;
};
static_assert(sizeof(Record) == 8);

// The guardian's whole life; never returns.
[[noreturn]] void GuardianMain(int fd, pid_t backend,
                               const Guardian::ReapFn& reap) {
  // Ignored before they are unblocked (see Start()).
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) signal(sig, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  prctl(PR_SET_NAME, "xvb-guardian", 0, 0, 0);
  std::vector<Record> protected_servers;
  Record r{};
  size_t have = 0;
  for (;;) {
    const ssize_t n =
        read(fd, reinterpret_cast<char*>(&r) + have, sizeof r - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the backend is gone (or the pipe broke: same thing)
    have += static_cast<size_t>(n);
    if (have < sizeof r) continue;
    have = 0;
    if (r.kind == 'R') _exit(0);
    if (r.kind == 'P') protected_servers.push_back(r);
  }
  close(fd);
  for (const Record& s : protected_servers) {
    Logf(
        LogLevel::kWarning,
        "guardian: the backend (pid %d) ended without stopping ioreq server %u "
        "of domain %u; answering its pending requests and destroying it",
        backend, s.id, s.domid);
    reap(s.domid, s.id, backend);
  }
  _exit(0);
}

}  // namespace

absl::StatusOr<Guardian> Guardian::Start(const ReapFn& reap) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::UnavailableError(
        absl::StrFormat("guardian: pipe: %s", std::strerror(errno)));
  }
  const pid_t backend = getpid();
  // The stop signals stay blocked across fork() until the guardian ignores
  // them: one sent to the group right after Start() must not kill it.
  sigset_t stop, old;
  sigemptyset(&stop);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, sig);
  sigprocmask(SIG_BLOCK, &stop, &old);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[1]);
    GuardianMain(fds[0], backend, reap);
  }
  const int fork_errno = errno;
  sigprocmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::UnavailableError(
        absl::StrFormat("guardian: fork: %s", std::strerror(fork_errno)));
  }
  close(fds[0]);
  return Guardian(fds[1], pid);
}

Guardian::Guardian(Guardian&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), pid_(std::exchange(other.pid_, -1)) {}

Guardian& Guardian::operator=(Guardian&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
    pid_ = std::exchange(other.pid_, -1);
  }
  return *this;
}

Guardian::~Guardian() { Release(); }

absl::Status Guardian::Protect(DomId domid, IoServId id) {
  if (fd_ < 0) return absl::FailedPreconditionError("guardian: not running");
  const Record r{'P', 0, id, domid};
  ssize_t n;
  do {
    n = write(fd_, &r, sizeof r);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof r)) {
    return absl::UnavailableError(
        absl::StrFormat("guardian (pid %d) is gone: %s", pid_,
                        n < 0 ? std::strerror(errno) : "short write"));
  }
  return absl::OkStatus();
}

void Guardian::Release() {
  if (fd_ < 0) return;
  const Record r{'R', 0, 0, 0};
  ssize_t n;
  do {
    n = write(fd_, &r, sizeof r);
  } while (n < 0 && errno == EINTR);
  close(fd_);
  fd_ = -1;
  // It exits as soon as it reads the record (or the EOF); collect it so
  // that no zombie is left behind.
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

}  // namespace virtio::xg
