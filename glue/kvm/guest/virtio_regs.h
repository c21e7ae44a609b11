// glue/kvm/guest/virtio_regs.h — virtio-mmio and virtio-pci register
// offsets for the freestanding guest driver.
//
// The library defines these in virtio/mmio_transport.h and
// virtio/pci_transport.h, which pull in absl and the C++ library and so
// cannot be included by a -ffreestanding -nostdlib guest. They are repeated
// here and kvm_glue_test static_asserts every one against the library's, so
// the two cannot drift. (The ring layouts, status and feature bits come
// straight from virtio/spec.h and virtio/blk_spec.h, which are
// freestanding-safe.)
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_REGS_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_REGS_H_

#include <cstdint>

namespace guest {

namespace mmio {
inline constexpr uint32_t kMagicValue = 0x000;
inline constexpr uint32_t kVersion = 0x004;
inline constexpr uint32_t kDeviceId = 0x008;
inline constexpr uint32_t kVendorId = 0x00c;
inline constexpr uint32_t kDeviceFeatures = 0x010;
inline constexpr uint32_t kDeviceFeaturesSel = 0x014;
inline constexpr uint32_t kDriverFeatures = 0x020;
inline constexpr uint32_t kDriverFeaturesSel = 0x024;
inline constexpr uint32_t kQueueSel = 0x030;
inline constexpr uint32_t kQueueNumMax = 0x034;
inline constexpr uint32_t kQueueNum = 0x038;
inline constexpr uint32_t kQueueReady = 0x044;
inline constexpr uint32_t kQueueNotify = 0x050;
inline constexpr uint32_t kInterruptStatus = 0x060;
inline constexpr uint32_t kInterruptAck = 0x064;
inline constexpr uint32_t kStatus = 0x070;
inline constexpr uint32_t kQueueDescLow = 0x080;
inline constexpr uint32_t kQueueDescHigh = 0x084;
inline constexpr uint32_t kQueueDriverLow = 0x090;
inline constexpr uint32_t kQueueDriverHigh = 0x094;
inline constexpr uint32_t kQueueDeviceLow = 0x0a0;
inline constexpr uint32_t kQueueDeviceHigh = 0x0a4;
inline constexpr uint32_t kConfigGeneration = 0x0fc;
inline constexpr uint32_t kConfig = 0x100;
inline constexpr uint32_t kMagic = 0x74726976;  // "virt"
inline constexpr uint32_t kVersion2 = 2;
}  // namespace mmio

namespace pci {
inline constexpr uint16_t kVendorId = 0x1af4;
inline constexpr uint16_t kDeviceIdBase = 0x1040;
inline constexpr uint32_t kCfgVendorId = 0x00;
inline constexpr uint32_t kCfgDeviceId = 0x02;
inline constexpr uint32_t kCfgCommand = 0x04;
inline constexpr uint32_t kCfgStatus = 0x06;
inline constexpr uint32_t kCfgBar0 = 0x10;
inline constexpr uint32_t kCfgBar1 = 0x14;
inline constexpr uint32_t kCfgCapabilityPointer = 0x34;
inline constexpr uint32_t kCfgInterruptLine = 0x3c;
inline constexpr uint16_t kCommandMemorySpace = 1 << 1;
inline constexpr uint16_t kCommandBusMaster = 1 << 2;
inline constexpr uint16_t kCommandIntxDisable = 1 << 10;
inline constexpr uint16_t kStatusCapabilityList = 1 << 4;
inline constexpr uint8_t kCapIdVendor = 0x09;
inline constexpr uint8_t kCapIdMsix = 0x11;
inline constexpr uint8_t kCapCommonCfg = 1;
inline constexpr uint8_t kCapNotifyCfg = 2;
inline constexpr uint8_t kCapIsrCfg = 3;
inline constexpr uint8_t kCapDeviceCfg = 4;
inline constexpr uint32_t kCapNext = 1;
inline constexpr uint32_t kCapCfgType = 3;
inline constexpr uint32_t kCapBar = 4;
inline constexpr uint32_t kCapOffset = 8;
inline constexpr uint32_t kCapNotifyMultiplier = 16;
inline constexpr uint32_t kMsixControl = 2;
inline constexpr uint32_t kMsixTable = 4;
inline constexpr uint16_t kMsixControlEnable = 1 << 15;
inline constexpr uint16_t kMsixControlFunctionMask = 1 << 14;
inline constexpr uint16_t kMsixControlTableSizeMask = 0x7ff;
inline constexpr uint32_t kMsixEntrySize = 16;
inline constexpr uint32_t kMsixEntryMaskBit = 1;
inline constexpr uint16_t kNoVector = 0xffff;
inline constexpr uint8_t kIsrQueue = 1;
inline constexpr uint8_t kIsrConfig = 2;
// struct virtio_pci_common_cfg
inline constexpr uint32_t kCommonDeviceFeatureSelect = 0x00;
inline constexpr uint32_t kCommonDeviceFeature = 0x04;
inline constexpr uint32_t kCommonDriverFeatureSelect = 0x08;
inline constexpr uint32_t kCommonDriverFeature = 0x0c;
inline constexpr uint32_t kCommonConfigMsixVector = 0x10;
inline constexpr uint32_t kCommonNumQueues = 0x12;
inline constexpr uint32_t kCommonDeviceStatus = 0x14;
inline constexpr uint32_t kCommonConfigGeneration = 0x15;
inline constexpr uint32_t kCommonQueueSelect = 0x16;
inline constexpr uint32_t kCommonQueueSize = 0x18;
inline constexpr uint32_t kCommonQueueMsixVector = 0x1a;
inline constexpr uint32_t kCommonQueueEnable = 0x1c;
inline constexpr uint32_t kCommonQueueNotifyOff = 0x1e;
inline constexpr uint32_t kCommonQueueDesc = 0x20;
inline constexpr uint32_t kCommonQueueDriver = 0x28;
inline constexpr uint32_t kCommonQueueDevice = 0x30;
}  // namespace pci

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_REGS_H_
