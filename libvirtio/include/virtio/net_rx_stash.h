// virtio/net_rx_stash.h — the receive buffers a NetDevice (virtio/net_device.h)
// has popped from a receive queue and not yet used.
//
// A packet is delivered into one chain (or, with MRG_RXBUF, several); the
// device pops chains ahead of the packets that will fill them, so that the
// descriptor reads of a batch overlap one another and the copies find the
// buffers' first lines already on their way (PopBatch, TopUp). Chains wait
// here, in ring order, until a packet uses them (Consume) or the ring goes
// away (ReturnAll).
//
// The stash is a ring of at most kMaxChains chains, allocated at
// construction. Unusable chains (not ok(), with readable parts, shorter
// than the header) are returned at once with length 0 and counted; under
// IN_ORDER the chains held ahead of such a chain go back first, empty, and
// flushes() changes so that a packet being assembled starts again.
//
// One thread: the pair's (see net_device.h).
//
// Example:
//   NetRxStash stash(NetRxStash::Capacity(queue_size), segments, true);
//   if (stash.PopBatch(ring, in_order, bad) == PopStatus::kChain) {
//     DescriptorChain& c = stash.at(0);  // fill it, ring.Push(...)
//     stash.Consume(1);
//   }
#ifndef VIRTIO_NET_RX_STASH_H_
#define VIRTIO_NET_RX_STASH_H_

#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "virtio/descriptor_chain.h"
#include "virtio/net_spec.h"
#include "virtio/queue.h"
#include "virtio/ring_access.h"

namespace virtio {

class NetRxStash {
 public:
  // Chains popped ahead per batch (PopBatch).
  static constexpr uint32_t kPrepop = 32;
  // Most chains held popped. The device holds only what the packet being
  // assembled needs plus a few ahead (kAheadHigh), so the stash need not
  // follow the ring: a queue_size that is only a limit (vhost-user, where
  // the front-end picks any size up to 32768) would otherwise cost 32768
  // chains per pair. A mergeable packet of 64 KiB spans more than 256
  // buffers only if they are under 256 bytes each.
  static constexpr uint32_t kMaxChains = 256;
  // Chains kept popped ahead of the packet being delivered (TopUp):
  // measured against testpmd, 8..16 beat both shallower and deeper windows
  // (deeper ones evict the lines they fetched before using them).
  static constexpr uint32_t kAheadLow = 8;
  static constexpr uint32_t kAheadHigh = 16;

  // The stash size for a receive queue of `queue_size` entries.
  static uint32_t Capacity(uint32_t queue_size) {
    return queue_size < kMaxChains ? queue_size : kMaxChains;
  }

  // `chains` chains of `segments` segments each. `prefetch_header_for_write`
  // false where an unchanged header is left alone (rx_keep_same_header):
  // owning its line would take it from the driver anyway.
  NetRxStash(uint32_t chains, uint32_t segments, bool prefetch_header_for_write)
      : prefetch_header_for_write_(prefetch_header_for_write) {
    chains_.reserve(chains);
    for (uint32_t i = 0; i < chains; ++i) chains_.emplace_back(segments);
  }
  NetRxStash(NetRxStash&&) noexcept = default;

  // Chains held, and the most it can hold.
  uint32_t count() const { return count_; }
  uint32_t capacity() const { return static_cast<uint32_t>(chains_.size()); }
  bool full() const { return count_ == chains_.size(); }
  // Times held chains were returned early (IN_ORDER, an unusable chain
  // behind them): a packet being assembled from them starts again.
  uint64_t flushes() const { return flushes_; }

  // The i-th held chain in ring order, i < count().
  DescriptorChain& at(uint32_t i) {
    // i <= count_ <= size: one wrap at most, so no division (there were
    // four per packet).
    uint32_t pos = head_ + i;
    if (pos >= chains_.size()) pos -= static_cast<uint32_t>(chains_.size());
    return chains_[pos];
  }

