// virtio/mmio_transport.h — the virtio-mmio transport, version 2 (VIRTIO 1.2
// §4.2): the register block a guest driver programs, mapped onto DeviceCore.
//
// MmioTransport turns 32-bit register reads and writes at offsets inside one
// MMIO region into calls on a DeviceCore-derived device: status, feature
// negotiation through 32-bit windows selected by DeviceFeaturesSel and
// DriverFeaturesSel, per-queue setup through QueueSel, kicks (QueueNotify),
// the interrupt status/acknowledge pair (the device's Interrupt must be an
// MmioInterrupt, see mmio_interrupt.h), and the device configuration space
// at 0x100. The glue only routes its MMIO exits for [base, base+kRegionSize)
// here and wires the MmioInterrupt's line to a guest IRQ.
//
// The region is 0x200 bytes, the size Linux and QEMU use for virtio-mmio:
// 0x100 bytes of registers and up to 0x100 bytes of device configuration,
// which holds every device this library implements (the constructor aborts
// on a device whose configuration would not fit, a host-side bug).
//
// The guest is hostile. Registers accept only 32-bit aligned accesses and
// the configuration space only 8/16/32-bit naturally aligned ones, as the
// spec requires of drivers (§4.2.2.2); anything else, writes to read-only
// registers, reads of write-only ones, unknown offsets and out-of-range
// selectors are logged (rate limited) and ignored, reads returning 0. No
// access can corrupt state, and the device model enforces the status
// ordering (a queue enabled before FEATURES_OK → DEVICE_NEEDS_RESET).
//
// Not implemented, because the device never offers the feature that enables
// them: queue reset (VIRTIO_F_RING_RESET; QueueReset reads 0, and writing 0
// to QueueReady of a live queue is ignored), shared memory regions (SHMLen
// reads -1, "no such region"), and notification data (QueueNotify carries
// only the queue index; its upper 16 bits are ignored).
//
// Threads: Read/Write may be called from several vCPU threads at once.
// Register state is guarded by an internal lock; register reads and
// QueueNotify take it shared (kicks add a per-queue lock, a ring having one
// consumer), so kicks on different queues are processed in parallel but
// never overlap a reset, a queue being enabled or a configuration access;
// InterruptStatus/InterruptACK
// take no lock, so the interrupt handler never waits for a queue being
// processed. A glue that delivers kicks elsewhere (ioeventfd → its own
// queue threads calling device.Notify) must stop those threads around
// resets itself, as device_core.h says.
//
// Example (a KVM-style MMIO exit handler):
//   virtio::MmioInterrupt<IrqfdLine> irq(IrqfdLine{irqfd});
//   RngDevice<Traits> rng(memory, irq, {});
//   virtio::MmioTransport<RngDevice<Traits>> mmio(rng);
//   cmdline += " " + mmio.KernelCmdline(0xd0000000, 5);
//   ...
//   if (run->mmio.is_write) mmio.Write(addr - base, len, value);
//   else value = mmio.Read(addr - base, len);
#ifndef VIRTIO_MMIO_TRANSPORT_H_
#define VIRTIO_MMIO_TRANSPORT_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <type_traits>

#include "absl/strings/str_format.h"
#include "virtio/log.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_spec.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio {

// Register offsets of the version 2 ("modern") layout (§4.2.2).
// Per-instance settings of an MmioTransport, e.g.
//   virtio::MmioTransport<Dev> mmio(dev, {.vendor_id = 0x1af4});
struct MmioTransportOptions {
  // What the VendorID register reads.
  uint32_t vendor_id = mmio::kDefaultVendorId;
};

namespace internal {
template <typename T>
struct IsMmioInterrupt : std::false_type {};
template <typename L>
struct IsMmioInterrupt<MmioInterrupt<L>> : std::true_type {};
}  // namespace internal

template <typename Device>
class MmioTransport {
 public:
  using Interrupt = typename Device::Interrupt;
  static_assert(internal::IsMmioInterrupt<Interrupt>::value,
                "MmioTransport needs a device whose traits' Interrupt is an "
                "MmioInterrupt<Line>: InterruptStatus lives there");

  // Bytes of guest-physical address space the device occupies.
  static constexpr uint64_t kRegionSize = 0x200;
  // Largest device configuration space that fits in the region.
  static constexpr uint32_t kMaxConfigSize =
      static_cast<uint32_t>(kRegionSize - mmio::kConfig);

