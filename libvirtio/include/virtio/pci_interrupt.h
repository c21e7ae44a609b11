// virtio/pci_interrupt.h — MSI-X and INTx delivery for the virtio-pci
// transport (VIRTIO 1.2 §4.1.4.5, §4.1.5.1.2; PCI Local Bus 3.0 §6.8.2).
//
// PciInterrupt is the `Interrupt` type a glue puts in its hypervisor traits
// when its devices sit behind PciTransport. It owns the interrupt state a
// PCI function has: the MSI-X table (address, data and the per-vector mask
// bit), the pending bit array (PBA), the MSI-X enable and function-mask bits
// of the capability's message control, the bus-master and INTx-disable bits
// of the command register, the virtio ISR byte, and the virtio mapping of
// queues and configuration changes to vectors (queue_msix_vector,
// config_msix_vector; 0xffff = NO_VECTOR = none).
//
// The glue's Sink does the actual delivery and must satisfy `PciIrqSink`:
//   void SendMsi(uint64_t address, uint32_t data);  // e.g. KVM_SIGNAL_MSI,
//                                                   // or an irqfd per vector
//   void SetIntx(bool asserted);                    // level of INTA#
// SendMsi is called concurrently from every queue thread (and the vCPU
// thread on unmask), so it must be thread-safe. SetIntx is called with an
// internal mutex held and must not call back into PciInterrupt.
//
// Delivery rules:
//   * MSI-X enabled: SignalQueue(q) sends queue q's vector; a masked vector
//     (entry or function mask, or bus mastering off) sets its PBA bit instead
//     and is sent when it becomes deliverable; NO_VECTOR (or a vector outside
//     the table) sends nothing. SignalConfig also sets ISR bit 1, because the
//     spec requires it whatever the interrupt mode.
//   * MSI-X disabled: ISR bit 0 (queue) or bit 1 (config) is set and INTx is
//     asserted unless the command register's INTx-disable bit is set. Reading
//     the ISR returns and clears it, deasserting INTx.
//
// Threads: the hot path (SignalQueue with MSI-X on and the vector unmasked)
// takes no lock: one acquire load of the packed enable/mask state, relaxed
// loads of the queue's vector and of the table entry, then SendMsi. Anything
// that must not lose an interrupt against a concurrent register write (a
// masked vector, INTx, ISR, table/control writes) serialises on one mutex.
// As in hardware, rewriting an entry's address/data while it is unmasked
// may deliver a message with a mix of old and new values (PCI: undefined);
// Linux masks entries before reprogramming them.
//
// Example (glue side):
//   struct KvmMsi { void SendMsi(uint64_t a, uint32_t d); void SetIntx(bool); };
//   KvmMsi sink{vm_fd};
//   virtio::PciInterrupt<KvmMsi> irq(sink, /*num_queues=*/2);
//   struct Traits { using Memory = virtio::GuestMemoryMap;
//                   using Interrupt = virtio::PciInterrupt<KvmMsi>; };
//   MyDevice<Traits> dev(memory, irq, ...);
//   virtio::PciTransport<MyDevice<Traits>> pci(dev);  // drives irq's registers
#ifndef VIRTIO_PCI_INTERRUPT_H_
#define VIRTIO_PCI_INTERRUPT_H_

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstdint>
#include <memory>
#include <mutex>

#include "virtio/hypervisor.h"

