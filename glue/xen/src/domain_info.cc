// src/domain_info.cc — RealDomainInfo (xen_glue/real_ports.h): the guest's
// HVM flag and x86 emulation flags from libxenctrl's getdomaininfo.
// Built with -std=gnu++20 (CMakeLists.txt): xenctrl.h includes the
// generated xen/foreign headers, which need GNU extensions.
#include <cerrno>

#include "xen_glue/real_ports.h"

extern "C" {
#include <xenctrl.h>
}

namespace virtio::xg {

RealDomainInfo::RealDomainInfo(xentoollog_logger* log)
    : h_(xc_interface_open(log, nullptr, 0)) {}

RealDomainInfo::~RealDomainInfo() {
  if (h_ != nullptr) xc_interface_close(static_cast<xc_interface*>(h_));
}

int RealDomainInfo::get_domain_info(DomId d, DomainInfo* out) {
  if (h_ == nullptr) {
    errno = EBADF;
    return -1;
  }
  xc_dominfo_t info{};
  errno = 0;
  // xc_domain_getinfo returns the first domain >= d: check it is d.
  if (xc_domain_getinfo(static_cast<xc_interface*>(h_), d, 1, &info) != 1 ||
      info.domid != d) {
    if (errno == 0) errno = ESRCH;
    return -1;
  }
  out->hvm = info.hvm != 0;
#if defined(__x86_64__) || defined(__i386__)
  out->x86 = true;
  out->emulation_flags = info.arch_config.emulation_flags;
#else
  out->x86 = false;
  out->emulation_flags = 0;
#endif
  return 0;
}

}  // namespace virtio::xg
