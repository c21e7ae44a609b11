// sim/sim_xen.cc — the simulated Xen's core (sim_xen.h): guest RAM,
// the observation and fault-injection hooks tests use.
//
// The ports are in files of their own: sim_device_model.cc (ioreq
// servers, interrupts), sim_foreign_memory.cc, sim_grant_table.cc,
// sim_evtchn.cc, and sim_vcpu.cc (what a vCPU access does).
#include "sim/sim_xen.h"

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

namespace virtio::xg::sim {

const char* AccessStatusName(AccessStatus s) {
  switch (s) {
    case AccessStatus::kOk:
      return "ok";
    case AccessStatus::kUnclaimed:
      return "unclaimed";
    case AccessStatus::kAbort:
      return "abort";
    case AccessStatus::kTimeout:
      return "timeout";
    case AccessStatus::kCrashed:
      return "crashed";
    case AccessStatus::kServerGone:
      return "server-gone";
  }
  return "?";
}

SimXen::SimXen(SimOptions options) : options_(std::move(options)) {
  vcpu_.resize(options_.vcpus);
  for (const RamBank& b : options_.ram) {
    if (b.size == 0 || b.gpa % kPageSize || b.size % kPageSize) Die("bad bank");
    bank_off_.push_back(ram_bytes_);
    ram_bytes_ += b.size;
  }
  ram_fd_ = memfd_create("simxen-ram", MFD_CLOEXEC);
  if (ram_fd_ < 0) Die("memfd_create");
  if (ftruncate(ram_fd_, static_cast<off_t>(ram_bytes_)) != 0) Die("ftruncate");
  void* p =
      mmap(nullptr, ram_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, ram_fd_, 0);
  if (p == MAP_FAILED) Die("mmap ram");
  ram_ = static_cast<uint8_t*>(p);
  servers_.resize(kMaxIoreqServers);
}

SimXen::~SimXen() {
  servers_.clear();
  if (ram_ != nullptr) munmap(ram_, ram_bytes_);
  if (ram_fd_ >= 0) close(ram_fd_);
}

// --- guest RAM ---------------------------------------------------------------

uint8_t* SimXen::GuestRam(uint64_t gpa, uint64_t len) {
  for (size_t i = 0; i < options_.ram.size(); ++i) {
    const RamBank& b = options_.ram[i];
    if (gpa >= b.gpa && gpa - b.gpa <= b.size &&
        len <= b.size - (gpa - b.gpa)) {
      return ram_ + bank_off_[i] + (gpa - b.gpa);
    }
  }
  return nullptr;
}

void SimXen::WriteGuest(uint64_t gpa, const void* src, uint64_t len) {
  uint8_t* p = GuestRam(gpa, len);
  if (p == nullptr) Die("WriteGuest outside RAM");
  std::memcpy(p, src, len);
}

void SimXen::ReadGuest(uint64_t gpa, void* dst, uint64_t len) {
  uint8_t* p = GuestRam(gpa, len);
  if (p == nullptr) Die("ReadGuest outside RAM");
  std::memcpy(dst, p, len);
}

// --- observation / faults ----------------------------------------------------

std::vector<IrqEvent> SimXen::irq_log() const {
  std::lock_guard<std::mutex> l(mu_);
  return irqs_;
}
size_t SimXen::CountIrq(IrqEvent::Kind kind, uint32_t irq,
                        uint32_t level) const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<size_t>(
      std::count_if(irqs_.begin(), irqs_.end(), [&](const IrqEvent& e) {
        return e.kind == kind && e.irq == irq && e.level == level;
      }));
}
size_t SimXen::CountMsi(uint64_t addr, uint32_t data) const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<size_t>(
      std::count_if(irqs_.begin(), irqs_.end(), [&](const IrqEvent& e) {
        return e.kind == IrqEvent::kMsi && e.msi_addr == addr &&
               e.msi_data == data;
      }));
}
size_t SimXen::CountPirq(uint32_t pirq) const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<size_t>(
      std::count_if(irqs_.begin(), irqs_.end(), [&](const IrqEvent& e) {
        return e.kind == IrqEvent::kMsi && e.pirq == int64_t{pirq};
      }));
}
bool SimXen::WaitForIrqs(
    const std::function<bool(const std::vector<IrqEvent>&)>& pred,
    std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, timeout, [&] { return pred(irqs_); });
}
bool SimXen::crashed() const {
  std::lock_guard<std::mutex> l(mu_);
  return crashed_;
}
std::string SimXen::crash_reason() const {
  std::lock_guard<std::mutex> l(mu_);
  return crash_reason_;
}
bool SimXen::hypervisor_crashed() const {
  std::lock_guard<std::mutex> l(mu_);
  return hypervisor_crashed_;
}
void SimXen::FailDomainInfo(int err) {
  std::lock_guard<std::mutex> l(mu_);
  fail_domain_info_ = err;
}
bool SimXen::server_exists(IoServId id) const {
  std::lock_guard<std::mutex> l(mu_);
  return FindServer(id) != nullptr;
}
bool SimXen::server_enabled(IoServId id) const {
  std::lock_guard<std::mutex> l(mu_);
  const Server* s = FindServer(id);
  return s != nullptr && s->enabled;
}
size_t SimXen::num_ranges(IoServId id, uint32_t type) const {
  std::lock_guard<std::mutex> l(mu_);
  const Server* s = FindServer(id);
  return s == nullptr || type > 2 ? 0 : s->ranges[type].size();
}
uint64_t SimXen::lost_events() const {
  std::lock_guard<std::mutex> l(mu_);
  return lost_events_;
}
uint64_t SimXen::mapped_pages() const {
  std::lock_guard<std::mutex> l(mu_);
  return mapped_.size();
}
void SimXen::FailNextCreate(int err) {
  std::lock_guard<std::mutex> l(mu_);
  fail_create_ = err;
}
void SimXen::FailNextMapResource(int err) {
  std::lock_guard<std::mutex> l(mu_);
  fail_map_resource_ = err;
}
void SimXen::FailPfn(XenPfn pfn, bool fail) {
  std::lock_guard<std::mutex> l(mu_);
  if (fail) {
    failed_pfns_.insert(pfn);
  } else {
    failed_pfns_.erase(pfn);
  }
}
void SimXen::FailNextPending(int err) {
  std::lock_guard<std::mutex> l(mu_);
  fail_pending_ = err;
}
void SimXen::SpuriousEvent(IoServId id, unsigned vcpu) {
  std::lock_guard<std::mutex> l(mu_);
  Server* s = FindServer(id);
  if (s != nullptr && vcpu < s->xen_ports.size())
    DeliverLocked(s->xen_ports[vcpu]);
}

void SimXen::Crash(const std::string& why) {
  if (!crashed_) {
    crashed_ = true;
    crash_reason_ = why;
  }
  cv_.notify_all();
}

void SimXen::RecordIrq(const IrqEvent& e) {
  std::lock_guard<std::mutex> l(mu_);
  irqs_.push_back(e);
  cv_.notify_all();
}

}  // namespace virtio::xg::sim
