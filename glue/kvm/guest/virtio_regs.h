// glue/kvm/guest/virtio_regs.h — virtio-mmio and virtio-pci register
// offsets for the freestanding guest driver.
//
// The virtio-mmio offsets come from virtio/mmio_spec.h. The PCI ones are
// defined in virtio/pci_transport.h and pci_config_space.h, which pull in
// absl and the C++ library and so cannot be included by a -ffreestanding
// -nostdlib guest: they are repeated here and kvm_glue_test static_asserts
// every one against the library's, so the two cannot drift. (The ring layouts, status and feature bits come
// straight from virtio/spec.h and virtio/blk_spec.h, which are
// freestanding-safe.)
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_REGS_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_VIRTIO_REGS_H_

#include <cstdint>

#include "virtio/mmio_spec.h"

namespace guest {

// virtio-mmio offsets come straight from the library (freestanding-safe).
namespace mmio = ::virtio::mmio;

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
