// glue/kvm/slots.h — internal to devices*.cc: the slot templates that own
// a libvirtio device, its transport and its interrupt, route MMIO/config
// exits to the transport, and register kicks, irqfds and backend fds with
// the I/O thread. Split out so each device type builds in its own
// translation unit (devices.cc, devices_net.cc, devices_console.cc).
#ifndef LIBVIRTIO_GLUE_KVM_SLOTS_H_
#define LIBVIRTIO_GLUE_KVM_SLOTS_H_

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "devices.h"
#include "virtio/log.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_transport.h"
#include "virtio/spec.h"

namespace kvmglue {
namespace slots {

// Set by UseIrqLineIoctl().
extern bool g_force_irq_line;

// Host-side helper a device type may need beyond kicks (e.g. the console's
// backend pump thread). Destroyed (and stopped) before the device.
class Worker {
 public:
  virtual ~Worker() = default;
};

// Per-device-type wiring run at Start(): watch backend fds, start workers.
// Called with the slot's mutex, which every call into the device must hold.
template <typename Dev>
using BackendStart = std::function<absl::StatusOr<std::unique_ptr<Worker>>(
    Dev&, IoThread&, std::mutex&)>;


using virtio::LogLevel;
using virtio::Logf;

static_assert(virtio::HypervisorTraits<MmioTraits>);
static_assert(virtio::HypervisorTraits<PciTraits>);
static_assert(virtio::PciIrqSink<PciSink>);

template <typename Interrupt, typename Dev>
using Factory = std::function<absl::StatusOr<std::unique_ptr<Dev>>(
    const virtio::GuestMemoryMap&, Interrupt&)>;

// Devices with an asynchronous backend (blk on io_uring) complete requests
// when the backend's completion fd fires.
template <typename Dev>
concept HasCompletions = requires(Dev& d, uint16_t q) {
  d.CompleteRequests(q);
  { d.backend().queue(q).completion_fd() } -> std::convertible_to<int>;
};

inline std::string StatusBits(uint8_t s) {
  return absl::StrFormat("0x%02x%s", s,
                         (s & virtio::spec::kStatusDeviceNeedsReset)
                             ? " (NEEDS_RESET)"
                             : "");
}

// Opens an irqfd with a resample fd for `gsi` (level-triggered), or falls
// back to KVM_IRQ_LINE.
inline IrqLine MakeLevelLine(Vm& vm, IoThread& io, uint32_t gsi) {
  if (vm.has_irqfd_resample() && !g_force_irq_line) {
    const int irqfd = io.NewEventFd();
    const int resample = io.NewEventFd();
    if (irqfd >= 0 && resample >= 0) {
      absl::Status s = vm.SetIrqFd(irqfd, gsi, resample, true);
      if (s.ok()) return IrqLine(&vm, gsi, irqfd, resample);
      Logf(LogLevel::kWarning,
           "vmm: level irqfd on GSI %u failed (%s); using KVM_IRQ_LINE", gsi,
           s.ToString());
    }
  }
  return IrqLine(&vm, gsi, -1, -1);
}

// --- virtio-mmio ---------------------------------------------------------------

template <typename Dev>
class MmioSlot final : public VmmDevice {
 public:
  using Interrupt = MmioTraits::Interrupt;
  using Transport = virtio::MmioTransport<Dev>;

  MmioSlot(DeviceSpec spec, Placement placement, Vm& vm,
           std::shared_ptr<void> keepalive)
      : VmmDevice(std::move(spec), std::move(placement)),
        vm_(vm),
        keepalive_(std::move(keepalive)) {}

  ~MmioSlot() override {
    for (size_t q = 0; q < kick_fds_.size(); ++q) {
      (void)vm_.SetIoEventFd(kick_fds_[q], NotifyGpa(), 4, q, false);
    }
  }

  absl::Status Init(const Factory<Interrupt, Dev>& make) {
    // The line is wired in Start(); until then a raise goes nowhere.
    irq_ = std::make_unique<Interrupt>(IrqLine());
    absl::StatusOr<std::unique_ptr<Dev>> dev = make(vm_.memory(), *irq_);
    if (!dev.ok()) return dev.status();
    dev_ = *std::move(dev);
    transport_ = std::make_unique<Transport>(*dev_);
    return absl::OkStatus();
  }

