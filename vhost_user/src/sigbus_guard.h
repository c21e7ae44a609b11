// vhost_user/src/sigbus_guard.h — surviving a front-end that shrinks the
// shared memory it gave us. Private to libvirtio::vhost_user (not
// installed): the library registers its own mappings.
//
// Guest memory (SET_MEM_TABLE / ADD_MEM_REG), the dirty log (SET_LOG_BASE)
// and the inflight region (SET_INFLIGHT_FD) are files the front-end keeps
// open: it can ftruncate one after we mapped it (checking the size with
// fstat at mapping time does not help), and the next access to a page past
// the new end raises SIGBUS, which kills the process: every later
// front-end would lose its device along with the guilty one.
//
// Every such mapping is registered here. A SIGBUS inside a registered
// mapping replaces the whole mapping, in place, with private anonymous
// zero pages (mmap MAP_FIXED; the address range stays valid) and returns:
// the faulting access is retried and succeeds, and from then on the
// device reads zeroes and writes into memory nobody sees, which it copes
// with as with any hostile guest memory. The mapping's notify fd (an
// eventfd of the connection) is bumped so that the connection's control
// thread closes it with a log line (TakeFaults); the daemon then serves
// the next front-end. Nothing happens on the data path: no check per
// access, no setjmp per request.
//
// A SIGBUS anywhere else is not ours: it goes to the handler installed
// before (or kills the process, as before).
//
// Registration and unregistration happen on the control thread while no
// worker runs (the server parks workers around every control message), so
// the handler never replaces a range that is being unmapped.
#ifndef VHOST_USER_SIGBUS_GUARD_H_
#define VHOST_USER_SIGBUS_GUARD_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vhost_user {

// What faulted, for the log line.
struct SharedMemoryFault {
  const char* what;  // the `what` given at registration
  uintptr_t base;    // the mapping
  size_t length;
  uintptr_t address;  // the access that faulted
};

class SigbusGuard {
 public:
  // Up to this many mappings at once (memory regions of every connection,
  // their dirty logs and inflight regions).
  static constexpr size_t kMaxMappings = 1024;

  // Registers the mapping [base, base + length); `notify_fd` (an eventfd)
  // is written when it faults; `what` is a static string naming it.
  // Installs the SIGBUS handler on first use. False if the table is full
  // (then a shrinking front-end still kills the process).
  static bool Register(void* base, size_t length, int notify_fd,
                       const char* what);
  // Forgets the mapping at `base` (before munmap). No-op if unknown.
  static void Unregister(void* base);
  // The faults of mappings registered with `notify_fd` since the last call.
  static std::vector<SharedMemoryFault> TakeFaults(int notify_fd);
};

}  // namespace vhost_user

#endif  // VHOST_USER_SIGBUS_GUARD_H_
