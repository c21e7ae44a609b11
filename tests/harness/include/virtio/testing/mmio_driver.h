// virtio/testing/mmio_driver.h — a register-level virtio-mmio guest driver.
//
// MmioDriver programs a virtio-mmio register block the way Linux's
// drivers/virtio/virtio_mmio.c and virtio.c do, step by step and in the
// same order, so a transport (or a whole glue: a KVM or Xen simulation
// routing guest MMIO) is tested against the sequence real guests produce:
//
//   Probe      magic "virt", version 2, device ID (0 = placeholder, no
//              device), vendor ID
//   Reset      Status=0, then read Status back until it is 0
//   Negotiate  ACKNOWLEDGE, DRIVER, 64-bit DeviceFeatures through
//              DeviceFeaturesSel 0/1, DriverFeatures (the caller's wish
//              intersected with the offer) through DriverFeaturesSel 0/1,
//              FEATURES_OK, re-read Status to see that the device kept it
//   SetUpQueue QueueSel, QueueReady must read 0, QueueNumMax (0 = no such
//              queue), QueueNum, the three ring addresses low/high,
//              QueueReady=1
//   DriverOk   DRIVER_OK
//
// plus the run-time operations: kicks (QueueNotify), the interrupt handler
// (read InterruptStatus, write InterruptACK) and configuration reads inside
// the generation-counter retry loop of virtio_cread(), with accesses split
// the way vm_get() splits them (64-bit fields as two 32-bit reads).
//
// It works over any object with the transport's access signature (the
// `MmioRegisterAccess` concept), so glue tests can hand it their own bus:
//
//   virtio::MmioTransport<EchoDevice> mmio(dev);
//   virtio::testing::MmioDriver driver(mmio);
//   ASSERT_TRUE(driver.Probe().ok());
//   ASSERT_TRUE(driver.Reset().ok());
//   absl::StatusOr<uint64_t> f = driver.Negotiate(wanted_features);
//   virtio::testing::SplitDriver ring(mem, 16);
//   ASSERT_TRUE(driver.SetUpQueue(0, ring.config()).ok());
//   ASSERT_TRUE(driver.DriverOk().ok());
//   ring.Add(...); if (ring.Kick()) driver.Kick(0);
//   uint32_t causes = driver.HandleInterrupt();
//
// RecordingIrqLine is an IrqLine (mmio_interrupt.h) that records the level
// and the transitions, for MmioInterrupt in tests.
#ifndef VIRTIO_TESTING_MMIO_DRIVER_H_
#define VIRTIO_TESTING_MMIO_DRIVER_H_

#include <concepts>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/mmio_transport.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio::testing {

// A virtio-mmio register block as the guest sees it: offsets are relative
// to the region base, sizes 1/2/4 (8 for probing misuse).
template <typename R>
concept MmioRegisterAccess =
    requires(R& regs, uint64_t offset, uint32_t size, uint32_t value) {
      { regs.Read(offset, size) } -> std::convertible_to<uint32_t>;
      { regs.Write(offset, size, value) };
    };

// An interrupt line that remembers its level and counts edges.
class RecordingIrqLine {
 public:
  void Set(bool asserted) {
    if (asserted && !level_) ++raises_;
    if (!asserted && level_) ++lowers_;
    level_ = asserted;
    ++sets_;
  }
  bool level() const { return level_; }
  // Low→high and high→low transitions seen.
  uint64_t raises() const { return raises_; }
  uint64_t lowers() const { return lowers_; }
  // Set() calls, including ones that did not change the level.
  uint64_t sets() const { return sets_; }

 private:
  bool level_ = false;
  uint64_t raises_ = 0;
  uint64_t lowers_ = 0;
  uint64_t sets_ = 0;
};

template <MmioRegisterAccess Regs>
class MmioDriver {
 public:
  // Bounded waits where Linux would sleep and retry forever: a test must
  // fail, not hang, when a device misbehaves.
  static constexpr int kMaxResetPolls = 1000;
  static constexpr int kMaxGenerationRetries = 100;

  explicit MmioDriver(Regs& regs) : regs_(regs) {}

  // --- Raw access ---------------------------------------------------------
  uint32_t Read32(uint64_t offset) { return regs_.Read(offset, 4); }
  void Write32(uint64_t offset, uint32_t value) {
    regs_.Write(offset, 4, value);
  }
  uint8_t status() { return static_cast<uint8_t>(Read32(mmio::kStatus)); }
  Regs& regs() { return regs_; }

