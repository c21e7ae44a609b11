// virtio/mmio_spec.h — the virtio-mmio (version 2) register layout
// (VIRTIO 1.2 §4.2.2).
//
// Register offsets within a device's MMIO window and the identification
// values, with no dependencies beyond <cstdint>, so freestanding guest
// drivers can share them with MmioTransport (virtio/mmio_transport.h).
//
// Example:
//   uint32_t magic = read32(base + virtio::mmio::kMagicValue);
//   if (magic != virtio::mmio::kMagic) { /* not a virtio-mmio device */ }
#ifndef VIRTIO_MMIO_SPEC_H_
#define VIRTIO_MMIO_SPEC_H_

#include <cstdint>

namespace virtio {

namespace mmio {
inline constexpr uint64_t kMagicValue = 0x000;
inline constexpr uint64_t kVersion = 0x004;
inline constexpr uint64_t kDeviceId = 0x008;
inline constexpr uint64_t kVendorId = 0x00c;
inline constexpr uint64_t kDeviceFeatures = 0x010;
inline constexpr uint64_t kDeviceFeaturesSel = 0x014;
inline constexpr uint64_t kDriverFeatures = 0x020;
inline constexpr uint64_t kDriverFeaturesSel = 0x024;
inline constexpr uint64_t kQueueSel = 0x030;
inline constexpr uint64_t kQueueNumMax = 0x034;
inline constexpr uint64_t kQueueNum = 0x038;
inline constexpr uint64_t kQueueReady = 0x044;
inline constexpr uint64_t kQueueNotify = 0x050;
inline constexpr uint64_t kInterruptStatus = 0x060;
inline constexpr uint64_t kInterruptAck = 0x064;
inline constexpr uint64_t kStatus = 0x070;
inline constexpr uint64_t kQueueDescLow = 0x080;
inline constexpr uint64_t kQueueDescHigh = 0x084;
inline constexpr uint64_t kQueueDriverLow = 0x090;
inline constexpr uint64_t kQueueDriverHigh = 0x094;
inline constexpr uint64_t kQueueDeviceLow = 0x0a0;
inline constexpr uint64_t kQueueDeviceHigh = 0x0a4;
inline constexpr uint64_t kShmSel = 0x0ac;
inline constexpr uint64_t kShmLenLow = 0x0b0;
inline constexpr uint64_t kShmLenHigh = 0x0b4;
inline constexpr uint64_t kShmBaseLow = 0x0b8;
inline constexpr uint64_t kShmBaseHigh = 0x0bc;
inline constexpr uint64_t kQueueReset = 0x0c0;
inline constexpr uint64_t kConfigGeneration = 0x0fc;
inline constexpr uint64_t kConfig = 0x100;

// "virt" in little-endian byte order.
inline constexpr uint32_t kMagic = 0x74726976;
// The modern layout; version 1 is the legacy one, which we do not offer.
inline constexpr uint32_t kVersion2 = 2;
// Our VendorID: "LVIO" in little-endian byte order. Linux matches virtio
// drivers on the device ID only, so the value just names the implementation
// (QEMU's is "QEMU", 0x554D4551; we should not claim to be QEMU).
inline constexpr uint32_t kDefaultVendorId = 0x4F49564C;
}  // namespace mmio

}  // namespace virtio

#endif  // VIRTIO_MMIO_SPEC_H_
