// glue/kvm/vm.h — the KVM side of virtio-kvm: one VM with memfd-backed RAM,
// the in-kernel irqchip (PIC + IOAPIC + LAPIC) and optionally the in-kernel
// PIT, one or more vCPUs (vCPU 0 is the bootstrap processor, entered in flat
// 32-bit protected mode for the test guest or in 64-bit long mode for Linux;
// the others wait in the kernel for the guest's INIT/SIPI), and the three
// things the virtio traits map onto:
//
//   * guest memory   -> a GuestMemoryMap over the memfd mapping (memslot 0)
//   * kicks          -> KVM_IOEVENTFD (eventfds serviced by the I/O thread)
//   * interrupts     -> KVM_IRQFD: level lines with a resample fd (IrqLine),
//                       MSI through GSI routes (MsiRouter), with KVM_IRQ_LINE
//                       and KVM_SIGNAL_MSI as fallbacks where unsupported.
#ifndef LIBVIRTIO_GLUE_KVM_VM_H_
#define LIBVIRTIO_GLUE_KVM_VM_H_

#include "kvm_uapi.h"  // first: <linux/kvm.h> fixed for C++

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "virtio/guest_memory.h"

namespace kvmglue {

// Counters printed at exit: which KVM paths the run really exercised.
struct VmStats {
  std::atomic<uint64_t> mmio_exits{0};
  std::atomic<uint64_t> pio_exits{0};
  std::atomic<uint64_t> ioeventfd_kicks{0};
  std::atomic<uint64_t> irqfd_line_raises{0};
  std::atomic<uint64_t> irq_line_ioctls{0};
  std::atomic<uint64_t> resamples{0};
  std::atomic<uint64_t> msi_irqfd{0};
  std::atomic<uint64_t> msi_signal{0};
  std::atomic<uint64_t> backend_completions{0};
};

struct VmOptions {
  uint64_t ram_bytes = 0;
  // vCPUs; their APIC IDs are 0..vcpus-1 (CPUID reports them).
  int vcpus = 1;
  // The in-kernel i8254 PIT (and the port 0x61 speaker gate that Linux
  // calibrates against). The freestanding test guest does not need it.
  bool pit = false;
};

class Vm {
 public:
  static constexpr int kMaxVcpus = 8;

  // kUnavailable when /dev/kvm is missing or cannot create a VM (the test
  // harness turns that into a skip).
  static absl::StatusOr<std::unique_ptr<Vm>> Create(const VmOptions& options);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  uint8_t* ram() const { return ram_; }
  uint64_t ram_size() const { return ram_size_; }
  const virtio::GuestMemoryMap& memory() const { return memory_; }
  int vm_fd() const { return vm_fd_; }
  int num_vcpus() const { return static_cast<int>(vcpus_.size()); }
  int vcpu_fd(int i = 0) const { return vcpus_[i].fd; }
  kvm_run* run(int i = 0) const { return vcpus_[i].run; }
  VmStats& stats() { return stats_; }

  // Writes a GDT at kGdtAddr and puts vCPU 0 in flat 32-bit protected
  // mode (CR0.PE, 4 GiB code/data segments) at `entry` with `esp`.
  absl::Status EnterProtectedMode(uint32_t entry, uint32_t esp);

  // Puts vCPU 0 in 64-bit long mode as the Linux x86 64-bit boot protocol
  // asks: paging on with the first 4 GiB identity-mapped (2 MiB pages, the
  // tables written at `page_tables`, 6 pages), a GDT at `gdt` whose
  // selectors 0x10/0x18 are flat 64-bit code and data, interrupts off,
  // RIP = `entry`, RSI = `rsi` (the boot_params address).
  absl::Status EnterLongMode(uint64_t entry, uint64_t rsi, uint64_t gdt,
                             uint64_t page_tables);

  // ioeventfd: `fd` is signalled when the guest writes `len` bytes at
  // `addr` (with `datamatch`, only that value). `pio` for port I/O.
  absl::Status SetIoEventFd(int fd, uint64_t addr, uint32_t len,
                            std::optional<uint64_t> datamatch, bool assign,
                            bool pio = false);

  // irqfd on `gsi`; with resample_fd >= 0 a level-triggered irqfd.
  absl::Status SetIrqFd(int fd, uint32_t gsi, int resample_fd, bool assign);
  void SetIrqLineLevel(uint32_t gsi, bool level);
  bool has_irqfd_resample() const { return has_resample_; }

  // GSI routing: the default irqchip routes for GSIs 0..23 plus one MSI
  // route per entry in `msi`. Returns false if unsupported.
  struct MsiRoute {
    uint32_t gsi;
    uint64_t address;
    uint32_t data;
  };
  absl::Status SetMsiRoutes(const std::vector<MsiRoute>& msi);
  absl::Status SignalMsi(uint64_t address, uint32_t data);

  // Register dump of vCPU `i` for diagnostics after a crash.
  std::string DumpRegisters(int i = 0);

 private:
  Vm() = default;
  absl::Status AddVcpu(int apic_id, int count,
                       const std::vector<uint8_t>& cpuid);

  struct Vcpu {
    int fd = -1;
    kvm_run* run = nullptr;
  };
  int kvm_fd_ = -1;
  int vm_fd_ = -1;
  int mem_fd_ = -1;
  uint8_t* ram_ = nullptr;
  uint64_t ram_size_ = 0;
  std::vector<Vcpu> vcpus_;
  size_t run_size_ = 0;
  bool has_resample_ = false;
  virtio::GuestMemoryMap memory_;
  VmStats stats_;
};

// A level-triggered guest interrupt line (an IOAPIC pin). virtio-mmio's
// MmioInterrupt and virtio-pci's INTx drive it with Set(level).
//
// With KVM_CAP_IRQFD_RESAMPLE: Set(true) writes the irqfd (no ioctl); KVM
// drops the line when the guest EOIs and signals the resample fd, and the
// I/O thread re-raises it if the device still has something pending
// (Resample()). Without: KVM_IRQ_LINE on every level change.
class IrqLine {
 public:
  IrqLine() = default;
  IrqLine(Vm* vm, uint32_t gsi, int irqfd, int resamplefd)
      : vm_(vm), gsi_(gsi), irqfd_(irqfd), resamplefd_(resamplefd) {}
  void Set(bool asserted);
  // After the resample fd fired: re-raise if `still_pending`.
  void Resample(bool still_pending);
  int resamplefd() const { return resamplefd_; }
  uint32_t gsi() const { return gsi_; }

 private:
  Vm* vm_ = nullptr;
  uint32_t gsi_ = 0;
  int irqfd_ = -1;
  int resamplefd_ = -1;
};

// Turns (address, data) MSI messages into GSI routes with one irqfd each,
// created on first use, so steady-state interrupts are a single eventfd
// write. Thread-safe. Falls back to KVM_SIGNAL_MSI when routing fails.
class MsiRouter {
 public:
  explicit MsiRouter(Vm* vm) : vm_(vm) {}
  ~MsiRouter();
  void Send(uint64_t address, uint32_t data);
  // "yes" (irqfd + GSI route), "no" (KVM_SIGNAL_MSI), "unused".
  const char* routing_state() const;

 private:
  struct Route {
    uint64_t address;
    uint32_t data;
    uint32_t gsi;
    int fd;
  };
  static constexpr size_t kMaxRoutes = 64;
  static constexpr uint32_t kFirstMsiGsi = 24;

  Vm* vm_;
  std::mutex mu_;
  std::vector<Route> routes_;
  bool routing_ok_ = true;
};

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_VM_H_
