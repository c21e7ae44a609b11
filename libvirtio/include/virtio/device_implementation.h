// virtio/device_implementation.h — what a device implementation must
// provide to DeviceCore, as a concept.
//
// A concrete device derives from DeviceCore<Traits, Device> (CRTP) and
// supplies the hooks DeviceCore calls (see device_core.h). DeviceCore checks
// `DeviceImplementation` when a device is constructed, so a missing or
// misspelt hook reads as one error naming the hook ("the required
// expression 'Hooks::OnReset(device)' is invalid") instead of an error deep
// inside DeviceCore's template code.
//
// Devices usually keep their hooks private and befriend DeviceCore, so the
// concept does not call them directly: it calls them through `Hooks`,
// DeviceCore's forwarding class (a friend's member, allowed to see them).
//
//   static constexpr uint32_t kDeviceId;                  // public
//   uint32_t ConfigSize() const;
//   void ReadConfigBytes(uint32_t offset, void* data, uint32_t len);
//   void WriteConfigBytes(uint32_t offset, const void* data, uint32_t len);
//   bool AcceptFeatures(uint64_t negotiated);
//   void OnDriverOk();
//   void OnReset();
//   template <VirtQueue Q> void ProcessQueue(uint16_t index, Q& queue);
//       (for both of DeviceCore's ring types, split and packed)
//   void OnQueueDisabled(uint16_t index);                 // optional
#ifndef VIRTIO_DEVICE_IMPLEMENTATION_H_
#define VIRTIO_DEVICE_IMPLEMENTATION_H_

#include <concepts>
#include <cstdint>

namespace virtio {

// `Device` provides every hook DeviceCore needs, reached through `Hooks`,
// and processes both ring layouts `SplitRing` and `PackedRing`.
template <typename Device, typename Hooks, typename SplitRing,
          typename PackedRing>
concept DeviceImplementation = requires(Device& device,
                                        const Device& const_device,
                                        uint32_t offset, void* out,
                                        const void* in, uint64_t features,
                                        uint16_t index, SplitRing& split,
                                        PackedRing& packed) {
  { Device::kDeviceId } -> std::convertible_to<uint32_t>;
  { Hooks::ConfigSize(const_device) } -> std::convertible_to<uint32_t>;
  Hooks::ReadConfigBytes(device, offset, out, offset);
  Hooks::WriteConfigBytes(device, offset, in, offset);
  { Hooks::AcceptFeatures(device, features) } -> std::convertible_to<bool>;
  Hooks::OnDriverOk(device);
  Hooks::OnReset(device);
  Hooks::ProcessQueue(device, index, split);
  Hooks::ProcessQueue(device, index, packed);
};

}  // namespace virtio

#endif  // VIRTIO_DEVICE_IMPLEMENTATION_H_
