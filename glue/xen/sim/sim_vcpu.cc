// sim/sim_vcpu.cc — the vCPU side of the simulated Xen (sim_xen.h):
// an access becomes an ioreq posted to the server that claims it, and
// the vCPU waits for the answer.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "sim/sim_errors.h"
#include "sim/sim_ioreq_server.h"
#include "sim/sim_xen.h"

namespace virtio::xg::sim {

// --- the vCPU side -----------------------------------------------------------

int SimXen::SelectServer(const Request& req, uint64_t* first,
                         uint64_t* last) const {
  uint32_t type = 0;
  const uint64_t span = uint64_t{req.size} * std::max<uint32_t>(req.count, 1);
  if (req.type == kTypePciConfig) {
    if (options_.arch != Arch::kX86) return -1;
    type = kIoRangePci;
    *first = *last = PciConfigSbdf(req.addr);
  } else {
    type = req.type == kTypePio ? kIoRangePort : kIoRangeMemory;
    if (req.df && req.count > 1) {
      *first = req.addr - (span - req.size);
      *last = req.addr + req.size - 1;
    } else {
      *first = req.addr;
      *last = req.addr + span - 1;
    }
  }
  for (int id = kMaxIoreqServers - 1; id >= 0; --id) {
    const Server* s = servers_[static_cast<size_t>(id)].get();
    if (s != nullptr && s->enabled && s->Contains(type, *first, *last))
      return id;
  }
  return -1;
}

void SimXen::DeliverLocked(EvtchnPort xen_port) {
  auto it = channels_.find(xen_port);
  if (it == channels_.end() || it->second.handle == nullptr) {
    ++lost_events_;  // nobody bound: the backend died or never came
    return;
  }
  it->second.handle->QueueLocked(it->second.local);
}

AccessResult SimXen::PostLocked(unsigned vcpu, const Request& req,
                                bool* posted) {
  *posted = false;
  if (crashed_) return {AccessStatus::kCrashed, 0};
  if (vcpu >= options_.vcpus) Die("bad vcpu");
  uint64_t first = 0, last = 0;
  const int id = SelectServer(req, &first, &last);
  if (id < 0) {
    if (options_.arch == Arch::kArm) return {AccessStatus::kAbort, 0};
    const uint64_t ones =
        req.size >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * req.size)) - 1;
    return {AccessStatus::kUnclaimed, req.write ? req.data : ones};
  }
  Server* s = servers_[static_cast<size_t>(id)].get();
  IoreqSlot& slot = s->page[vcpu];
  auto b30 = SlotByte30(slot);
  const uint8_t st = b30.load(std::memory_order_acquire) & kFlagStateMask;
  if (st != kStateNone) {
    Crash("device model set bad IO state " + std::to_string(st));
    return {AccessStatus::kCrashed, 0};
  }
  if (slot.vp_eport != s->xen_ports[vcpu]) {
    Crash("device model set bad event channel");
    return {AccessStatus::kCrashed, 0};
  }
  slot.addr = req.addr;
  slot.data = req.data;
  slot.count = req.count;
  slot.size = req.size;
  slot.type = req.type;
  uint8_t flags = 0;
  if (req.data_is_ptr) flags |= kFlagDataIsPtr;
  if (!req.write) flags |= kFlagDirRead;
  if (req.df) flags |= kFlagDf;
  b30.store(static_cast<uint8_t>(flags | kStateReady),
            std::memory_order_release);
  vcpu_[vcpu] = {id, kStateReady, false};
  DeliverLocked(s->xen_ports[vcpu]);
  *posted = true;
  return {AccessStatus::kOk, 0, id};
}

std::optional<AccessResult> SimXen::PollLocked(unsigned vcpu) {
  VcpuWait& w = vcpu_[vcpu];
  if (crashed_) return AccessResult{AccessStatus::kCrashed, 0, w.server};
  Server* s =
      w.server >= 0 ? FindServer(static_cast<IoServId>(w.server)) : nullptr;
  if (s == nullptr) {
    w.server = -1;
    return AccessResult{AccessStatus::kServerGone, 0};
  }
  IoreqSlot& slot = s->page[vcpu];
  auto b30 = SlotByte30(slot);
  const uint8_t f = b30.load(std::memory_order_acquire);
  const uint8_t st = f & kFlagStateMask;
  if (st < w.prev_state) {
    Crash("Weird HVM ioreq state transition " + std::to_string(w.prev_state) +
          " -> " + std::to_string(st));
    return AccessResult{AccessStatus::kCrashed, 0, w.server};
  }
  switch (st) {
    case kStateRespReady: {
      AccessResult r{AccessStatus::kOk, slot.data, w.server};
      b30.store(static_cast<uint8_t>(f & ~kFlagStateMask),
                std::memory_order_release);
      w.server = -1;
      w.prev_state = kStateNone;
      return r;
    }
    case kStateReady:
    case kStateInProcess:
      w.prev_state = st;
      return std::nullopt;
    default:
      Crash("Weird HVM iorequest state " + std::to_string(st));
      return AccessResult{AccessStatus::kCrashed, 0, w.server};
  }
}

