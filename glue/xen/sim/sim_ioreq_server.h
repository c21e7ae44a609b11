// sim/sim_ioreq_server.h — one ioreq server of the simulated Xen
// (SimXen::Server): its shared page with a slot per vCPU, the ranges it
// claims, and the event channels Xen signals it on.
//
// Private to the simulation: the device-model calls create and configure
// servers, the foreign-memory calls map their pages, the vCPU side posts
// requests to them.
#ifndef VIRTIO_XG_SIM_SIM_IOREQ_SERVER_H_
#define VIRTIO_XG_SIM_SIM_IOREQ_SERVER_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "sim/sim_xen.h"

namespace virtio::xg::sim {

constexpr XenPfn kLegacyGfnBase = 0xfeff0;  // x86 legacy ioreq gfns (E820 hole)

struct SimXen::Server {
  IoServId id = 0;
  DomId emulator = 0;
  int bufioreq = 0;
  bool enabled = false;
  bool page_mapped = false;  // the emulator mapped the page (resource or gfn)
  bool legacy_used = false;
  int page_fd = -1;
  IoreqSlot* page = nullptr;  // Xen's own mapping
  std::vector<std::pair<uint64_t, uint64_t>>
      ranges[3];                      // by XEN_DMOP_IO_RANGE_*
  std::vector<EvtchnPort> xen_ports;  // per vCPU

  ~Server() {
    if (page != nullptr) munmap(page, kPageSize);
    if (page_fd >= 0) close(page_fd);
  }
  bool Contains(uint32_t type, uint64_t first, uint64_t last) const {
    for (const auto& [s, e] : ranges[type]) {
      if (first >= s && last <= e) return true;
    }
    return false;
  }
};

}  // namespace virtio::xg::sim

#endif  // VIRTIO_XG_SIM_SIM_IOREQ_SERVER_H_
