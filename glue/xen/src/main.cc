// xen-virtio-backend: serves libvirtio devices to a Xen guest as an ioreq
// server of its own, alone or beside the guest's QEMU and other backends
// (disaggregation: each claims its devices' addresses or PCI functions). See
// --help and glue/xen/include/xen_glue/backend.h.
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "virtio/log.h"
#include "xen_glue/backend.h"
#include "xen_glue/device_spec.h"
#include "xen_glue/guardian.h"
#include "xen_glue/real_ports.h"
#include "xen_glue/reaper.h"

namespace virtio::xg {
bool CheckIoreqBitfields();  // abi_check.cc
}

namespace {

using virtio::xg::Backend;
using virtio::xg::RealDeviceModel;
using virtio::xg::RealEventChannel;
using virtio::xg::RealForeignMemory;

int Fail(absl::string_view msg) {
  std::fprintf(stderr, "xen-virtio-backend: %.*s\n",
               static_cast<int>(msg.size()), msg.data());
  return 1;
}

// libxen* report failures through a xentoollog logger; route them to ours.
void LogVmessage(xentoollog_logger*, xentoollog_level level, int errnoval,
                 const char* context, const char* format, va_list al) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, format, al);
  virtio::Logf(
      level >= XTL_ERROR ? virtio::LogLevel::kError : virtio::LogLevel::kInfo,
      "%s: %s%s%s", context ? context : "xen", buf, errnoval >= 0 ? ": " : "",
      errnoval >= 0 ? std::strerror(errnoval) : "");
}
void LogProgress(xentoollog_logger*, const char*, const char*, int,
                 unsigned long, unsigned long) {}
void LogDestroy(xentoollog_logger*) {}
xentoollog_logger g_logger{LogVmessage, LogProgress, LogDestroy};

// In the guardian, after the backend died: its own handles (the backend's
// were not inherited), then answer and destroy (reaper.h).
void ReapAfterCrash(virtio::xg::DomId domid, virtio::xg::IoServId id,
                    pid_t /*backend*/) {
  RealDeviceModel dm(&g_logger);
  RealForeignMemory fm(&g_logger);
  RealEventChannel ev(&g_logger);
  if (!dm.ok() || !fm.ok() || !ev.ok()) {
    virtio::Logf(
        virtio::LogLevel::kError,
        "guardian: cannot open the Xen interfaces (%s); ioreq server %u "
        "of domain %u is left as it is",
        std::strerror(errno), id, domid);
    return;
  }
  auto report = virtio::xg::ReapIoreqServer(dm, fm, ev, domid, id);
  if (report.ok()) {
    virtio::Logf(virtio::LogLevel::kInfo,
                 "guardian: ioreq server %u destroyed; answered %u pending "
                 "request(s) (%u taken but not answered by the backend), %u "
                 "attach attempt(s)",
                 id, report->answered, report->adopted, report->attempts);
  } else if (absl::IsNotFound(report.status())) {
    virtio::Logf(virtio::LogLevel::kInfo, "guardian: nothing to do: %s",
                 report.status().message());
  } else {
    virtio::Logf(virtio::LogLevel::kError, "guardian: %s",
                 report.status().message());
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto args = virtio::xg::ParseArgs(argc, argv);
  if (!args.ok()) return Fail(args.status().message());
  if (args->help) {
    std::fputs(virtio::xg::Usage().c_str(), stdout);
    return 0;
  }
  if (!virtio::xg::CheckIoreqBitfields()) {
    return Fail(
        "ioreq_t bitfield layout differs from the one this build assumes");
  }
  struct stat st;
  if (stat("/dev/xen", &st) != 0)
    return Fail("no /dev/xen: not running under Xen");

  // Forked now: one thread, no Xen handle, no backend file open yet.
  virtio::xg::Guardian guardian;
  if (args->guardian) {
    auto g = virtio::xg::Guardian::Start(ReapAfterCrash);
    if (!g.ok()) return Fail(g.status().message());
    guardian = std::move(*g);
  }

  // Block the stop signals before any thread exists; read them via signalfd.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  const int sfd = signalfd(-1, &stop, SFD_CLOEXEC);
  if (sfd < 0) return Fail(std::string("signalfd: ") + std::strerror(errno));

  // Handles are not fork-safe: open them here, in the serving process.
  RealDeviceModel dm(&g_logger);
  RealForeignMemory fm(&g_logger);
  RealEventChannel ev(&g_logger);
  if (!dm.ok() || !fm.ok() || !ev.ok()) {
    return Fail(std::string("cannot open the Xen device-model/foreign-memory/"
                            "event-channel interfaces: ") +
                std::strerror(errno) +
                " (dom0 or a privileged driver domain needed)");
  }
  // The grant table only when a device asks for grant=on (gntdev may be
  // missing where nobody needs it).
  std::unique_ptr<virtio::xg::RealGrantTable> gt;
  for (const virtio::xg::DeviceSpec& d : args->devices) {
    if (d.grant && !gt) {
      gt = std::make_unique<virtio::xg::RealGrantTable>(&g_logger);
      if (!gt->ok()) {
        return Fail(std::string("grant=on: cannot open /dev/xen/gntdev: ") +
                    std::strerror(errno));
      }
    }
  }
  signal(SIGPIPE, SIG_IGN);  // console backends write to pipes/sockets
  Backend<RealDeviceModel, RealForeignMemory, RealEventChannel,
          virtio::xg::RealGrantTable>
      backend(dm, fm, ev, *args, gt.get());
  // The guest's type decides which interrupt dm_ops are safe (an ISA one
  // crashed Xen on a PVH guest). Unknown stays unknown: Start() then
  // refuses the devices that would need ISA/INTx, and says why.
  {
    virtio::xg::RealDomainInfo di(&g_logger);
    auto type = virtio::xg::DetectGuestType(di, *args->domid);
    if (type.ok()) {
      backend.set_guest_type(*type);
      virtio::Logf(virtio::LogLevel::kInfo, "domain %u is a %s guest",
                   *args->domid, virtio::xg::GuestTypeName(*type));
      if (*type == virtio::xg::GuestType::kPv) {
        return Fail("the guest is PV: Xen has no ioreq servers for PV guests");
      }
    } else {
      virtio::Logf(virtio::LogLevel::kWarning,
                   "cannot tell the guest's type: %s", type.status().message());
    }
  }
  if (absl::Status s = backend.Start(); !s.ok()) return Fail(s.message());
  if (guardian.active()) {
    if (absl::Status s = guardian.Protect(*args->domid, backend.server()->id());
        !s.ok()) {
      return Fail(s.message());
    }
  }
  if (args->print_placement) std::fputs(backend.Placement().c_str(), stdout);
  std::fflush(stdout);
  virtio::Logf(
      virtio::LogLevel::kInfo, "serving domain %u with ioreq server %u%s",
      *args->domid, backend.server()->id(),
      guardian.active()
          ? absl::StrFormat(" (guardian pid %d)", guardian.pid()).c_str()
          : " (no guardian)");
  backend.Run(sfd);
  const virtio::xg::IoreqStats& stats = backend.server()->stats();
  virtio::Logf(virtio::LogLevel::kInfo,
               "stopping: tearing the ioreq server down (requests %u, refused: "
               "invalid %u straddling %u unclaimed %u; rep %u, invalidates %u, "
               "spurious events %u)",
               stats.requests, stats.invalid, stats.straddles, stats.unclaimed,
               stats.rep, stats.invalidates, stats.spurious);
  backend.Stop();
  guardian.Release();
  close(sfd);
  return 0;
}
