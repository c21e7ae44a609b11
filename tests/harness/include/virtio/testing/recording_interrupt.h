// virtio/testing/recording_interrupt.h — an InterruptSink that counts.
//
// Tests that drive a device without a transport use RecordingInterrupt as
// the traits' Interrupt: it records how many used-buffer notifications each
// queue received and how many configuration-change notifications were sent.
// TestTraits bundles it with GuestMemoryMap.
//
// Example:
//   virtio::testing::RecordingInterrupt irq;
//   virtio::RngDevice<virtio::testing::TestTraits> rng(mem.map(), irq, {});
//   ...
//   EXPECT_EQ(irq.queue_signals(0), 1u);
#ifndef VIRTIO_TESTING_RECORDING_INTERRUPT_H_
#define VIRTIO_TESTING_RECORDING_INTERRUPT_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "virtio/guest_memory.h"
#include "virtio/hypervisor.h"

namespace virtio::testing {

class RecordingInterrupt {
 public:
  static constexpr uint16_t kMaxQueues = 64;

  void SignalQueue(uint16_t queue) {
    if (queue < kMaxQueues) {
      queue_signals_[queue].fetch_add(1, std::memory_order_relaxed);
    } else {
      out_of_range_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void SignalConfig() { config_signals_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t queue_signals(uint16_t queue) const {
    return queue < kMaxQueues
               ? queue_signals_[queue].load(std::memory_order_relaxed)
               : 0;
  }
  uint64_t config_signals() const {
    return config_signals_.load(std::memory_order_relaxed);
  }
  // Signals for queue indices >= kMaxQueues (a device bug in tests).
  uint64_t out_of_range() const {
    return out_of_range_.load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<uint64_t>, kMaxQueues> queue_signals_{};
  std::atomic<uint64_t> config_signals_{0};
  std::atomic<uint64_t> out_of_range_{0};
};

// Hypervisor traits for tests: in-process guest memory, recorded interrupts.
struct TestTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = RecordingInterrupt;
};
static_assert(HypervisorTraits<TestTraits>);

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_RECORDING_INTERRUPT_H_