AccessResult SimXen::WaitLocked(std::unique_lock<std::mutex>& lock,
                                unsigned vcpu, const Pump& pump,
                                std::chrono::milliseconds timeout,
                                int max_pumps) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int i = 0;; ++i) {
    if (auto r = PollLocked(vcpu)) return *r;
    if (pump) {
      if (i >= max_pumps)
        return {AccessStatus::kTimeout, 0, vcpu_[vcpu].server};
      lock.unlock();
      pump();
      lock.lock();
    } else if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      if (auto r = PollLocked(vcpu)) return *r;
      return {AccessStatus::kTimeout, 0, vcpu_[vcpu].server};
    }
  }
}

AccessResult SimXen::Run(unsigned vcpu, const Request& req, const Pump& pump,
                         std::chrono::milliseconds timeout, int max_pumps) {
  std::unique_lock<std::mutex> lock(mu_);
  if (vcpu < vcpu_.size() && vcpu_[vcpu].server >= 0) {
    Die("SimXen::Run: vCPU still blocked on an earlier request (Resume it)");
  }
  bool posted = false;
  AccessResult r = PostLocked(vcpu, req, &posted);
  if (!posted) return r;
  return WaitLocked(lock, vcpu, pump, timeout, max_pumps);
}

AccessResult SimXen::Resume(unsigned vcpu, const Pump& pump,
                            std::chrono::milliseconds timeout, int max_pumps) {
  std::unique_lock<std::mutex> lock(mu_);
  if (vcpu >= vcpu_.size() || vcpu_[vcpu].server < 0) {
    return {AccessStatus::kOk, 0};
  }
  return WaitLocked(lock, vcpu, pump, timeout, max_pumps);
}

AccessResult SimXen::Mmio(unsigned vcpu, bool write, uint64_t addr,
                          uint32_t size, uint64_t data, const Pump& pump) {
  return Run(vcpu,
             {.type = kTypeCopy,
              .write = write,
              .addr = addr,
              .data = data,
              .size = size},
             pump);
}

AccessResult SimXen::PciConfig(unsigned vcpu, bool write, uint32_t sbdf,
                               uint32_t reg, uint32_t size, uint64_t data,
                               const Pump& pump) {
  return Run(vcpu,
             {.type = kTypePciConfig,
              .write = write,
              .addr = (uint64_t{sbdf} << 32) | reg,
              .data = data,
              .size = size},
             pump);
}

AccessResult SimXen::Invalidate(unsigned vcpu, const Pump& pump,
                                std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  AccessResult result{AccessStatus::kOk, 0};
  for (unsigned id = 0; id < kMaxIoreqServers; ++id) {
    Server* s = FindServer(static_cast<IoServId>(id));
    if (s == nullptr || !s->enabled) continue;
    // ioreq_broadcast(): the same slot protocol, sent to this server.
    IoreqSlot& slot = s->page[vcpu];
    auto b30 = SlotByte30(slot);
    if ((b30.load(std::memory_order_acquire) & kFlagStateMask) != kStateNone) {
      Crash("device model set bad IO state (broadcast)");
      return {AccessStatus::kCrashed, 0};
    }
    slot.addr = 0;
    slot.data = 0;
    slot.count = 1;
    slot.size = 4;
    slot.type = kTypeInvalidate;
    b30.store(kStateReady, std::memory_order_release);
    vcpu_[vcpu] = {static_cast<int>(id), kStateReady, true};
    DeliverLocked(s->xen_ports[vcpu]);
    AccessResult r = WaitLocked(lock, vcpu, pump, timeout, 64);
    if (r.status != AccessStatus::kOk && result.status == AccessStatus::kOk) {
      result = r;
      if (r.status == AccessStatus::kTimeout) return r;
    }
  }
  return result;
}

bool SimXen::PostRaw(IoServId id, unsigned vcpu, const IoreqSlot& image) {
  std::lock_guard<std::mutex> l(mu_);
  Server* s = FindServer(id);
  if (s == nullptr || vcpu >= options_.vcpus) return false;
  IoreqSlot& slot = s->page[vcpu];
  slot.addr = image.addr;
  slot.data = image.data;
  slot.count = image.count;
  slot.size = image.size;
  slot.pad0 = image.pad0;
  slot.type = image.type;
  SlotByte30(slot).store(
      static_cast<uint8_t>((image.flags & ~kFlagStateMask) | kStateReady),
      std::memory_order_release);
  vcpu_[vcpu] = {static_cast<int>(id), kStateReady, false};
  DeliverLocked(s->xen_ports[vcpu]);
  return true;
}

uint8_t SimXen::SlotState(IoServId id, unsigned vcpu) const {
  std::lock_guard<std::mutex> l(mu_);
  const Server* s = FindServer(id);
  if (s == nullptr || vcpu >= options_.vcpus) return 0xff;
  return SlotByte30(s->page[vcpu]).load(std::memory_order_acquire) &
         kFlagStateMask;
}

std::optional<uint64_t> SimXen::TakeRawAnswer(IoServId id, unsigned vcpu) {
  std::lock_guard<std::mutex> l(mu_);
  (void)id;
  auto r = PollLocked(vcpu);
  if (!r || r->status != AccessStatus::kOk) return std::nullopt;
  return r->data;
}

}  // namespace virtio::xg::sim