  explicit MmioTransport(Device& device, MmioTransportOptions options = {})
      : device_(device),
        options_(options),
        queue_mu_(std::make_unique<std::mutex[]>(device.num_queues())) {
    if (device_.config_size() > kMaxConfigSize) {
      Logf(LogLevel::kError,
           "%s: %u-byte configuration space does not fit the %u bytes a "
           "virtio-mmio region has",
           device_.name(), device_.config_size(), kMaxConfigSize);
      std::abort();
    }
  }

  MmioTransport(const MmioTransport&) = delete;
  MmioTransport& operator=(const MmioTransport&) = delete;

  // A guest read of `size` bytes at `offset` into the region. Invalid
  // accesses read 0.
  uint32_t Read(uint64_t offset, uint32_t size) {
    if (offset >= mmio::kConfig) return ReadConfig(offset, size);
    if (!RegisterAccessOk(offset, size, "read")) return 0;
    switch (offset) {
      case mmio::kInterruptStatus:
        return device_.interrupt().status();
      default:
        break;
    }
    // Shared: reads change nothing, and a vCPU polling Status must not wait
    // for a kick being processed on another one.
    std::shared_lock<std::shared_mutex> lock(mu_);
    switch (offset) {
      case mmio::kMagicValue:
        return mmio::kMagic;
      case mmio::kVersion:
        return mmio::kVersion2;
      case mmio::kDeviceId:
        return device_.device_id();
      case mmio::kVendorId:
        return options_.vendor_id;
      case mmio::kDeviceFeatures:
        return FeatureWindow(device_.device_features(), device_features_sel_);
      case mmio::kQueueNumMax:
        return QueueExists() ? device_.queue_max_size(Queue()) : 0;
      case mmio::kQueueReady:
        return QueueExists() && device_.queue_enabled(Queue()) ? 1 : 0;
      case mmio::kStatus:
        return device_.status();
      case mmio::kShmLenLow:
      case mmio::kShmLenHigh:
      case mmio::kShmBaseLow:
      case mmio::kShmBaseHigh:
        // A length of -1 means "no region with this ID" (§4.2.2); we have
        // none. The base is meaningless then; all ones keeps it consistent.
        return 0xffffffff;
      case mmio::kQueueReset:
        return 0;  // VIRTIO_F_RING_RESET is never offered
      case mmio::kConfigGeneration:
        return device_.config_generation();
      case mmio::kDeviceFeaturesSel:
      case mmio::kDriverFeatures:
      case mmio::kDriverFeaturesSel:
      case mmio::kQueueSel:
      case mmio::kQueueNum:
      case mmio::kQueueNotify:
      case mmio::kInterruptAck:
      case mmio::kQueueDescLow:
      case mmio::kQueueDescHigh:
      case mmio::kQueueDriverLow:
      case mmio::kQueueDriverHigh:
      case mmio::kQueueDeviceLow:
      case mmio::kQueueDeviceHigh:
      case mmio::kShmSel:
        GuestError("read of write-only register 0x%03x", offset);
        return 0;
      default:
        GuestError("read of unknown register 0x%03x", offset);
        return 0;
    }
  }

  // A guest write of `size` bytes (the low bytes of `value`) at `offset`.
  void Write(uint64_t offset, uint32_t size, uint32_t value) {
    if (offset >= mmio::kConfig) {
      WriteConfig(offset, size, value);
      return;
    }
    if (!RegisterAccessOk(offset, size, "write")) return;
    switch (offset) {
      case mmio::kQueueNotify:
        Notify(value);
        return;
      case mmio::kInterruptAck:
        device_.interrupt().Acknowledge(value);
        return;
      default:
        break;
    }
    std::unique_lock<std::shared_mutex> lock(mu_);
    switch (offset) {
      case mmio::kDeviceFeaturesSel:
        device_features_sel_ = value;
        return;
      case mmio::kDriverFeatures:
        WriteDriverFeatures(value);
        return;
      case mmio::kDriverFeaturesSel:
        driver_features_sel_ = value;
        return;
      case mmio::kQueueSel:
        queue_sel_ = value;
        return;
      case mmio::kQueueNum:
        if (QueueConfig* cfg = WritableQueueConfig("QueueNum")) {
          cfg->size = value;
        }
        return;
      case mmio::kQueueReady:
        WriteQueueReady(value);
        return;
      case mmio::kStatus:
        WriteStatus(value);
        return;
      case mmio::kQueueDescLow:
      case mmio::kQueueDescHigh:
      case mmio::kQueueDriverLow:
      case mmio::kQueueDriverHigh:
      case mmio::kQueueDeviceLow:
      case mmio::kQueueDeviceHigh:
        WriteQueueAddress(offset, value);
        return;
      case mmio::kShmSel:
        shm_sel_ = value;
        return;
      case mmio::kQueueReset:
        GuestError("QueueReset write without VIRTIO_F_RING_RESET; ignored");
        return;
      case mmio::kMagicValue:
      case mmio::kVersion:
      case mmio::kDeviceId:
      case mmio::kVendorId:
      case mmio::kDeviceFeatures:
      case mmio::kQueueNumMax:
      case mmio::kInterruptStatus:
      case mmio::kShmLenLow:
      case mmio::kShmLenHigh:
      case mmio::kShmBaseLow:
      case mmio::kShmBaseHigh:
      case mmio::kConfigGeneration:
        GuestError("write of 0x%x to read-only register 0x%03x; ignored",
                   value, offset);
        return;
      default:
        GuestError("write of 0x%x to unknown register 0x%03x; ignored", value,
                   offset);
        return;
    }
  }