namespace virtio {

// What a glue supplies to PciInterrupt to reach the guest.
template <typename S>
concept PciIrqSink = requires(S& sink, uint64_t address, uint32_t data,
                              bool asserted) {
  { sink.SendMsi(address, data) } -> std::same_as<void>;
  { sink.SetIntx(asserted) } -> std::same_as<void>;
};

// Optional for a sink: some platforms deliver certain messages outside the
// MSI-X masking rules and the sink says which. Xen HVM guests remap MSIs
// to PIRQs: Linux programs such an entry with data vector 0 (the PIRQ sits
// in the address) and masks it through its event channel, leaving the
// table's mask bit set for good; a device that honoured the bit would never
// interrupt (QEMU's msix_vector_masked ignores both masks for them too).
// Such a message still needs MSI-X enabled and bus mastering on.
template <typename S>
concept PciMaskBypassingSink = requires(const S& sink, uint64_t address,
                                        uint32_t data) {
  { sink.BypassesMsixMask(address, data) } -> std::same_as<bool>;
};

namespace pci {
// VIRTIO_MSI_NO_VECTOR (§4.1.4.3).
inline constexpr uint16_t kNoVector = 0xffff;
// The MSI-X table size field is 11 bits.
inline constexpr uint32_t kMaxMsixVectors = 2048;
// Bytes per MSI-X table entry, and the offsets of its fields.
inline constexpr uint32_t kMsixEntrySize = 16;
inline constexpr uint32_t kMsixEntryAddrLo = 0;
inline constexpr uint32_t kMsixEntryAddrHi = 4;
inline constexpr uint32_t kMsixEntryData = 8;
inline constexpr uint32_t kMsixEntryControl = 12;
inline constexpr uint32_t kMsixEntryMaskBit = 1;
// ISR status bits (§4.1.4.5).
inline constexpr uint8_t kIsrQueue = 1;
inline constexpr uint8_t kIsrConfig = 2;
}  // namespace pci

template <PciIrqSink Sink>
class PciInterrupt {
 public:
  // Room for one vector per queue plus one for configuration changes (what
  // Linux asks for first), capped at the 2048 entries MSI-X allows.
  PciInterrupt(Sink& sink, uint16_t num_queues)
      : sink_(&sink),
        num_queues_(num_queues),
        table_size_(static_cast<uint16_t>(
            std::min<uint32_t>(uint32_t{num_queues} + 1, pci::kMaxMsixVectors))),
        queue_vectors_(new std::atomic<uint16_t>[num_queues]),
        table_(new Entry[table_size_]),
        pba_(new uint64_t[PbaWords()]) {
    ResetFunction();
  }
  PciInterrupt(const PciInterrupt&) = delete;
  PciInterrupt& operator=(const PciInterrupt&) = delete;

  // --- InterruptSink (device side) -----------------------------------------
  void SignalQueue(uint16_t queue) {
    if (queue >= num_queues_) return;  // a device bug; nothing to signal
    const uint32_t state = state_.load(std::memory_order_acquire);
    if (!(state & kMsixEnabled)) {
      RaiseIsr(pci::kIsrQueue);
      return;
    }
    SendVector(queue_vectors_[queue].load(std::memory_order_relaxed), state);
  }

  void SignalConfig() {
    // §4.1.4.5.1: ISR bit 1 is set before any config notification, MSI-X
    // or not; only without MSI-X does it also drive INTx.
    const uint32_t state = state_.load(std::memory_order_acquire);
    RaiseIsr(pci::kIsrConfig);
    if (state & kMsixEnabled) {
      SendVector(config_vector_.load(std::memory_order_relaxed), state);
    }
  }

  // --- Virtio vector mapping (common configuration) -------------------------
  uint16_t num_queues() const { return num_queues_; }
  uint16_t table_size() const { return table_size_; }

  // Maps queue `queue` to `vector`. A vector outside the table becomes
  // NO_VECTOR, which the driver sees on read-back (§4.1.4.3.1: it learns
  // the mapping failed). Returns the stored value.
  uint16_t SetQueueVector(uint16_t queue, uint16_t vector) {
    if (queue >= num_queues_) return pci::kNoVector;
    if (vector >= table_size_) vector = pci::kNoVector;
    queue_vectors_[queue].store(vector, std::memory_order_relaxed);
    return vector;
  }
  uint16_t queue_vector(uint16_t queue) const {
    return queue < num_queues_
               ? queue_vectors_[queue].load(std::memory_order_relaxed)
               : pci::kNoVector;
  }
  uint16_t SetConfigVector(uint16_t vector) {
    if (vector >= table_size_) vector = pci::kNoVector;
    config_vector_.store(vector, std::memory_order_relaxed);
    return vector;
  }
  uint16_t config_vector() const {
    return config_vector_.load(std::memory_order_relaxed);
  }