  // Pops the next chain into the stash. kChain: stashed; kEmpty (also when
  // full) / kBroken as Pop(). Unusable chains are returned at once, counted
  // in `bad_buffers`, and skipped.
  template <VirtQueue Q>
  PopStatus Pop(Q& ring, bool in_order, uint64_t& bad_buffers) {
    for (;;) {
      if (full()) return PopStatus::kEmpty;
      DescriptorChain& c = at(count_);
      const PopStatus st = ring.Pop(c);
      if (st != PopStatus::kChain) return st;
      if (!c.ok() || c.readable_bytes() != 0 ||
          c.writable_bytes() < net::kHeaderSize) {
        ++bad_buffers;
        if (count_ != 0 && in_order) {
          // Returning it now would overtake the chains held for the packet
          // being assembled: under IN_ORDER those go back first, empty (the
          // packet is assembled again from the chains that follow).
          for (uint32_t i = 0; i < count_; ++i) ring.Push(at(i).token(), 0);
          count_ = 0;
          head_ = 0;
          ++flushes_;
        }
        ring.Push(c.token(), 0);
        continue;
      }
      ++count_;
      return PopStatus::kChain;
    }
  }

  // Pops up to kPrepop chains more (kChain if at least one), then starts
  // fetching the start of each one's buffer. The descriptor reads of the
  // batch overlap one another, and the copies find their lines arriving,
  // instead of each packet's stores waiting for ownership of lines the
  // driver touched last, with the next descriptor read queued behind them
  // (that serialisation halved 64-byte rates). Chains popped ahead of
  // packets stay stashed for the next ones.
  template <VirtQueue Q>
  PopStatus PopBatch(Q& ring, bool in_order, uint64_t& bad_buffers) {
    return PopAhead(ring, count_ + kPrepop, in_order, bad_buffers);
  }

  // The rolling window every packet keeps: once fewer than kAheadLow chains
  // wait, pops up to kAheadHigh, so that each packet's lines were requested
  // some packets earlier instead of all of a batch at once.
  template <VirtQueue Q>
  void TopUp(Q& ring, bool in_order, uint64_t& bad_buffers) {
    if (count_ < kAheadLow) PopAhead(ring, kAheadHigh, in_order, bad_buffers);
  }

  // The first `used` chains were returned to the ring: drops them.
  void Consume(uint32_t used) {
    count_ -= used;
    // An empty stash restarts at its first chain, so a pair that delivers
    // whole packets keeps reusing one hot chain rather than walking all of
    // them (and their segment arrays) through the cache.
    if (count_ == 0) {
      head_ = 0;
    } else {
      head_ += used;
      if (head_ >= chains_.size()) {
        head_ -= static_cast<uint32_t>(chains_.size());
      }
    }
  }

  // Returns every held chain unused (length 0), in ring order. False if
  // none was held (nothing pushed).
  template <VirtQueue Q>
  bool ReturnAll(Q& ring) {
    if (count_ == 0) return false;
    for (uint32_t i = 0; i < count_; ++i) ring.Push(at(i).token(), 0);
    head_ = count_ = 0;
    return true;
  }

  // Forgets the held chains (device reset: the ring is gone).
  void Clear() { head_ = count_ = 0; }

 private:
  // Pops until `target` chains are held or the ring has none, then
  // prefetches the new ones (all of them if an IN_ORDER flush emptied the
  // stash meanwhile). kChain if at least one was popped, else the status
  // of the failed pop.
  template <VirtQueue Q>
  PopStatus PopAhead(Q& ring, uint32_t target, bool in_order,
                     uint64_t& bad_buffers) {
    uint32_t from = count_;
    PopStatus st = PopStatus::kEmpty;
    bool popped = false;
    while (count_ < target) {
      const uint64_t flushes = flushes_;
      st = Pop(ring, in_order, bad_buffers);
      if (st != PopStatus::kChain) break;
      popped = true;
      if (flushes_ != flushes) from = 0;
    }
    PrefetchFrom(from);
    return popped ? PopStatus::kChain : st;
  }

  void PrefetchFrom(uint32_t from) {
    for (uint32_t i = from; i < count_; ++i) {
      const absl::Span<const iovec> w = at(i).writable();
      if (w.empty()) continue;
      const auto* base = static_cast<const uint8_t*>(w[0].iov_base);
      Prefetch(base, prefetch_header_for_write_);
      if (w[0].iov_len > net::kHeaderSize) {
        Prefetch(base + net::kHeaderSize, /*for_write=*/true);
      }
      if (w[0].iov_len > 64 + net::kHeaderSize) {
        Prefetch(base + 64 + net::kHeaderSize, /*for_write=*/true);
      }
    }
  }

  // chains_[(head_ + i) % size] for i < count_ are held.
  std::vector<DescriptorChain> chains_;
  uint32_t head_ = 0;
  uint32_t count_ = 0;
  uint64_t flushes_ = 0;
  bool prefetch_header_for_write_;
};

}  // namespace virtio

#endif  // VIRTIO_NET_RX_STASH_H_
