// virtio/testing/echo_device.h — a minimal virtio device for testing
// transports and glue.
//
// EchoDevice copies each chain's readable bytes into its writable part and
// returns it. It has two queues, an 8-byte read/write configuration space
// (initially 1..8), one device-specific feature bit (bit 0) and counters for
// the DeviceCore hooks, so transport and glue tests can check what reached
// the device without depending on a real device's semantics.
//
// EchoDeviceOptions change that shape (queue sizes, configuration size,
// how much of a chain is echoed) for the fuzzers, which drive the same
// device with larger rings and a larger configuration space. Configuration
// accesses out of range abort: DeviceCore must have refused them, and a
// fuzzer hearing of the abort records the input that got through.
//
// Example:
//   struct Traits { using Memory = virtio::GuestMemoryMap;
//                   using Interrupt = virtio::MmioInterrupt<Line>; };
//   virtio::testing::EchoDevice<Traits> echo(mem.map(), irq);
//   virtio::MmioTransport mmio(echo);
#ifndef VIRTIO_TESTING_ECHO_DEVICE_H_
#define VIRTIO_TESTING_ECHO_DEVICE_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "virtio/descriptor_chain.h"
#include "virtio/device_core.h"
#include "virtio/hypervisor.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio::testing {

// The echo device's one device-specific feature bit.
inline constexpr unsigned kEchoFeatureShout = 0;

// The shape of an EchoDevice; the defaults are the tests'.
struct EchoDeviceOptions {
  std::string name = "echo";
  // Largest size of each of the two queues.
  std::array<uint32_t, 2> max_queue_sizes = {16, 16};
  // Bytes of configuration space (at most kMaxConfigSize) and their
  // initial values (the rest zero).
  uint32_t config_size = 8;
  std::array<uint8_t, 16> config = {1, 2, 3, 4, 5, 6, 7, 8};
  // Most readable bytes echoed per chain (at most kMaxEchoBytes).
  uint32_t echo_bytes = 256;
  RingFeatureOptions ring = {};
};

template <HypervisorTraits T, uint32_t Id = 0x1234>
class EchoDevice : public DeviceCore<T, EchoDevice<T, Id>> {
  using Core = DeviceCore<T, EchoDevice<T, Id>>;
  friend Core;

 public:
  static constexpr uint32_t kDeviceId = Id;
  static constexpr uint32_t kMaxConfigSize = 16;
  static constexpr uint32_t kMaxEchoBytes = 512;

  EchoDevice(const typename T::Memory& mem, typename T::Interrupt& irq,
             RingFeatureOptions ring = {})
      : EchoDevice(mem, irq, EchoDeviceOptions{.ring = ring}) {}
  EchoDevice(const typename T::Memory& mem, typename T::Interrupt& irq,
             const EchoDeviceOptions& options)
      : Core(mem, irq, options.name, spec::Bit(kEchoFeatureShout),
             options.max_queue_sizes, options.ring),
        max_queue_sizes_(options.max_queue_sizes),
        config_size_(std::min(options.config_size, kMaxConfigSize)),
        echo_bytes_(std::min(options.echo_bytes, kMaxEchoBytes)) {
    std::memcpy(config_, options.config.data(), sizeof config_);
  }

  // The largest size of queue `q` (0 or 1).
  uint32_t max_queue_size(uint16_t q) const { return max_queue_sizes_[q]; }

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
  uint32_t ConfigSize() const { return config_size_; }
  void ReadConfigBytes(uint32_t offset, void* data, uint32_t len) {
    CheckConfigRange(offset, len);
    std::memcpy(data, config_ + offset, len);
  }
  void WriteConfigBytes(uint32_t offset, const void* data, uint32_t len) {
    CheckConfigRange(offset, len);
    std::memcpy(config_ + offset, data, len);
  }
  void CheckConfigRange(uint32_t offset, uint32_t len) const {
    if (offset > config_size_ || len > config_size_ - offset) std::abort();
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
        uint8_t buf[kMaxEchoBytes];
        const size_t n = chain_.CopyFromReadable(0, buf, echo_bytes_);
        written = static_cast<uint32_t>(chain_.CopyToWritable(0, buf, n));
      }
      queue.Push(chain_.token(), written);
      processed.fetch_add(1, std::memory_order_relaxed);
    }
    if (queue.Publish()) this->interrupt().SignalQueue(index);
  }

  const std::array<uint32_t, 2> max_queue_sizes_;
  const uint32_t config_size_;
  const uint32_t echo_bytes_;
  uint8_t config_[kMaxConfigSize] = {};
  DescriptorChain chain_;
};

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_ECHO_DEVICE_H_