  // --- ISR -------------------------------------------------------------------
  // The driver's read of the ISR byte: returns it and clears it, which
  // deasserts INTx (§4.1.4.5).
  uint8_t ReadIsr() {
    std::lock_guard<std::mutex> lock(mu_);
    const uint8_t v = isr_;
    isr_ = 0;
    UpdateIntxLocked();
    return v;
  }
  // The ISR without the read side effect (for debugging and tests).
  uint8_t isr() const {
    std::lock_guard<std::mutex> lock(mu_);
    return isr_;
  }
  // The PCI status register's Interrupt Status bit: the function wants INTx
  // asserted (before INTx-disable gating).
  bool intx_pending() const {
    std::lock_guard<std::mutex> lock(mu_);
    return IntxWantedLocked();
  }
  bool intx_asserted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return intx_line_;
  }

  // --- PCI function state (configuration space) -------------------------
  // MSI-X message control bits 15 (enable) and 14 (function mask).
  void SetMsixControl(bool enabled, bool function_masked) {
    std::lock_guard<std::mutex> lock(mu_);
    UpdateStateLocked(kMsixEnabled, enabled);
    UpdateStateLocked(kFunctionMasked, function_masked);
    // Enabling MSI-X takes INTx away from the function (PCI 3.0 §6.8).
    UpdateIntxLocked();
    DeliverPendingLocked();
  }
  // Command register bit 2: without bus mastering the function cannot write
  // a message, so vectors stay pending until it is back on.
  void SetBusMaster(bool enabled) {
    std::lock_guard<std::mutex> lock(mu_);
    UpdateStateLocked(kBusMaster, enabled);
    DeliverPendingLocked();
  }
  // Command register bit 10.
  void SetIntxDisabled(bool disabled) {
    std::lock_guard<std::mutex> lock(mu_);
    intx_disabled_ = disabled;
    UpdateIntxLocked();
  }
  bool msix_enabled() const {
    return state_.load(std::memory_order_acquire) & kMsixEnabled;
  }
  bool function_masked() const {
    return state_.load(std::memory_order_acquire) & kFunctionMasked;
  }

  // --- MSI-X table and PBA (BAR accesses) ------------------------------------
  // `offset` is relative to the table; `size` is 4 or 8 and `offset` aligned
  // to it (PCI 3.0 §6.8.2: other accesses are undefined; the transport
  // filters them). Out-of-table offsets read 0.
  uint64_t TableRead(uint32_t offset, uint32_t size) const {
    if (size == 8) {
      return TableRead32(offset) | (uint64_t{TableRead32(offset + 4)} << 32);
    }
    return TableRead32(offset);
  }
  void TableWrite(uint32_t offset, uint32_t size, uint64_t value) {
    std::lock_guard<std::mutex> lock(mu_);
    TableWrite32Locked(offset, static_cast<uint32_t>(value));
    if (size == 8) {
      TableWrite32Locked(offset + 4, static_cast<uint32_t>(value >> 32));
    }
    DeliverPendingLocked();
  }
  uint32_t table_bytes() const { return uint32_t{table_size_} * pci::kMsixEntrySize; }

  // The PBA is read-only; `offset` relative to it, `size` 4 or 8, aligned.
  uint64_t PbaRead(uint32_t offset, uint32_t size) const {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t v = 0;
    for (uint32_t i = 0; i < size; ++i) {
      const uint32_t byte = offset + i;
      if (byte / 8 < PbaWords()) {
        v |= ((pba_[byte / 8] >> (8 * (byte % 8))) & 0xff) << (8 * i);
      }
    }
    return v;
  }
  uint32_t pba_bytes() const { return PbaWords() * 8; }
  bool pending(uint16_t vector) const {
    std::lock_guard<std::mutex> lock(mu_);
    return vector < table_size_ && PendingLocked(vector);
  }