  // How to declare this device to a Linux guest without a device tree or
  // ACPI: "virtio_mmio.device=<size>@<base>:<irq>" (needs
  // CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), e.g.
  // "virtio_mmio.device=0x200@0xd0000000:5".
  static std::string KernelCmdline(uint64_t base, uint32_t irq) {
    return absl::StrFormat("virtio_mmio.device=0x%x@0x%x:%u", kRegionSize,
                           base, irq);
  }

  Device& device() { return device_; }
  const MmioTransportOptions& options() const { return options_; }

  // Selector state, for tests and for saving device state.
  uint32_t device_features_sel() const { return Locked(device_features_sel_); }
  uint32_t driver_features_sel() const { return Locked(driver_features_sel_); }
  uint32_t queue_sel() const { return Locked(queue_sel_); }
  uint32_t shm_sel() const { return Locked(shm_sel_); }
  // Bad register accesses seen (logged or suppressed). Configuration-space
  // range errors and device-model errors are counted by the device instead.
  uint64_t guest_errors() const { return guest_errors_.count(); }

 private:
  template <typename... Args>
  void GuestError(const absl::FormatSpec<Args...>& format,
                  const Args&... args) {
    // Format only what gets logged: a guest hammering a bad register must
    // not cost a string per access.
    if (guest_errors_.Allow()) {
      Logf(LogLevel::kWarning, "%s: virtio-mmio: %s", device_.name(),
           absl::StrFormat(format, args...));
    }
  }

