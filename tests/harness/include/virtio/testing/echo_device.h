// virtio/testing/echo_device.h — a minimal virtio device for testing
// transports and glue.
//
// EchoDevice copies each chain's readable bytes into its writable part and
// returns it. It has two queues, an 8-byte read/write configuration space
// (initially 1..8), one device-specific feature bit (bit 0) and counters for
// the DeviceCore hooks, so transport and glue tests can check what reached
// the device without depending on a real device's semantics.
//
// Example:
//   struct Traits { using Memory = virtio::GuestMemoryMap;
//                   using Interrupt = virtio::MmioInterrupt<Line>; };
//   virtio::testing::EchoDevice<Traits> echo(mem.map(), irq);
//   virtio::MmioTransport mmio(echo);
#ifndef VIRTIO_TESTING_ECHO_DEVICE_H_
#define VIRTIO_TESTING_ECHO_DEVICE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "virtio/descriptor_chain.h"
#include "virtio/device_core.h"
#include "virtio/hypervisor.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio::testing {

// The echo device's one device-specific feature bit.
inline constexpr unsigned kEchoFeatureShout = 0;

template <HypervisorTraits T, uint32_t Id = 0x1234>
class EchoDevice : public DeviceCore<T, EchoDevice<T, Id>> {
  using Core = DeviceCore<T, EchoDevice<T, Id>>;
  friend Core;

 public:
  static constexpr uint32_t kDeviceId = Id;
  static constexpr uint32_t kMaxSizes[2] = {16, 16};

  EchoDevice(const typename T::Memory& mem, typename T::Interrupt& irq,
             RingFeatureOptions ring = {})
      : Core(mem, irq, "echo", spec::Bit(kEchoFeatureShout), kMaxSizes, ring) {}

  // Bumps the configuration generation and signals (as a resize would).
  void ChangeConfig() { this->ConfigChanged(); }
  std::array<uint8_t, 8> config() const {
    std::array<uint8_t, 8> c;
    std::memcpy(c.data(), config_, c.size());
    return c;
  }

  // When false, FEATURES_OK is refused (device-specific refusal).
  bool accept_features = true;
  int driver_ok_calls = 0;
  int reset_calls = 0;
  int queue_disabled_calls = 0;
  std::atomic<int> processed{0};

 private:
  uint32_t ConfigSize() const { return sizeof(config_); }
  void ReadConfigBytes(uint32_t offset, void* data, uint32_t len) {
    std::memcpy(data, config_ + offset, len);
  }
  void WriteConfigBytes(uint32_t offset, const void* data, uint32_t len) {
    std::memcpy(config_ + offset, data, len);
  }
  bool AcceptFeatures(uint64_t) { return accept_features; }
  void OnDriverOk() { ++driver_ok_calls; }
  void OnReset() { ++reset_calls; }
  void OnQueueDisabled(uint16_t) { ++queue_disabled_calls; }

  template <VirtQueue Q>
  void ProcessQueue(uint16_t index, Q& queue) {
    while (queue.Pop(chain_) == PopStatus::kChain) {
      uint32_t written = 0;
      if (chain_.ok()) {
        uint8_t buf[256];
        const size_t n = chain_.CopyFromReadable(0, buf, sizeof buf);
        written = static_cast<uint32_t>(chain_.CopyToWritable(0, buf, n));
      }
      queue.Push(chain_.token(), written);
      processed.fetch_add(1, std::memory_order_relaxed);
    }
    if (queue.Publish()) this->interrupt().SignalQueue(index);
  }

  uint8_t config_[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  DescriptorChain chain_;
};

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_ECHO_DEVICE_H_