  // --- Bring-up, as virtio_mmio_probe() + virtio_dev_probe() ---------------
  absl::Status Probe() {
    const uint32_t magic = Read32(mmio::kMagicValue);
    if (magic != mmio::kMagic) {
      return absl::NotFoundError(absl::StrFormat("bad magic 0x%08x", magic));
    }
    version_ = Read32(mmio::kVersion);
    if (version_ != mmio::kVersion2) {
      return absl::UnimplementedError(
          absl::StrFormat("version %u (only 2 is supported)", version_));
    }
    device_id_ = Read32(mmio::kDeviceId);
    if (device_id_ == 0) {
      return absl::NotFoundError("device ID 0: placeholder, no device");
    }
    vendor_id_ = Read32(mmio::kVendorId);
    return absl::OkStatus();
  }
  uint32_t device_id() const { return device_id_; }
  uint32_t vendor_id() const { return vendor_id_; }

  // vm_reset(): write 0, then wait for the device to finish resetting.
  absl::Status Reset() {
    Write32(mmio::kStatus, 0);
    for (int i = 0; i < kMaxResetPolls; ++i) {
      if (status() == 0) return absl::OkStatus();
    }
    return absl::DeadlineExceededError("status never read back 0 after reset");
  }

  // ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK. Returns the
  // negotiated features (`wanted` & offered).
  absl::StatusOr<uint64_t> Negotiate(uint64_t wanted) {
    AddStatus(spec::kStatusAcknowledge);
    AddStatus(spec::kStatusDriver);
    device_features_ = ReadDeviceFeatures();
    // vm_finalize_features(): a version 2 device must offer VERSION_1.
    if (!(device_features_ & spec::Bit(spec::kFeatureVersion1))) {
      return absl::FailedPreconditionError(
          "version 2 device without VIRTIO_F_VERSION_1");
    }
    driver_features_ = wanted & device_features_;
    Write32(mmio::kDriverFeaturesSel, 1);
    Write32(mmio::kDriverFeatures, static_cast<uint32_t>(driver_features_ >> 32));
    Write32(mmio::kDriverFeaturesSel, 0);
    Write32(mmio::kDriverFeatures, static_cast<uint32_t>(driver_features_));
    AddStatus(spec::kStatusFeaturesOk);
    if (!(status() & spec::kStatusFeaturesOk)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "device did not accept features 0x%x", driver_features_));
    }
    return driver_features_;
  }
  uint64_t device_features() const { return device_features_; }
  uint64_t driver_features() const { return driver_features_; }

  // vm_get_features(): high window first, as Linux does.
  uint64_t ReadDeviceFeatures() {
    Write32(mmio::kDeviceFeaturesSel, 1);
    uint64_t f = uint64_t{Read32(mmio::kDeviceFeatures)} << 32;
    Write32(mmio::kDeviceFeaturesSel, 0);
    f |= Read32(mmio::kDeviceFeatures);
    return f;
  }

  // vm_setup_vq() for queue `index` with the rings described by `ring`
  // (a SplitDriver's or PackedDriver's config()).
  absl::Status SetUpQueue(uint16_t index, const QueueConfig& ring) {
    Write32(mmio::kQueueSel, index);
    if (Read32(mmio::kQueueReady) != 0) {
      return absl::AlreadyExistsError(
          absl::StrFormat("queue %u is already ready", index));
    }
    const uint32_t max = Read32(mmio::kQueueNumMax);
    if (max == 0) {
      return absl::NotFoundError(absl::StrFormat("queue %u: no such queue", index));
    }
    if (ring.size > max) {
      return absl::OutOfRangeError(absl::StrFormat(
          "queue %u: ring of %u entries above QueueNumMax %u", index,
          ring.size, max));
    }
    Write32(mmio::kQueueNum, ring.size);
    WriteAddress(mmio::kQueueDescLow, ring.desc_addr);
    WriteAddress(mmio::kQueueDriverLow, ring.driver_addr);
    WriteAddress(mmio::kQueueDeviceLow, ring.device_addr);
    Write32(mmio::kQueueReady, 1);
    if (Read32(mmio::kQueueReady) != 1) {
      return absl::InternalError(absl::StrFormat(
          "queue %u: QueueReady did not stick (status 0x%x)", index, status()));
    }
    return absl::OkStatus();
  }

  // virtio_device_ready().
  absl::Status DriverOk() {
    AddStatus(spec::kStatusDriverOk);
    const uint8_t s = status();
    if (!(s & spec::kStatusDriverOk) || (s & spec::kStatusDeviceNeedsReset)) {
      return absl::InternalError(
          absl::StrFormat("device not live after DRIVER_OK: status 0x%x", s));
    }
    return absl::OkStatus();
  }

  // --- Run time -----------------------------------------------------------
  // vm_notify().
  void Kick(uint16_t queue) { Write32(mmio::kQueueNotify, queue); }

  // vm_interrupt(): reads and acknowledges the pending causes, returning
  // them (kMmioInterruptUsedBuffer | kMmioInterruptConfigChange).
  uint32_t HandleInterrupt() {
    const uint32_t causes = Read32(mmio::kInterruptStatus);
    Write32(mmio::kInterruptAck, causes);
    return causes;
  }

  uint32_t config_generation() { return Read32(mmio::kConfigGeneration); }

  // virtio_cread_bytes()/virtio_cread(): reads `len` bytes of configuration
  // at `offset` with accesses of `width` bytes (1, 2, 4 or 8; 8 = two
  // 32-bit reads, as vm_get() does), retrying while the generation changes.
  absl::Status ReadConfig(uint32_t offset, void* data, uint32_t len,
                          uint32_t width = 1) {
    if (width != 1 && width != 2 && width != 4 && width != 8) {
      return absl::InvalidArgumentError("width must be 1, 2, 4 or 8");
    }
    if (len % width != 0) {
      return absl::InvalidArgumentError("len must be a multiple of width");
    }
    for (int attempt = 0; attempt < kMaxGenerationRetries; ++attempt) {
      const uint32_t before = config_generation();
      auto* out = static_cast<uint8_t*>(data);
      for (uint32_t i = 0; i < len; i += width) {
        const uint64_t at = mmio::kConfig + offset + i;
        if (width == 8) {
          const uint32_t lo = regs_.Read(at, 4);
          const uint32_t hi = regs_.Read(at + 4, 4);
          std::memcpy(out + i, &lo, 4);
          std::memcpy(out + i + 4, &hi, 4);
        } else {
          const uint32_t v = regs_.Read(at, width);
          std::memcpy(out + i, &v, width);  // little-endian host
        }
      }
      if (config_generation() == before) {
        last_config_attempts_ = attempt + 1;
        return absl::OkStatus();
      }
    }
    return absl::DeadlineExceededError(
        "configuration generation kept changing");
  }
  // Reads one field of type T (1, 2, 4 or 8 bytes) with one access of its
  // size (two for 8 bytes).
  template <typename T>
  absl::StatusOr<T> ReadConfigField(uint32_t offset) {
    static_assert(sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 ||
                  sizeof(T) == 8);
    T value{};
    absl::Status s = ReadConfig(offset, &value, sizeof(T), sizeof(T));
    if (!s.ok()) return s;
    return value;
  }
  // Reads during the last successful ReadConfig (1 = no retry needed).
  int last_config_attempts() const { return last_config_attempts_; }

  // vm_set(): one access of `width` bytes (1, 2 or 4).
  void WriteConfig(uint32_t offset, uint32_t width, uint32_t value) {
    regs_.Write(mmio::kConfig + offset, width, value);
  }

 private:
  // virtio_add_status(): read-modify-write, as Linux does.
  void AddStatus(uint8_t bit) {
    Write32(mmio::kStatus, static_cast<uint32_t>(status() | bit));
  }
  void WriteAddress(uint64_t low_offset, uint64_t addr) {
    Write32(low_offset, static_cast<uint32_t>(addr));
    Write32(low_offset + 4, static_cast<uint32_t>(addr >> 32));
  }

  Regs& regs_;
  uint32_t version_ = 0;
  uint32_t device_id_ = 0;
  uint32_t vendor_id_ = 0;
  uint64_t device_features_ = 0;
  uint64_t driver_features_ = 0;
  int last_config_attempts_ = 0;
};

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_MMIO_DRIVER_H_
