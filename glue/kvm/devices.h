// glue/kvm/devices.h — libvirtio devices wired to KVM.
//
// This is the whole of the "KVM hypervisor traits":
//
//   struct MmioTraits { using Memory = virtio::GuestMemoryMap;
//                       using Interrupt = virtio::MmioInterrupt<IrqLine>; };
//   struct PciTraits  { using Memory = virtio::GuestMemoryMap;
//                       using Interrupt = virtio::PciInterrupt<PciSink>; };
//
// plus two slot templates that own a device, its transport and its
// interrupt, route MMIO/config exits to the transport, and register the
// device's ioeventfds (kicks), irqfds and backend completion fds with the
// I/O thread. All virtio logic stays in the library.
//
// Locking: each slot has one mutex taken by the vCPU thread around every
// register access and by the I/O thread around Notify/CompleteRequests, so a
// reset (a Status write) never overlaps queue processing (device_core.h).
#ifndef LIBVIRTIO_GLUE_KVM_DEVICES_H_
#define LIBVIRTIO_GLUE_KVM_DEVICES_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "device_spec.h"
#include "io_thread.h"
#include "virtio/guest_memory.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/pci_interrupt.h"
#include "vm.h"

namespace kvmglue {

// virtio-pci interrupt delivery: MSI-X through the VM's MsiRouter (GSI route
// + irqfd per message), INTx on a level line.
struct PciSink {
  MsiRouter* router = nullptr;
  IrqLine intx;
  void SendMsi(uint64_t address, uint32_t data) { router->Send(address, data); }
  void SetIntx(bool asserted) { intx.Set(asserted); }
};

struct MmioTraits {
  using Memory = virtio::GuestMemoryMap;
  using Interrupt = virtio::MmioInterrupt<IrqLine>;
};
struct PciTraits {
  using Memory = virtio::GuestMemoryMap;
  using Interrupt = virtio::PciInterrupt<PciSink>;
};

// One device as the VMM's exit handlers see it.
class VmmDevice {
 public:
  virtual ~VmmDevice() = default;
  const Placement& placement() const { return placement_; }
  Placement& placement() { return placement_; }
  const DeviceSpec& spec() const { return spec_; }

  // An MMIO exit at `gpa`: false if the address is not this device's.
  virtual bool MmioRead(uint64_t gpa, uint32_t len, uint64_t* value) = 0;
  virtual bool MmioWrite(uint64_t gpa, uint32_t len, uint64_t value) = 0;
  // PCI configuration space of the function (PCI devices only).
  virtual uint32_t PciConfigRead(uint32_t offset, uint32_t size) = 0;
  virtual void PciConfigWrite(uint32_t offset, uint32_t size, uint32_t value) = 0;
  // BAR0 size (PCI devices only; 0 for mmio).
  virtual uint64_t bar_size() const = 0;
  // Moves BAR0 (before the guest runs: the VMM's placement).
  virtual void SetBarAddress(uint64_t address) = 0;
  virtual uint32_t device_id() const = 0;
  // Registers eventfds with KVM and the I/O thread. Before IoThread::Start.
  virtual absl::Status Start(IoThread& io) = 0;
  // One line for the exit report: status, errors seen.
  virtual std::string Summary() = 0;

 protected:
  VmmDevice(DeviceSpec spec, Placement placement)
      : spec_(std::move(spec)), placement_(std::move(placement)) {}
  DeviceSpec spec_;
  Placement placement_;
};

// Level lines through KVM_IRQ_LINE instead of irqfd + resamplefd
// (--irq-mode=line). Call before CreateDevice.
void UseIrqLineIoctl(bool on);

// Builds the device for `spec` at `placement` (BAR not yet placed).
absl::StatusOr<std::unique_ptr<VmmDevice>> CreateDevice(
    const DeviceSpec& spec, const Placement& placement, Vm& vm,
    MsiRouter& router);

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_DEVICES_H_