  bool MmioRead(uint64_t gpa, uint32_t len, uint64_t* value) override {
    const uint64_t off = gpa - placement_.mmio_addr;
    if (gpa < placement_.mmio_addr || off >= Transport::kRegionSize) return false;
    std::lock_guard<std::mutex> lock(mu_);
    *value = transport_->Read(off, len);
    return true;
  }
  bool MmioWrite(uint64_t gpa, uint32_t len, uint64_t value) override {
    const uint64_t off = gpa - placement_.mmio_addr;
    if (gpa < placement_.mmio_addr || off >= Transport::kRegionSize) return false;
    std::lock_guard<std::mutex> lock(mu_);
    transport_->Write(off, len, static_cast<uint32_t>(value));
    return true;
  }
  uint32_t PciConfigRead(uint32_t, uint32_t) override { return 0xffffffff; }
  void PciConfigWrite(uint32_t, uint32_t, uint32_t) override {}
  uint64_t bar_size() const override { return 0; }
  void SetBarAddress(uint64_t) override {}
  uint32_t device_id() const override { return dev_->device_id(); }

  absl::Status Start(IoThread& io) override {
    // Re-seat the line now that KVM objects can be made. Nothing has been
    // raised yet: the guest has not run.
    irq_->line() = MakeLevelLine(vm_, io, placement_.irq);
    if (irq_->line().resamplefd() >= 0) {
      absl::Status s = io.Watch(irq_->line().resamplefd(), [this] {
        irq_->line().Resample(irq_->status() != 0);
      });
      if (!s.ok()) return s;
    }
    // One ioeventfd per queue on QueueNotify, told apart by the value
    // written (the queue index): a kick costs no exit to userspace.
    for (uint16_t q = 0; q < dev_->num_queues(); ++q) {
      const int fd = io.NewEventFd();
      if (fd < 0) return absl::InternalError("eventfd");
      absl::Status s = vm_.SetIoEventFd(fd, NotifyGpa(), 4, q, true);
      if (!s.ok()) return s;
      kick_fds_.push_back(fd);
      s = io.Watch(fd, [this, q] {
        vm_.stats().ioeventfd_kicks.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(mu_);
        dev_->Notify(q);
      });
      if (!s.ok()) return s;
      if constexpr (HasCompletions<Dev>) {
        s = io.Watch(dev_->backend().queue(q).completion_fd(), [this, q] {
          vm_.stats().backend_completions.fetch_add(1, std::memory_order_relaxed);
          std::lock_guard<std::mutex> lock(mu_);
          dev_->CompleteRequests(q);
        });
        if (!s.ok()) return s;
      }
    }
    return StartBackend(io);
  }

  std::string Summary() override {
    std::lock_guard<std::mutex> lock(mu_);
    return absl::StrFormat(
        "%s: virtio-mmio @0x%x irq %u: status %s, guest errors: %u "
        "register, %u device",
        placement_.id, placement_.mmio_addr, placement_.irq,
        StatusBits(dev_->status()), transport_->guest_errors(),
        dev_->guest_errors());
  }

 private:
  absl::Status StartBackend(IoThread& io) {
    if (!backend_start) return absl::OkStatus();
    absl::StatusOr<std::unique_ptr<Worker>> w = backend_start(*dev_, io, mu_);
    if (!w.ok()) return w.status();
    worker_ = *std::move(w);
    return absl::OkStatus();
  }
  uint64_t NotifyGpa() const {
    return placement_.mmio_addr + virtio::mmio::kQueueNotify;
  }

  Vm& vm_;
  std::shared_ptr<void> keepalive_;  // backend; outlives dev_
  std::mutex mu_;
  std::unique_ptr<Interrupt> irq_;
  std::unique_ptr<Dev> dev_;
  std::unique_ptr<Transport> transport_;
  std::vector<int> kick_fds_;

 public:
  // Set by Make() before Init(); run by Start().
  BackendStart<Dev> backend_start;

 private:
  std::unique_ptr<Worker> worker_;  // last: stopped first
};

// --- virtio-pci --------------------------------------------------------------------

template <typename Dev>
class PciSlot final : public VmmDevice {
 public:
  using Interrupt = PciTraits::Interrupt;
  using Transport = virtio::PciTransport<Dev>;