  uint32_t Locked(const uint32_t& field) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return field;
  }

  bool RegisterAccessOk(uint64_t offset, uint32_t size, const char* what) {
    if (size == 4 && offset % 4 == 0) return true;
    GuestError("%u-byte %s at register offset 0x%03x (registers are 32-bit "
               "aligned); ignored",
               size, what, offset);
    return false;
  }

  // Configuration space: 8/16/32-bit naturally aligned accesses only; a
  // 64-bit field is read as two 32-bit halves under the generation counter.
  bool ConfigAccessOk(uint64_t offset, uint32_t size, const char* what) {
    if (offset < kRegionSize && (size == 1 || size == 2 || size == 4) &&
        offset % size == 0) {
      return true;
    }
    GuestError("%u-byte config %s at offset 0x%x (outside the region or "
               "not an aligned 1/2/4-byte access); ignored",
               size, what, offset);
    return false;
  }

  uint32_t ReadConfig(uint64_t offset, uint32_t size) {
    if (!ConfigAccessOk(offset, size, "read")) return 0;
    // Exclusive: device config callbacks are not required to be reentrant.
    std::unique_lock<std::shared_mutex> lock(mu_);
    uint32_t value = 0;  // little-endian host (spec.h asserts it)
    device_.ReadConfig(static_cast<uint32_t>(offset - mmio::kConfig), &value,
                       size);
    return value;
  }

  void WriteConfig(uint64_t offset, uint32_t size, uint32_t value) {
    if (!ConfigAccessOk(offset, size, "write")) return;
    std::unique_lock<std::shared_mutex> lock(mu_);
    device_.WriteConfig(static_cast<uint32_t>(offset - mmio::kConfig), &value,
                        size);
  }

  static uint32_t FeatureWindow(uint64_t features, uint32_t sel) {
    if (sel > 1) return 0;  // no feature bits above 63
    return static_cast<uint32_t>(features >> (32 * sel));
  }

  void WriteDriverFeatures(uint32_t value) {
    if (driver_features_sel_ > 1) {
      if (value != 0) {
        GuestError("driver features 0x%x in window %u (beyond bit 63); "
                   "ignored",
                   value, driver_features_sel_);
      }
      return;
    }
    // The device model holds the only copy; a window write replaces one
    // half. After FEATURES_OK the device refuses (and logs) the change.
    const unsigned shift = 32 * driver_features_sel_;
    const uint64_t mask = uint64_t{0xffffffff} << shift;
    const uint64_t features = (device_.driver_features() & ~mask) |
                              (uint64_t{value} << shift);
    device_.SetDriverFeatures(features);
  }

  // Compared as 32-bit: QueueSel 0x10000 must not alias queue 0.
  bool QueueExists() const { return queue_sel_ < device_.num_queues(); }
  uint16_t Queue() const { return static_cast<uint16_t>(queue_sel_); }

  // The selected queue's pending configuration, or nullptr (logged) if the
  // queue does not exist or is live: a running ring must not move.
  QueueConfig* WritableQueueConfig(const char* reg) {
    if (!QueueExists()) {
      GuestError("%s write for nonexistent queue %u; ignored", reg,
                 queue_sel_);
      return nullptr;
    }
    QueueConfig* cfg = device_.queue_config(Queue());
    if (cfg == nullptr) {
      GuestError("%s write for enabled queue %u; ignored", reg, queue_sel_);
    }
    return cfg;
  }

  void WriteQueueAddress(uint64_t offset, uint32_t value) {
    const char* reg = "";
    uint64_t QueueConfig::*field = nullptr;
    switch (offset & ~uint64_t{7}) {
      case mmio::kQueueDescLow:
        reg = "QueueDesc";
        field = &QueueConfig::desc_addr;
        break;
      case mmio::kQueueDriverLow:
        reg = "QueueDriver";
        field = &QueueConfig::driver_addr;
        break;
      default:
        reg = "QueueDevice";
        field = &QueueConfig::device_addr;
        break;
    }
    QueueConfig* cfg = WritableQueueConfig(reg);
    if (cfg == nullptr) return;
    const unsigned shift = (offset & 4) ? 32 : 0;
    const uint64_t mask = uint64_t{0xffffffff} << shift;
    cfg->*field = (cfg->*field & ~mask) | (uint64_t{value} << shift);
  }

  void WriteQueueReady(uint32_t value) {
    if (!QueueExists()) {
      GuestError("QueueReady write of %u for nonexistent queue %u; ignored",
                 value, queue_sel_);
      return;
    }
    const uint16_t q = Queue();
    if (value == 1) {
      // Validates the setup; a bad one puts the device in NEEDS_RESET.
      device_.EnableQueue(q);
    } else if (value == 0) {
      // Stopping a live queue is a queue reset, which needs
      // VIRTIO_F_RING_RESET; Linux writes 0 only to queues that a device
      // reset already stopped, which is a no-op.
      if (device_.queue_enabled(q)) {
        GuestError("QueueReady=0 for live queue %u without "
                   "VIRTIO_F_RING_RESET; ignored",
                   q);
      }
    } else {
      GuestError("QueueReady write of %u (not 0 or 1); ignored", value);
    }
  }

  void WriteStatus(uint32_t value) {
    if (value > 0xff) {
      GuestError("Status write of 0x%x (beyond 8 bits); ignored", value);
      return;
    }
    if (value == 0) {
      // The device first finishes or cancels in-flight requests, which may
      // still raise the used-buffer bit; only then is the slate wiped.
      device_.SetStatus(0);
      device_.interrupt().Reset();
      device_features_sel_ = 0;
      driver_features_sel_ = 0;
      queue_sel_ = 0;
      shm_sel_ = 0;
      return;
    }
    device_.SetStatus(static_cast<uint8_t>(value));
  }

  void Notify(uint32_t value) {
    if ((value >> 16) != 0 &&
        !(device_.device_features() &
          spec::Bit(spec::kFeatureNotificationData))) {
      GuestError("QueueNotify value 0x%x has notification data, which was "
                 "not offered; using queue %u",
                 value, value & 0xffff);
    }
    const uint16_t q = static_cast<uint16_t>(value & 0xffff);
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (q >= device_.num_queues()) {
      device_.Notify(q);  // logs the nonexistent queue
      return;
    }
    // Two vCPUs may kick the same queue at once; a ring has one consumer.
    std::lock_guard<std::mutex> queue_lock(queue_mu_[q]);
    device_.Notify(q);
  }

  Device& device_;
  const MmioTransportOptions options_;
  // Exclusive for register state and setup; shared for kicks (see top).
  mutable std::shared_mutex mu_;
  // One per queue: serializes kicks of the same queue from several vCPUs.
  std::unique_ptr<std::mutex[]> queue_mu_;
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint32_t queue_sel_ = 0;
  uint32_t shm_sel_ = 0;
  GuestErrorLimiter guest_errors_;
};

}  // namespace virtio

#endif  // VIRTIO_MMIO_TRANSPORT_H_
