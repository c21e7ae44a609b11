// sim/sim_errors.h — how the simulated Xen libraries fail, and how the
// simulation stops on its own errors.
//
// The real libraries (libxendevicemodel, libxenforeignmemory, libxengnttab,
// libxenevtchn) report failure as -1 or nullptr with errno set; the
// simulation answers the glue the same way, so the glue's error paths run
// as they would on Xen. A failure of the simulation itself (no memfd, no
// eventfd) is not the glue's to handle: it aborts the test.
#ifndef VIRTIO_XG_SIM_SIM_ERRORS_H_
#define VIRTIO_XG_SIM_SIM_ERRORS_H_

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace virtio::xg::sim {

// errno = err; -1 / nullptr, as the libraries return.
inline int Fail(int err) {
  errno = err;
  return -1;
}
inline void* FailPtr(int err) {
  errno = err;
  return nullptr;
}
[[noreturn]] inline void Die(const char* what) {
  std::perror(what);
  std::abort();
}

}  // namespace virtio::xg::sim

#endif  // VIRTIO_XG_SIM_SIM_ERRORS_H_