  PciSlot(DeviceSpec spec, Placement placement, Vm& vm, MsiRouter& router,
          std::shared_ptr<void> keepalive)
      : VmmDevice(std::move(spec), std::move(placement)),
        vm_(vm),
        keepalive_(std::move(keepalive)) {
    sink_.router = &router;
  }
  ~PciSlot() override { UnmapNotify(); }

  absl::Status Init(uint16_t num_queues, const Factory<Interrupt, Dev>& make) {
    irq_ = std::make_unique<Interrupt>(sink_, num_queues);
    absl::StatusOr<std::unique_ptr<Dev>> dev = make(vm_.memory(), *irq_);
    if (!dev.ok()) return dev.status();
    dev_ = *std::move(dev);
    virtio::PciTransportOptions options;
    options.interrupt_line = static_cast<uint8_t>(placement_.irq);
    transport_ = std::make_unique<Transport>(*dev_, options);
    return absl::OkStatus();
  }

  bool MmioRead(uint64_t gpa, uint32_t len, uint64_t* value) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!Decodes(gpa)) return false;
    *value = transport_->BarRead(gpa - transport_->bar_address(), len);
    return true;
  }
  bool MmioWrite(uint64_t gpa, uint32_t len, uint64_t value) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!Decodes(gpa)) return false;
    transport_->BarWrite(gpa - transport_->bar_address(), len, value);
    return true;
  }
  uint32_t PciConfigRead(uint32_t offset, uint32_t size) override {
    std::lock_guard<std::mutex> lock(mu_);
    return transport_->ConfigRead(offset, size);
  }
  void PciConfigWrite(uint32_t offset, uint32_t size, uint32_t value) override {
    std::lock_guard<std::mutex> lock(mu_);
    transport_->ConfigWrite(offset, size, value);
    SyncNotify();
  }
  uint64_t bar_size() const override { return transport_->bar_size(); }
  void SetBarAddress(uint64_t address) override {
    std::lock_guard<std::mutex> lock(mu_);
    transport_->SetBarAddress(address);
    placement_.bar_addr = transport_->bar_address();
  }
  uint32_t device_id() const override { return dev_->device_id(); }

  absl::Status Start(IoThread& io) override {
    io_ = &io;
    sink_.intx = MakeLevelLine(vm_, io, placement_.irq);
    if (sink_.intx.resamplefd() >= 0) {
      absl::Status s = io.Watch(sink_.intx.resamplefd(), [this] {
        sink_.intx.Resample(irq_->intx_asserted());
      });
      if (!s.ok()) return s;
    }
    for (uint16_t q = 0; q < dev_->num_queues(); ++q) {
      const int fd = io.NewEventFd();
      if (fd < 0) return absl::InternalError("eventfd");
      kick_fds_.push_back(fd);
      absl::Status s = io.Watch(fd, [this, q] {
        vm_.stats().ioeventfd_kicks.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(mu_);
        dev_->Notify(q);
      });
      if (!s.ok()) return s;
      if constexpr (HasCompletions<Dev>) {
        s = io.Watch(dev_->backend().queue(q).completion_fd(), [this, q] {
          vm_.stats().backend_completions.fetch_add(1, std::memory_order_relaxed);
          std::lock_guard<std::mutex> lock(mu_);
          dev_->CompleteRequests(q);
        });
        if (!s.ok()) return s;
      }
    }
    return StartBackend(io);
  }

  std::string Summary() override {
    std::lock_guard<std::mutex> lock(mu_);
    return absl::StrFormat(
        "%s: virtio-pci %s BAR0 0x%x+0x%x INTx %u %s: status %s, guest "
        "errors: %u register, %u device",
        placement_.id, FormatPciAddress(placement_.pci),
        transport_->bar_address(), transport_->bar_size(), placement_.irq,
        irq_->msix_enabled() ? "MSI-X on" : "MSI-X off",
        StatusBits(dev_->status()), transport_->guest_errors(),
        dev_->guest_errors());
  }

 private:
  absl::Status StartBackend(IoThread& io) {
    if (!backend_start) return absl::OkStatus();
    absl::StatusOr<std::unique_ptr<Worker>> w = backend_start(*dev_, io, mu_);
    if (!w.ok()) return w.status();
    worker_ = *std::move(w);
    return absl::OkStatus();
  }
  bool Decodes(uint64_t gpa) const {
    if (!transport_->memory_enabled()) return false;
    const uint64_t base = transport_->bar_address();
    return gpa >= base && gpa - base < transport_->bar_size();
  }

  // Keeps the notify ioeventfds at the BAR's current address: registered
  // while memory decoding is on, moved when the guest moves the BAR.
  void SyncNotify() {
    const bool on = transport_->memory_enabled();
    const uint64_t base = transport_->bar_address();
    if (on == notify_mapped_ && (!on || base == notify_base_)) return;
    UnmapNotify();
    if (!on || io_ == nullptr) return;
    if (base < vm_.ram_size()) {
      Logf(LogLevel::kWarning,
           "%s: guest placed BAR0 at 0x%x, inside RAM; it is shadowed",
           placement_.id, base);
    }
    for (uint16_t q = 0; q < kick_fds_.size(); ++q) {
      absl::Status s = vm_.SetIoEventFd(
          kick_fds_[q], base + transport_->NotifyAddress(q), 2, std::nullopt,
          true);
      if (!s.ok()) {
        Logf(LogLevel::kWarning,
             "%s: notify ioeventfd for queue %u: %s (kicks will exit)",
             placement_.id, q, s.ToString());
      }
    }
    notify_mapped_ = true;
    notify_base_ = base;
  }
  void UnmapNotify() {
    if (!notify_mapped_) return;
    for (uint16_t q = 0; q < kick_fds_.size(); ++q) {
      (void)vm_.SetIoEventFd(kick_fds_[q],
                             notify_base_ + transport_->NotifyAddress(q), 2,
                             std::nullopt, false);
    }
    notify_mapped_ = false;
  }

  Vm& vm_;
  std::shared_ptr<void> keepalive_;
  IoThread* io_ = nullptr;
  std::mutex mu_;
  PciSink sink_;
  std::unique_ptr<Interrupt> irq_;
  std::unique_ptr<Dev> dev_;
  std::unique_ptr<Transport> transport_;
  std::vector<int> kick_fds_;
  bool notify_mapped_ = false;
  uint64_t notify_base_ = 0;

 public:
  // Set by Make() before Init(); run by Start().
  BackendStart<Dev> backend_start;

 private:
  std::unique_ptr<Worker> worker_;  // last: stopped first
};

