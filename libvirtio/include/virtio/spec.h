// virtio/spec.h — constants and ring layouts from the VIRTIO 1.2 specification.
//
// Everything a device, transport or test needs to speak the wire format lives
// here: device IDs, device status bits, reserved feature bits, and the split
// and packed ring structures as plain little-endian structs whose sizes and
// field offsets are checked at compile time.
//
// Ring structures live in guest memory that a running guest writes
// concurrently. Never dereference them in place field by field; copy each
// field exactly once with the helpers in virtio/ring_access.h.
//
// Example:
//   if (features & virtio::spec::Bit(virtio::spec::kFeatureRingPacked)) { ... }
#ifndef VIRTIO_SPEC_H_
#define VIRTIO_SPEC_H_

#include <bit>
#include <cstddef>
#include <cstdint>

namespace virtio::spec {

static_assert(std::endian::native == std::endian::little,
              "libvirtio reads guest rings in place; big-endian hosts need "
              "byte swapping that is not implemented");

// Returns the 64-bit feature mask for feature bit `bit`.
constexpr uint64_t Bit(unsigned bit) { return uint64_t{1} << bit; }

// Device IDs (VIRTIO 1.2 §5).
enum DeviceId : uint32_t {
  kDeviceIdNet = 1,
  kDeviceIdBlock = 2,
  kDeviceIdConsole = 3,
  kDeviceIdEntropy = 4,
};

// Device status field bits (§2.1).
enum Status : uint8_t {
  kStatusAcknowledge = 1,
  kStatusDriver = 2,
  kStatusDriverOk = 4,
  kStatusFeaturesOk = 8,
  kStatusDeviceNeedsReset = 64,
  kStatusFailed = 128,
};

// Reserved (device-independent) feature bits (§6).
enum ReservedFeature : unsigned {
  kFeatureIndirectDesc = 28,
  kFeatureEventIdx = 29,
  kFeatureVersion1 = 32,
  kFeatureAccessPlatform = 33,
  kFeatureRingPacked = 34,
  kFeatureInOrder = 35,
  kFeatureOrderPlatform = 36,
  kFeatureSrIov = 37,
  kFeatureNotificationData = 38,
  kFeatureNotifConfigData = 39,
  kFeatureRingReset = 40,
};

// Largest queue size either ring layout allows (§2.6, §2.7).
inline constexpr uint32_t kMaxQueueSize = 32768;

// ---------------------------------------------------------------------------
// Split virtqueue (§2.7).

// Descriptor flags, shared by both layouts where the bit means the same.
inline constexpr uint16_t kDescFlagNext = 1;
inline constexpr uint16_t kDescFlagWrite = 2;
inline constexpr uint16_t kDescFlagIndirect = 4;
// Packed-only flags (§2.8.1).
inline constexpr uint16_t kDescFlagAvail = 1 << 7;
inline constexpr uint16_t kDescFlagUsed = 1 << 15;

// avail->flags / used->flags.
inline constexpr uint16_t kAvailFlagNoInterrupt = 1;
inline constexpr uint16_t kUsedFlagNoNotify = 1;

struct SplitDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(SplitDesc) == 16);
static_assert(offsetof(SplitDesc, addr) == 0);
static_assert(offsetof(SplitDesc, len) == 8);
static_assert(offsetof(SplitDesc, flags) == 12);
static_assert(offsetof(SplitDesc, next) == 14);

// The available ring: header, then `ring[queue_size]`, then `used_event`.
struct SplitAvailHeader {
  uint16_t flags;
  uint16_t idx;
};
static_assert(sizeof(SplitAvailHeader) == 4);
static_assert(offsetof(SplitAvailHeader, idx) == 2);

struct SplitUsedElem {
  uint32_t id;  // index of the chain's head descriptor (padded to 32 bits)
  uint32_t len;
};
static_assert(sizeof(SplitUsedElem) == 8);
static_assert(offsetof(SplitUsedElem, len) == 4);

// The used ring: header, then `ring[queue_size]`, then `avail_event`.
struct SplitUsedHeader {
  uint16_t flags;
  uint16_t idx;
};
static_assert(sizeof(SplitUsedHeader) == 4);
static_assert(offsetof(SplitUsedHeader, idx) == 2);

// Minimum alignments of each part (§2.7, table "Virtqueue Part").
inline constexpr uint64_t kSplitDescAlign = 16;
inline constexpr uint64_t kSplitAvailAlign = 2;
inline constexpr uint64_t kSplitUsedAlign = 4;

// Byte sizes of the split ring parts, including the event index fields.
constexpr uint64_t SplitDescTableSize(uint32_t queue_size) {
  return uint64_t{16} * queue_size;
}
constexpr uint64_t SplitAvailRingSize(uint32_t queue_size) {
  return 4 + uint64_t{2} * queue_size + 2;
}
constexpr uint64_t SplitUsedRingSize(uint32_t queue_size) {
  return 4 + uint64_t{8} * queue_size + 2;
}
// Offsets of the event index fields inside the avail and used rings.
constexpr uint64_t SplitUsedEventOffset(uint32_t queue_size) {
  return 4 + uint64_t{2} * queue_size;
}
constexpr uint64_t SplitAvailEventOffset(uint32_t queue_size) {
  return 4 + uint64_t{8} * queue_size;
}

// vring_need_event() from §2.7.10: true if `event_idx` lies in the window of
// indices [old_idx, new_idx) that were just published, modulo 2^16 (the
// entry at index event_idx was among those written).
constexpr bool NeedEvent(uint16_t event_idx, uint16_t new_idx,
                         uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) <
         static_cast<uint16_t>(new_idx - old_idx);
}

// ---------------------------------------------------------------------------
// Packed virtqueue (§2.8).

struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);
static_assert(offsetof(PackedDesc, len) == 8);
static_assert(offsetof(PackedDesc, id) == 12);
static_assert(offsetof(PackedDesc, flags) == 14);

// Event suppression structure (§2.8.10): `off_wrap` holds a 15-bit ring
// offset and, in bit 15, a wrap counter; `flags` holds one of the
// kRingEventFlags* values in its low two bits.
struct PackedEventSuppress {
  uint16_t off_wrap;
  uint16_t flags;
};
static_assert(sizeof(PackedEventSuppress) == 4);
static_assert(offsetof(PackedEventSuppress, flags) == 2);

inline constexpr uint16_t kRingEventFlagsEnable = 0;
inline constexpr uint16_t kRingEventFlagsDisable = 1;
inline constexpr uint16_t kRingEventFlagsDesc = 2;
inline constexpr uint16_t kRingEventFlagsMask = 3;
inline constexpr uint16_t kEventWrapBit = 1 << 15;

inline constexpr uint64_t kPackedDescAlign = 16;
inline constexpr uint64_t kPackedEventAlign = 4;

constexpr uint64_t PackedDescRingSize(uint32_t queue_size) {
  return uint64_t{16} * queue_size;
}

}  // namespace virtio::spec

#endif  // VIRTIO_SPEC_H_
