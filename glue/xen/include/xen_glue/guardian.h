// xen_glue/guardian.h — a child process that cleans up after a crashed backend.
//
// The backend forks its guardian at startup, while it is still one thread
// and holds no Xen handle, and keeps the write end of a pipe to it. It
// tells the guardian which ioreq servers it created (Protect) and, on an
// orderly exit, that it tore them down (Release, also done by the
// destructor). If the pipe closes without a Release, the backend died
// without running its teardown (SIGKILL, the OOM killer, a crash): the
// guardian then calls its reap function for every protected server
// (reaper.h: answer what is pending, destroy) and exits.
//
// The pipe is the only signal needed: the kernel closes it whatever way
// the backend ends. The guardian ignores SIGINT, SIGTERM and SIGHUP so that
// a terminal's Ctrl-C or a service manager signalling the whole group does
// not kill it before the backend has finished its own teardown. It holds no
// file the backend opens later (no disk, TAP or Xen handle) and is named
// "xvb-guardian" in ps.
#ifndef XEN_GLUE_GUARDIAN_H_
#define XEN_GLUE_GUARDIAN_H_

#include <sys/types.h>

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "xen_glue/abi.h"

namespace virtio::xg {

class Guardian {
 public:
  // Runs in the guardian after the backend (pid `backend`) died; returns
  // when the server has been dealt with.
  using ReapFn = std::function<void(DomId domid, IoServId id, pid_t backend)>;

  // Forks the guardian. Call while the process has a single thread.
  static absl::StatusOr<Guardian> Start(const ReapFn& reap);

  Guardian() = default;
  Guardian(Guardian&& other) noexcept;
  Guardian& operator=(Guardian&& other) noexcept;
  Guardian(const Guardian&) = delete;
  Guardian& operator=(const Guardian&) = delete;
  ~Guardian();  // Release()

  // The guardian now answers for this server if we die.
  absl::Status Protect(DomId domid, IoServId id);
  // Orderly exit: our servers are gone; the guardian exits without reaping.
  void Release();

  bool active() const { return fd_ >= 0; }
  pid_t pid() const { return pid_; }

 private:
  Guardian(int fd, pid_t pid) : fd_(fd), pid_(pid) {}

  int fd_ = -1;
  pid_t pid_ = -1;
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_GUARDIAN_H_
