// xen_glue/reaper.h — tearing down an ioreq server whose backend died.
//
// A backend that exits cleanly answers what is pending and destroys its
// ioreq server (IoreqServer::Stop). One that crashes (SIGKILL, OOM killer,
// a segfault) leaves the server enabled in Xen with its ranges and PCI
// functions: a vCPU that touches one of them, or was already waiting for an
// answer, blocks on the server's event channel for good (Xen 4.17 neither
// times out nor wakes it when the server is destroyed). One hung vCPU soon
// hangs the whole guest.
//
// ReapIoreqServer() is what another process in the same domain (the
// guardian, guardian.h) does then: attach to the server by id, answer every
// request the dead owner left READY or INPROCESS as if nothing were there
// (reads all ones, writes dropped: what the guest sees from an empty PCI
// slot or unassigned MMIO), disable it, answer what raced in, and destroy
// it. Afterwards Xen sends the dead backend's accesses to the default
// device model (QEMU on an HVM guest), so the guest sees its devices vanish
// instead of hanging.
#ifndef XEN_GLUE_REAPER_H_
#define XEN_GLUE_REAPER_H_

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "xen_glue/abi.h"
#include "xen_glue/ioreq_server.h"
#include "xen_glue/ports.h"

namespace virtio::xg {

struct ReapOptions {
  // Binding the dead owner's event channels fails (EBUSY) until the kernel
  // has released its evtchn handle, which can happen after its other files
  // (the guardian's pipe) closed: retry for this long.
  std::chrono::milliseconds bind_deadline{10000};
  std::chrono::milliseconds retry_interval{50};
  // How long the vCPUs get to take the answers before the server goes.
  std::chrono::milliseconds consume_deadline{2000};
};

// What a reap did.
struct ReapReport {
  uint64_t answered = 0;  // requests answered on the dead owner's behalf
  uint64_t adopted = 0;   // of which it had taken (INPROCESS) but not answered
  unsigned attempts = 0;  // attach attempts (1 unless binding had to wait)
  unsigned unconsumed = 0;  // answers no vCPU had taken when the server went
};

// Answers `id`'s pending requests and destroys it. NotFound: the server is
// already gone (its owner destroyed it after all). Any other error: the
// server is destroyed anyway (so no new access can hang on it) but a vCPU
// that was already waiting may stay blocked; the message says why.
template <DeviceModelPort DM, ForeignMemoryPort FM, EventChannelPort EV>
absl::StatusOr<ReapReport> ReapIoreqServer(DM& dm, FM& fm, EV& ev, DomId domid,
                                           IoServId id,
                                           const ReapOptions& options = {}) {
  ReapReport report;
  const auto deadline =
      std::chrono::steady_clock::now() + options.bind_deadline;
  absl::Status attached;
  for (;;) {
    ++report.attempts;
    // Not destroy_on_stop: a failed attempt must leave the server for the
    // next one (destroying it would strand a waiting vCPU for good).
    IoreqServer<DM, FM, EV> server(
        dm, fm, ev,
        IoreqServerOptions{
            .domid = domid,
            .reattach = id,
            .destroy_on_stop = false,
            .name = absl::StrFormat("guardian of ioreq server %u", id)});
    attached = server.Start();
    if (attached.ok()) {
      // Start() answered the slots; Disable() stops the routing and answers
      // what raced in. Then let the woken vCPUs take their answers: Xen
      // drops an unconsumed one with the server, and the vCPU would go on
      // with stale data instead of all ones.
      server.Disable();
      const auto consume_by =
          std::chrono::steady_clock::now() + options.consume_deadline;
      while (server.UnconsumedAnswers() > 0 &&
             std::chrono::steady_clock::now() < consume_by) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      report.unconsumed = server.UnconsumedAnswers();
      server.Stop();
      report.answered = server.stats().requests;
      report.adopted = server.stats().adopted;
      break;
    }
    if (absl::IsNotFound(attached)) {
      return absl::NotFoundError(
          absl::StrFormat("ioreq server %u of domain %u is already gone: %s",
                          id, domid, attached.message()));
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(options.retry_interval);
  }
  if (dm.destroy_ioreq_server(domid, id) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ESRCH) {
      return attached.ok() ? absl::StatusOr<ReapReport>(report)
                           : absl::NotFoundError(absl::StrFormat(
                                 "ioreq server %u of domain %u is already gone",
                                 id, domid));
    }
    return absl::UnavailableError(absl::StrFormat(
        "destroy_ioreq_server(domain %u, server %u): %s%s%s", domid, id,
        std::strerror(err), attached.ok() ? "" : "; attaching failed too: ",
        attached.ok() ? "" : attached.message()));
  }
  if (!attached.ok()) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "ioreq server %u destroyed, but its pending requests could not be "
        "answered (a vCPU that was waiting stays blocked): %s",
        id, attached.message()));
  }
  return report;
}

}  // namespace virtio::xg

#endif  // XEN_GLUE_REAPER_H_
