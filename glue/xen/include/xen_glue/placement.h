// xen_glue/placement.h — who serves what, across backend processes.
//
// Xen lets several ioreq servers claim overlapping ranges (the newest
// wins), so disaggregated backends must coordinate themselves. Each
// backend records its claims (MMIO ranges, PCI functions, IRQ lines) in
// <dir>/dom<N>.claims under an flock()ed <dir>/dom<N>.lock; a claim that
// overlaps a live process's claim is refused with a message naming that
// process and device. Claims of dead processes (kill(pid, 0) == ESRCH) are
// dropped, so a crashed backend can be restarted on the same placement.
#ifndef XEN_GLUE_PLACEMENT_H_
#define XEN_GLUE_PLACEMENT_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "xen_glue/abi.h"
#include "xen_glue/device_spec.h"

namespace virtio::xg {

struct Claim {
  enum Kind { kMmio, kPci, kIrq } kind = kMmio;
  uint64_t start = 0;
  uint64_t end = 0;  // inclusive
  std::string name;
  pid_t pid = 0;
  std::string owner;  // "pid:nonce", distinguishes backends within a test
};

std::vector<Claim> ClaimsFor(GuestArch arch, const std::vector<DeviceSpec>& devices);

class ClaimRegistry {
 public:
  ClaimRegistry(std::string dir, DomId domid);
  ~ClaimRegistry();  // releases our claims
  ClaimRegistry(const ClaimRegistry&) = delete;
  ClaimRegistry& operator=(const ClaimRegistry&) = delete;

  // All or nothing.
  absl::Status Acquire(const std::vector<Claim>& claims);
  void Release();
  // Current live claims (for tests and --print-placement).
  std::vector<Claim> List();
  const std::string& owner() const { return owner_; }

 private:
  std::string dir_;
  DomId domid_;
  std::string owner_;
  bool holding_ = false;
};

}  // namespace virtio::xg

#endif  // XEN_GLUE_PLACEMENT_H_