template <typename Dev, typename F>
absl::StatusOr<std::unique_ptr<VmmDevice>> Make(const DeviceSpec& spec,
                                                const Placement& p, Vm& vm,
                                                MsiRouter& router,
                                                std::shared_ptr<void> keep,
                                                uint16_t num_queues, F factory,
                                                BackendStart<Dev> start = {}) {
  if (p.transport == TransportKind::kMmio) {
    if constexpr (std::is_same_v<typename Dev::Interrupt,
                                 MmioTraits::Interrupt>) {
      auto slot = std::make_unique<MmioSlot<Dev>>(spec, p, vm, std::move(keep));
      slot->backend_start = std::move(start);
      absl::Status s = slot->Init(factory);
      if (!s.ok()) return s;
      return std::unique_ptr<VmmDevice>(std::move(slot));
    }
  } else {
    if constexpr (std::is_same_v<typename Dev::Interrupt,
                                 PciTraits::Interrupt>) {
      auto slot = std::make_unique<PciSlot<Dev>>(spec, p, vm, router,
                                                 std::move(keep));
      slot->backend_start = std::move(start);
      absl::Status s = slot->Init(num_queues, factory);
      if (!s.ok()) return s;
      return std::unique_ptr<VmmDevice>(std::move(slot));
    }
  }
  return absl::InternalError("transport/traits mismatch");
}

// Per-type constructors (devices_net.cc, devices_console.cc).
absl::StatusOr<std::unique_ptr<VmmDevice>> CreateNet(const DeviceSpec& spec,
                                                     const Placement& p, Vm& vm,
                                                     MsiRouter& router);
absl::StatusOr<std::unique_ptr<VmmDevice>> CreateConsole(
    const DeviceSpec& spec, const Placement& p, Vm& vm, MsiRouter& router);

}  // namespace slots
}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_SLOTS_H_
