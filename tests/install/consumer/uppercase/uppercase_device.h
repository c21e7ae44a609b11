// uppercase_device.h — the uppercase echo device (uppercase_spec.h) on
// libvirtio's device model, for any hypervisor traits: served over
// vhost-user by uppercase_daemon.cc, but nothing here is vhost-user
// specific.
#ifndef UPPERCASE_DEVICE_H_
#define UPPERCASE_DEVICE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "uppercase_spec.h"
#include "virtio/descriptor_chain.h"
#include "virtio/device_core.h"
#include "virtio/hypervisor.h"
#include "virtio/queue.h"

namespace uppercase {

// How the device behaves; `answer_unchanged` exists so that the test
// harness can prove the front-end's check catches a device that answers
// wrongly.
struct Options {
  bool answer_unchanged = false;
};

template <virtio::HypervisorTraits T>
class UppercaseDevice : public virtio::DeviceCore<T, UppercaseDevice<T>> {
  using Core = virtio::DeviceCore<T, UppercaseDevice<T>>;
  friend Core;

 public:
  static constexpr uint32_t kDeviceId = uppercase::kDeviceId;

  UppercaseDevice(const typename T::Memory& memory,
                  typename T::Interrupt& interrupt, Options options)
      : Core(memory, interrupt, "uppercase", /*device_features=*/0,
             std::array<uint32_t, kNumQueues>{kQueueSize}),
        options_(options) {}

  uint64_t requests_answered() const {
    return answered_.load(std::memory_order_relaxed);
  }

 private:
  // --- What virtio::DeviceCore asks of a device ---
  uint32_t ConfigSize() const { return sizeof(Config); }
  void ReadConfigBytes(uint32_t offset, void* data, uint32_t len) {
    // DeviceCore has checked that [offset, offset + len) is inside.
    const Config config{.magic = kMagic,
                        .max_text = kMaxText,
                        .requests_answered = requests_answered()};
    std::memcpy(data, reinterpret_cast<const uint8_t*>(&config) + offset, len);
  }
  void WriteConfigBytes(uint32_t, const void*, uint32_t) {}  // read-only
  bool AcceptFeatures(uint64_t) { return true; }
  void OnDriverOk() {}
  void OnReset() { answered_.store(0, std::memory_order_relaxed); }

  template <virtio::VirtQueue Q>
  void ProcessQueue(uint16_t index, Q& queue) {
    do {
      queue.DisableNotification();
      while (queue.Pop(chain_) == virtio::PopStatus::kChain) {
        queue.Push(chain_.token(), chain_.ok() ? Answer() : 0);
      }
      if (queue.Publish()) this->interrupt().SignalQueue(index);
    } while (queue.error() == virtio::RingError::kNone &&
             queue.EnableNotification());
  }

  // Writes chain_'s text, upper-cased, into its writable part; the number
  // of bytes written.
  uint32_t Answer() {
    const size_t len = chain_.CopyFromReadable(0, text_.data(), text_.size());
    if (!options_.answer_unchanged) {
      for (size_t i = 0; i < len; ++i) {
        if (text_[i] >= 'a' && text_[i] <= 'z') text_[i] -= 'a' - 'A';
      }
    }
    answered_.fetch_add(1, std::memory_order_relaxed);
    return static_cast<uint32_t>(chain_.CopyToWritable(0, text_.data(), len));
  }

  Options options_;
  virtio::DescriptorChain chain_;
  std::array<char, kMaxText> text_{};
  // Written by the queue's worker, read by the control thread (config).
  std::atomic<uint64_t> answered_{0};
};

}  // namespace uppercase

#endif  // UPPERCASE_DEVICE_H_
