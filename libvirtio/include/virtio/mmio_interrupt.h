// virtio/mmio_interrupt.h — the virtio-mmio interrupt: InterruptStatus plus
// one interrupt line.
//
// A virtio-mmio device has a single interrupt line shared by every queue and
// by configuration changes; the driver tells the causes apart by reading the
// InterruptStatus register (bit 0: used buffer, bit 1: configuration change)
// and clears them by writing InterruptACK (VIRTIO 1.2 §4.2.2). MmioInterrupt
// keeps that register and drives the line so that it is asserted exactly
// while some bit is pending, which is what a level-triggered line (the
// Linux driver requests a shared, level-style IRQ) needs: a line left
// asserted with no bit pending makes the guest's handler return IRQ_NONE
// forever, and one dropped while a bit is pending loses the interrupt.
//
// `Line` is whatever the glue uses to raise the guest IRQ (a KVM irqfd with
// resamplefd, a Xen event channel, an in-process recorder in tests). It only
// needs `void Set(bool asserted)`, called on level transitions. A glue with
// an edge-only mechanism can pulse on Set(true) and ignore Set(false): the
// status bit stays set until acknowledged, so the driver still finds all
// causes on the next interrupt.
//
// Threads: SignalQueue/SignalConfig are called from queue threads while the
// vCPU (or ioreq) thread calls Acknowledge; all are safe to call
// concurrently. Line::Set is called under an internal mutex, so it is never
// called concurrently with itself and level transitions reach the line in
// the order the status changed.
//
// Example:
//   struct IrqfdLine { int fd; void Set(bool on) { if (on) Kick(fd); } };
//   struct Traits {
//     using Memory = virtio::GuestMemoryMap;
//     using Interrupt = virtio::MmioInterrupt<IrqfdLine>;
//   };
//   virtio::MmioInterrupt<IrqfdLine> irq(IrqfdLine{fd});
//   MyDevice<Traits> dev(memory, irq, ...);
//   virtio::MmioTransport<MyDevice<Traits>> mmio(dev);  // owns the registers
#ifndef VIRTIO_MMIO_INTERRUPT_H_
#define VIRTIO_MMIO_INTERRUPT_H_

#include <atomic>
#include <concepts>
#include <cstdint>
#include <mutex>
#include <utility>

#include "virtio/hypervisor.h"

namespace virtio {

// An interrupt line a virtio-mmio device can raise and lower.
template <typename L>
concept IrqLine = requires(L& line, bool asserted) {
  { line.Set(asserted) } -> std::same_as<void>;
};

// InterruptStatus bits (§4.2.2).
inline constexpr uint32_t kMmioInterruptUsedBuffer = 1u << 0;
inline constexpr uint32_t kMmioInterruptConfigChange = 1u << 1;
inline constexpr uint32_t kMmioInterruptMask =
    kMmioInterruptUsedBuffer | kMmioInterruptConfigChange;

template <IrqLine Line>
class MmioInterrupt {
 public:
  MmioInterrupt()
    requires std::default_initializable<Line>
  = default;
  explicit MmioInterrupt(Line line) : line_(std::move(line)) {}

  // The registers hold a mutex and devices keep a reference to us.
  MmioInterrupt(const MmioInterrupt&) = delete;
  MmioInterrupt& operator=(const MmioInterrupt&) = delete;

  // InterruptSink: one bit serves every queue on virtio-mmio.
  void SignalQueue(uint16_t /*queue*/) { Raise(kMmioInterruptUsedBuffer); }
  void SignalConfig() { Raise(kMmioInterruptConfigChange); }

  // The InterruptStatus register.
  uint32_t status() const { return status_.load(std::memory_order_acquire); }

  // InterruptACK: clears the bits in `mask` (others are ignored) and lowers
  // the line once nothing is pending.
  void Acknowledge(uint32_t mask) {
    mask &= kMmioInterruptMask;
    const uint32_t old = status_.fetch_and(~mask, std::memory_order_acq_rel);
    if (old & mask) UpdateLine();
  }

  // Device reset: nothing pending, line low.
  void Reset() {
    status_.store(0, std::memory_order_release);
    UpdateLine();
  }

  // Whether the line is currently asserted (as last passed to Line::Set).
  bool asserted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return asserted_;
  }
  Line& line() { return line_; }
  const Line& line() const { return line_; }

 private:
  void Raise(uint32_t bit) {
    const uint32_t old = status_.fetch_or(bit, std::memory_order_acq_rel);
    // If the bit was already set, whoever set it has called (or is about to
    // call) UpdateLine() after its store, and an Acknowledge clearing it in
    // between would have made our fetch_or see it clear. Skipping keeps the
    // common "interrupt already pending" case free of the mutex.
    if (!(old & bit)) UpdateLine();
  }

  // Every status change is followed by a call here, and the level is
  // recomputed from the status *inside* the lock, so the last caller always
  // leaves the line matching the final status whatever the interleaving.
  void UpdateLine() {
    std::lock_guard<std::mutex> lock(mu_);
    const bool want = status_.load(std::memory_order_acquire) != 0;
    if (want != asserted_) {
      asserted_ = want;
      line_.Set(want);
    }
  }

  Line line_{};
  std::atomic<uint32_t> status_{0};
  mutable std::mutex mu_;
  bool asserted_ = false;  // guarded by mu_
};

}  // namespace virtio

#endif  // VIRTIO_MMIO_INTERRUPT_H_
