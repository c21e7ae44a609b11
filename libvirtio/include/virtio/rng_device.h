// virtio/rng_device.h — the virtio entropy device (VIRTIO 1.2 §5.4).
//
// RngDevice serves one queue (requestq): every device-writable buffer the
// driver offers is filled with bytes from getrandom(2), written straight into
// guest memory. It has no configuration space and no device features.
//
// Rate limiting: with `max_bytes_per_period` set, at most that many bytes are
// handed out per `period`. A driver asking for more is not refused: its
// buffers stay in the ring until the next period, and RetryAfter() tells the
// glue when to call Notify(0) again (arm a timer). A single request gets at
// most kMaxBytesPerRequest bytes, so one huge buffer cannot stall the queue
// thread.
//
// Example:
//   virtio::RngDevice<MyTraits> rng(memory, interrupt,
//       {.max_bytes_per_period = 1 << 20, .period = std::chrono::seconds(1)});
//   transport.Attach(rng);
//   ... on kick: rng.Notify(0);
//   ... if (auto wait = rng.RetryAfter()) timer.Arm(*wait);
#ifndef VIRTIO_RNG_DEVICE_H_
#define VIRTIO_RNG_DEVICE_H_

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "virtio/descriptor_chain.h"
#include "virtio/device_core.h"
#include "virtio/hypervisor.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio {

struct RngOptions {
  // 0: unlimited.
  uint64_t max_bytes_per_period = 0;
  std::chrono::nanoseconds period = std::chrono::seconds(1);
  uint32_t queue_size = 256;
  RingFeatureOptions ring = {};
  std::string name = "virtio-rng";
  // Time source; tests substitute their own. nullptr: steady_clock.
  std::chrono::steady_clock::time_point (*now)() = nullptr;
};

template <HypervisorTraits T>
class RngDevice : public DeviceCore<T, RngDevice<T>> {
  using Core = DeviceCore<T, RngDevice<T>>;
  friend Core;

 public:
  static constexpr uint32_t kDeviceId = spec::kDeviceIdEntropy;
  static constexpr uint32_t kMaxBytesPerRequest = 64 * 1024;

  RngDevice(const typename T::Memory& memory, typename T::Interrupt& interrupt,
            RngOptions options)
      : Core(memory, interrupt, options.name, /*device_features=*/0,
             std::array<uint32_t, 1>{options.queue_size}, options.ring),
        options_(std::move(options)) {}

  // How long until rate-limited requests can be served, if any are waiting.
  std::optional<std::chrono::nanoseconds> RetryAfter() const {
    if (!throttled_) return std::nullopt;
    return std::max(std::chrono::nanoseconds(0), period_start_ +
                                                     options_.period - Now());
  }
  // Total bytes of entropy handed to the guest.
  uint64_t bytes_served() const { return bytes_served_; }

 private:
  std::chrono::steady_clock::time_point Now() const {
    return options_.now ? options_.now() : std::chrono::steady_clock::now();
  }

  uint32_t ConfigSize() const { return 0; }
  void ReadConfigBytes(uint32_t, void*, uint32_t) {}
  void WriteConfigBytes(uint32_t, const void*, uint32_t) {}
  bool AcceptFeatures(uint64_t) { return true; }
  void OnDriverOk() {}
  void OnReset() { throttled_ = false; }

  template <VirtQueue Q>
  void ProcessQueue(uint16_t index, Q& queue) {
    uint64_t budget = UINT64_MAX;
    if (options_.max_bytes_per_period != 0) {
      const auto now = Now();
      if (now - period_start_ >= options_.period) {
        period_start_ = now;
        used_this_period_ = 0;
      }
      budget = options_.max_bytes_per_period - used_this_period_;
    }
    throttled_ = false;
    do {
      queue.DisableNotification();
      for (;;) {
        if (budget == 0) {
          // Leave the rest in the ring; RetryAfter() says when to come back.
          throttled_ = true;
          break;
        }
        if (queue.Pop(chain_) != PopStatus::kChain) break;
        uint32_t written = 0;
        if (chain_.ok()) {
          const uint64_t want = std::min<uint64_t>(
              {chain_.writable_bytes(), kMaxBytesPerRequest, budget});
          written = Fill(want);
          budget -= written;
          if (options_.max_bytes_per_period != 0) used_this_period_ += written;
        }
        queue.Push(chain_.token(), written);
      }
      if (queue.Publish()) this->interrupt().SignalQueue(index);
    } while (!throttled_ && queue.error() == RingError::kNone &&
             queue.EnableNotification());
  }

  // Fills the first `want` writable bytes of chain_ with entropy.
  uint32_t Fill(uint64_t want) {
    uint64_t done = 0;
    for (const iovec& seg : chain_.writable()) {
      if (done == want) break;
      auto* p = static_cast<uint8_t*>(seg.iov_base);
      size_t left = std::min<uint64_t>(seg.iov_len, want - done);
      while (left > 0) {
        const ssize_t n = getrandom(p, left, 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          return static_cast<uint32_t>(done);  // give what we have
        }
        p += n;
        left -= static_cast<size_t>(n);
        done += static_cast<uint64_t>(n);
      }
    }
    bytes_served_ += done;
    return static_cast<uint32_t>(done);
  }

  RngOptions options_;
  DescriptorChain chain_;
  std::chrono::steady_clock::time_point period_start_{};
  uint64_t used_this_period_ = 0;
  bool throttled_ = false;
  uint64_t bytes_served_ = 0;
};

}  // namespace virtio

#endif  // VIRTIO_RNG_DEVICE_H_
