// sim/sim_evtchn.cc — the simulated libxenevtchn (sim_xen.h): event
// channels between the backend and the simulated Xen.
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

// --- event channels ----------------------------------------------------------

SimEvtchn::SimEvtchn(SimXen& xen, DomId self) : xen_(&xen), self_(self) {
  efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd_ < 0) Die("eventfd");
}

SimEvtchn::~SimEvtchn() {
  {
    std::lock_guard<std::mutex> l(xen_->mu_);
    for (const auto& [local, xen_port] : bound_) {
      auto it = xen_->channels_.find(xen_port);
      if (it != xen_->channels_.end() && it->second.handle == this) {
        it->second.handle = nullptr;  // reverts to unbound (restartable)
        it->second.local = 0;
      }
    }
    bound_.clear();
  }
  close(efd_);
}

void SimEvtchn::QueueLocked(EvtchnPort local) {
  if (masked_.count(local)) {
    latched_.insert(local);  // one bit: repeated events collapse
    return;
  }
  masked_.insert(local);  // the kernel masks on delivery
  queue_.push_back(local);
  const uint64_t one = 1;
  if (write(efd_, &one, sizeof one) != sizeof one) Die("eventfd write");
}

int SimEvtchn::bind_interdomain(uint32_t dom, EvtchnPort remote) {
  std::lock_guard<std::mutex> l(xen_->mu_);
  if (dom != xen_->options_.domid) return Fail(ESRCH);
  auto it = xen_->channels_.find(remote);
  if (it == xen_->channels_.end()) return Fail(EINVAL);
  SimXen::Channel& c = it->second;
  if (c.remote != self_ || c.handle != nullptr) return Fail(EINVAL);
  const EvtchnPort local = xen_->next_local_port_++;
  c.handle = this;
  c.local = local;
  bound_[local] = remote;
  return static_cast<int>(local);
}

int SimEvtchn::unbind(EvtchnPort local) {
  std::lock_guard<std::mutex> l(xen_->mu_);
  auto it = bound_.find(local);
  if (it == bound_.end()) return Fail(EINVAL);
  auto c = xen_->channels_.find(it->second);
  if (c != xen_->channels_.end() && c->second.handle == this) {
    c->second.handle = nullptr;
    c->second.local = 0;
  }
  bound_.erase(it);
  masked_.erase(local);
  latched_.erase(local);
  std::erase(queue_, local);
  return 0;
}

int SimEvtchn::pending() {
  std::lock_guard<std::mutex> l(xen_->mu_);
  if (xen_->fail_pending_ != 0) {
    const int e = xen_->fail_pending_;
    xen_->fail_pending_ = 0;
    return Fail(e);
  }
  if (queue_.empty()) return Fail(EAGAIN);
  const EvtchnPort p = queue_.front();
  queue_.pop_front();
  if (queue_.empty()) {
    uint64_t v = 0;
    if (read(efd_, &v, sizeof v) < 0 && errno != EAGAIN) Die("eventfd read");
  }
  return static_cast<int>(p);
}

int SimEvtchn::unmask(EvtchnPort local) {
  std::lock_guard<std::mutex> l(xen_->mu_);
  if (!bound_.count(local)) return Fail(EINVAL);
  masked_.erase(local);
  if (latched_.erase(local)) QueueLocked(local);
  return 0;
}

int SimEvtchn::notify(EvtchnPort local) {
  std::lock_guard<std::mutex> l(xen_->mu_);
  if (!bound_.count(local)) return Fail(EINVAL);
  xen_->cv_.notify_all();  // wakes the vCPU waiting on this channel
  return 0;
}

}  // namespace virtio::xg::sim