  // --- Resets -------------------------------------------------------------------
  // Virtio device reset (device_status = 0): vectors unmapped, ISR and
  // pending messages dropped, INTx deasserted. The MSI-X table and enable
  // bits belong to the PCI function and survive, as in QEMU.
  void ResetDevice() {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint16_t q = 0; q < num_queues_; ++q) {
      queue_vectors_[q].store(pci::kNoVector, std::memory_order_relaxed);
    }
    config_vector_.store(pci::kNoVector, std::memory_order_relaxed);
    isr_ = 0;
    std::fill_n(pba_.get(), PbaWords(), 0);
    UpdateIntxLocked();
  }
  // Function-level reset: everything above plus MSI-X disabled, every entry
  // zeroed and masked (PCI 3.0 §6.8.2.9), bus mastering off.
  void ResetFunction() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      state_.store(0, std::memory_order_release);
      intx_disabled_ = false;
      for (uint16_t v = 0; v < table_size_; ++v) {
        table_[v].address.store(0, std::memory_order_relaxed);
        table_[v].data.store(0, std::memory_order_relaxed);
        table_[v].control.store(pci::kMsixEntryMaskBit, std::memory_order_relaxed);
      }
    }
    ResetDevice();
  }

 private:
  // Bits of state_.
  static constexpr uint32_t kMsixEnabled = 1;
  static constexpr uint32_t kFunctionMasked = 2;
  static constexpr uint32_t kBusMaster = 4;

  // Each field is its own atomic so queue threads may read an entry while
  // the vCPU thread rewrites it without a data race.
  struct Entry {
    std::atomic<uint64_t> address{0};
    std::atomic<uint32_t> data{0};
    std::atomic<uint32_t> control{pci::kMsixEntryMaskBit};
  };

  static bool Deliverable(uint32_t state) {
    return (state & (kMsixEnabled | kFunctionMasked | kBusMaster)) ==
           (kMsixEnabled | kBusMaster);
  }

  uint32_t PbaWords() const { return (uint32_t{table_size_} + 63) / 64; }
  bool PendingLocked(uint16_t v) const { return (pba_[v / 64] >> (v % 64)) & 1; }

  void SendVector(uint16_t vector, uint32_t state) {
    if (vector >= table_size_) return;  // NO_VECTOR: the driver wants none
    const Entry& e = table_[vector];
    if (EntryDeliverable(e, state)) {
      sink_->SendMsi(e.address.load(std::memory_order_relaxed),
                     e.data.load(std::memory_order_relaxed));
      return;
    }
    // Masked: decide again under the lock, so an unmask racing with us
    // either sees our pending bit or we see its cleared mask.
    std::lock_guard<std::mutex> lock(mu_);
    if (DeliverableLocked(vector)) {
      sink_->SendMsi(e.address.load(std::memory_order_relaxed),
                     e.data.load(std::memory_order_relaxed));
    } else if (state_.load(std::memory_order_relaxed) & kMsixEnabled) {
      pba_[vector / 64] |= uint64_t{1} << (vector % 64);
    }
  }

  // Whether entry `e` may send now under `state` (see PciMaskBypassingSink).
  bool EntryDeliverable(const Entry& e, uint32_t state) const {
    if constexpr (PciMaskBypassingSink<Sink>) {
      if ((state & (kMsixEnabled | kBusMaster)) ==
              (kMsixEnabled | kBusMaster) &&
          sink_->BypassesMsixMask(e.address.load(std::memory_order_relaxed),
                                  e.data.load(std::memory_order_relaxed))) {
        return true;
      }
    }
    return Deliverable(state) && !(e.control.load(std::memory_order_acquire) &
                                   pci::kMsixEntryMaskBit);
  }

  bool DeliverableLocked(uint16_t vector) const {
    return EntryDeliverable(table_[vector],
                            state_.load(std::memory_order_relaxed));
  }

  void DeliverPendingLocked() {
    const uint32_t state = state_.load(std::memory_order_relaxed);
    if ((state & (kMsixEnabled | kBusMaster)) != (kMsixEnabled | kBusMaster))
      return;
    for (uint32_t w = 0; w < PbaWords(); ++w) {
      uint64_t bits = pba_[w];
      while (bits != 0) {
        const unsigned b = static_cast<unsigned>(__builtin_ctzll(bits));
        bits &= bits - 1;
        const uint16_t v = static_cast<uint16_t>(w * 64 + b);
        if (DeliverableLocked(v)) {
          pba_[w] &= ~(uint64_t{1} << b);
          sink_->SendMsi(table_[v].address.load(std::memory_order_relaxed),
                         table_[v].data.load(std::memory_order_relaxed));
        }
      }
    }
  }

  void UpdateStateLocked(uint32_t bit, bool on) {
    const uint32_t s = state_.load(std::memory_order_relaxed);
    state_.store(on ? (s | bit) : (s & ~bit), std::memory_order_release);
  }

  void RaiseIsr(uint8_t bit) {
    std::lock_guard<std::mutex> lock(mu_);
    isr_ |= bit;
    UpdateIntxLocked();
  }
  bool IntxWantedLocked() const {
    return isr_ != 0 && !(state_.load(std::memory_order_relaxed) & kMsixEnabled);
  }
  void UpdateIntxLocked() {
    const bool level = IntxWantedLocked() && !intx_disabled_;
    if (level != intx_line_) {
      intx_line_ = level;
      sink_->SetIntx(level);
    }
  }

  uint32_t TableRead32(uint32_t offset) const {
    const uint32_t v = offset / pci::kMsixEntrySize;
    if (v >= table_size_) return 0;
    const Entry& e = table_[v];
    switch (offset % pci::kMsixEntrySize) {
      case pci::kMsixEntryAddrLo:
        return static_cast<uint32_t>(e.address.load(std::memory_order_relaxed));
      case pci::kMsixEntryAddrHi:
        return static_cast<uint32_t>(e.address.load(std::memory_order_relaxed) >> 32);
      case pci::kMsixEntryData:
        return e.data.load(std::memory_order_relaxed);
      default:
        return e.control.load(std::memory_order_relaxed);
    }
  }
  void TableWrite32Locked(uint32_t offset, uint32_t value) {
    const uint32_t v = offset / pci::kMsixEntrySize;
    if (v >= table_size_) return;
    Entry& e = table_[v];
    const uint64_t addr = e.address.load(std::memory_order_relaxed);
    switch (offset % pci::kMsixEntrySize) {
      case pci::kMsixEntryAddrLo:
        // Message addresses are DWORD aligned; the low two bits are RO 0.
        e.address.store((addr & ~uint64_t{0xffffffff}) | (value & ~3u),
                        std::memory_order_relaxed);
        break;
      case pci::kMsixEntryAddrHi:
        e.address.store((addr & 0xffffffff) | (uint64_t{value} << 32),
                        std::memory_order_relaxed);
        break;
      case pci::kMsixEntryData:
        e.data.store(value, std::memory_order_relaxed);
        break;
      default:
        // Only the mask bit is defined; the rest is reserved (reads 0).
        e.control.store(value & pci::kMsixEntryMaskBit, std::memory_order_release);
        break;
    }
  }

  Sink* sink_;
  const uint16_t num_queues_;
  const uint16_t table_size_;
  std::unique_ptr<std::atomic<uint16_t>[]> queue_vectors_;
  std::atomic<uint16_t> config_vector_{pci::kNoVector};
  std::unique_ptr<Entry[]> table_;
  std::atomic<uint32_t> state_{0};

  mutable std::mutex mu_;  // guards everything below, and state_ writes
  std::unique_ptr<uint64_t[]> pba_;
  uint8_t isr_ = 0;
  bool intx_disabled_ = false;
  bool intx_line_ = false;
};

}  // namespace virtio

#endif  // VIRTIO_PCI_INTERRUPT_H_
