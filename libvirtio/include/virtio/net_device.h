// virtio/net_device.h — virtio-net (VIRTIO 1.2 §5.1) on any NetBackend.
//
// NetDevice<T, Backend> is a DeviceCore device (CRTP, no virtual calls):
// transports drive it through DeviceCore's public API; it moves packets
// between its virtqueues and a backend satisfying `NetBackend`
// (virtio/net_backend.h): TapNet, LoopbackNet or your own.
//
// Parts, one header each: the options (virtio/net_device_options.h), the
// feature rules (virtio/net_features.h), the receive buffers popped ahead
// (virtio/net_rx_stash.h), the copy into them (virtio/net_rx_source.h),
// the receive filter (virtio/net_rx_filter.h), the control queue
// (virtio/net_control_queue.h) and the per-pair counters
// (virtio/net_pair_stats.h). This file keeps the device that ties them
// together: queue layout, transmit, receive, link and the DeviceCore hooks.
//
// Queues. 2 * max_pairs + 1: receiveq(i) = 2i, transmitq(i) = 2i + 1, then
// the control queue. As the spec numbers them, the control queue is queue
// 2 * max_pairs when MQ is negotiated and queue 2 otherwise (then only pair
// 0 exists for the driver).
//
// Features offered: MAC, STATUS, MRG_RXBUF, MTU (when options.mtu != 0),
// CTRL_VQ with CTRL_RX, CTRL_RX_EXTRA, CTRL_VLAN, GUEST_ANNOUNCE,
// CTRL_MAC_ADDR, CTRL_GUEST_OFFLOADS and (max_pairs > 1) MQ, and whichever of
// CSUM, GUEST_CSUM, HOST_/GUEST_TSO4, TSO6, UFO, ECN the backend supports
// (backend.offloads()), and VIRTIO_F_IN_ORDER (options.ring.in_order, on by
// default: every queue uses its buffers in ring order; DPDK's virtio PMD
// then keeps descriptors in ring order and takes its in-order paths, and a
// packed transmit queue returns each batch as one used descriptor).
// options.disable_features withholds any of them.
// FEATURES_OK is refused when the driver breaks a dependency of §5.1.3.1
// (e.g. HOST_TSO4 without CSUM, MQ without CTRL_VQ).
//
// Transmit. Each tx chain is one packet: the 12-byte header then the frame,
// split across any number of descriptors (up to options.tx_segments host
// segments). The header is copied out of guest memory once and validated
// against the negotiated features (NEEDS_CSUM needs CSUM and csum_start +
// csum_offset + 2 <= frame length; gso_type needs the matching HOST_*
// feature, a non-zero gso_size and hdr_len <= frame length; ECN needs
// HOST_ECN; DATA_VALID / RSC_INFO are driver errors); the frame must be
// 14..65550 bytes (and, without GSO and with MTU negotiated, at most
// mtu + 18). The validated copy and the frame's guest iovecs go to
// backend.Send() — no copy of the payload here. A chain that is not ok()
// (lies about addresses or lengths), has device-writable buffers, is too
// short for the header, or fails validation is returned with length 0 and
// counted in tx_malformed; the device goes on. Packets are sent in batches
// (one backend Flush() and one Publish()/interrupt per batch of up to
// options.tx_batch). A kBusy backend stalls the pair's transmit with the
// packet held until ServiceBackend(). While the link is down, transmitted
// packets are consumed and counted in tx_dropped.
//
// Receive. backend.Receive() offers packets; each is filtered (promiscuous
// by default; with CTRL_RX: unicast to our MAC or the MAC table, broadcast
// unless NOBCAST, multicast per ALLMULTI / NOMULTI / the table; with
// CTRL_VLAN: tagged frames only for VLANs added), checked against the guest
// offloads in force (a header needing one the driver did not accept is
// dropped), and copied into rx chains. With MRG_RXBUF as many chains as the
// packet needs are used and num_buffers in the first header says how many;
// without it each chain must hold header + frame whole (65562 bytes if
// GUEST_TSO/UFO were negotiated, else 1526 suffice for MTU-sized frames), and
// a packet larger than the chain at hand is dropped and counted
// (rx_dropped). When the guest has no rx buffers left the packet stays
// pending in the backend (nothing is dropped): the device enables rx
// notifications and carries on at the next rx kick. Chains popped for a
// packet that is still incomplete are kept (not returned) until it
// completes. A packet that could not fit even if every descriptor of the
// ring were its buffer is dropped. Unusable rx chains (not ok(), readable
// parts, shorter than the header) are returned with length 0
// (rx_bad_buffers); under IN_ORDER the chains held for a packet being
// assembled go back (empty) before it, and the packet takes later ones.
//
// Control queue. [class, command, data...][ack], acked kCtrlOk / kCtrlErr:
// RX (PROMISC, ALLMULTI; ALLUNI, NOMULTI, NOUNI, NOBCAST with CTRL_RX_EXTRA),
// MAC (TABLE_SET with up to 64 unicast and 64 multicast entries — more
// switch that class to accept-all, as QEMU does; ADDR_SET with
// CTRL_MAC_ADDR), VLAN (ADD / DEL), ANNOUNCE (ACK), MQ (VQ_PAIRS_SET, 1..
// max_pairs, passed on to backend.SetActivePairs) and GUEST_OFFLOADS (SET,
// a subset of the negotiated guest offloads, passed on to
// backend.SetOffloads). Commands of features not negotiated, wrong data
// lengths and unknown commands get kCtrlErr.
//
// Link and announce. SetLinkUp(bool) flips the config status LINK_UP bit,
// bumps the configuration generation and sends a configuration-change
// interrupt. Announce() sets ANNOUNCE (with GUEST_ANNOUNCE negotiated) the
// same way; the driver's ANNOUNCE_ACK clears it.
//
// Threads and the glue. Each queue pair is served by one thread: its
// rx / tx kicks (Notify) and ServiceBackend(pair), called when
// backend.pair(pair).fd() is readable (or writable while tx_blocked(pair)),
// must not run concurrently. The control queue may run on another thread;
// the receive filter it updates (virtio/net_rx_filter.h) is guarded by a
// mutex taken per received packet only when the filter is not promiscuous.
// Reset must not race with any of them (as device_core.h says). Allocation
// happens at construction only; per pair the device keeps one tx chain,
// min(options.queue_size, NetRxStash::kMaxChains) rx chains
// (options.rx_segments segments each) and an iovec array.
//
// Example:
//   auto tap = virtio::TapNet::Open({.name = "vm0", .num_pairs = 2});
//   auto net = virtio::NetDevice<MyTraits, virtio::TapNet>::Create(
//       memory, interrupt, **tap, {.max_pairs = 2, .mac = {...}});
//   virtio::PciTransport<virtio::NetDevice<MyTraits, virtio::TapNet>>
//   pci(**net);
//   // kicks -> net->Notify(q); (*tap)->pair(i).fd() readable ->
//   // net->ServiceBackend(i); link change -> net->SetLinkUp(false).
#ifndef VIRTIO_NET_DEVICE_H_
#define VIRTIO_NET_DEVICE_H_

#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/descriptor_chain.h"
#include "virtio/device_core.h"
#include "virtio/hypervisor.h"
#include "virtio/net_backend.h"
#include "virtio/net_control_queue.h"
#include "virtio/net_device_options.h"
#include "virtio/net_features.h"
#include "virtio/net_pair_stats.h"
#include "virtio/net_rx_filter.h"
#include "virtio/net_rx_source.h"
#include "virtio/net_rx_stash.h"
#include "virtio/net_spec.h"
#include "virtio/queue.h"
#include "virtio/ring_access.h"
#include "virtio/spec.h"

namespace virtio {

template <HypervisorTraits T, NetBackend Backend>
class NetDevice : public DeviceCore<T, NetDevice<T, Backend>> {
  using Core = DeviceCore<T, NetDevice<T, Backend>>;
  friend Core;

 public:
  static constexpr uint32_t kDeviceId = spec::kDeviceIdNet;
  static constexpr uint16_t kMaxPairs = 1024;
  static constexpr uint32_t kMacTableEntries = NetRxFilter::kMacTableEntries;

  static absl::StatusOr<std::unique_ptr<NetDevice>> Create(
      const typename Core::Memory& memory, typename Core::Interrupt& interrupt,
      Backend& backend, const NetDeviceOptions& options) {
    if (options.max_pairs == 0 || options.max_pairs > backend.num_pairs() ||
        options.max_pairs > kMaxPairs) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: max_pairs %u not in 1..%u (the backend's pairs, at most %u)",
          options.name, options.max_pairs, backend.num_pairs(), kMaxPairs));
    }
    if (options.queue_size < 2 || options.queue_size > spec::kMaxQueueSize ||
        options.ctrl_queue_size < 1 ||
        options.ctrl_queue_size > spec::kMaxQueueSize) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: queue sizes %u / %u not in 2..%u", options.name,
          options.queue_size, options.ctrl_queue_size, spec::kMaxQueueSize));
    }
    if (options.mtu != 0 && options.mtu < 68) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: mtu %u below 68", options.name, options.mtu));
    }
    if (options.tx_segments < 1 || options.tx_segments > 1023 ||
        options.rx_segments < 1 || options.rx_segments > 1024 ||
        options.tx_batch == 0 || options.rx_batch == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tx_segments (1..1023), rx_segments (1..1024), tx_batch and "
          "rx_batch (>= 1) out of range",
          options.name));
    }
    if (options.max_pairs > 1 && !options.ctrl_vq) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: max_pairs > 1 needs the control queue (MQ)", options.name));
    }
    return std::unique_ptr<NetDevice>(
        new NetDevice(memory, interrupt, backend, options));
  }

  ~NetDevice() = default;

  // --- Queue layout ----------------------------------------------------------
  static constexpr uint16_t rx_queue(uint16_t pair) { return 2 * pair; }
  static constexpr uint16_t tx_queue(uint16_t pair) { return 2 * pair + 1; }
  uint16_t max_pairs() const { return options_.max_pairs; }
  // Index of the control queue as the driver sees it (valid with CTRL_VQ).
  uint16_t ctrl_queue() const {
    return (negotiated_ & spec::Bit(net::kFeatureMq)) ? 2 * options_.max_pairs
                                                      : 2;
  }
  // Pairs in use (VQ_PAIRS_SET; 1 without MQ).
  uint16_t active_pairs() const { return ctrl_.active_pairs(); }

  // --- For the glue ----------------------------------------------------------

  // Link state (config status LINK_UP); a change interrupts the driver.
  void SetLinkUp(bool up) {
    const uint16_t old = status_.load(std::memory_order_relaxed);
    const uint16_t now =
        up ? (old | net::kStatusLinkUp) : (old & ~net::kStatusLinkUp);
    if (old == now) return;
    status_.store(now, std::memory_order_release);
    this->ConfigChanged();
  }
  bool link_up() const {
    return status_.load(std::memory_order_acquire) & net::kStatusLinkUp;
  }

  // Asks the driver to announce itself (gratuitous ARP etc., e.g. after
  // migration). False unless GUEST_ANNOUNCE was negotiated and the device
  // is live.
  bool Announce() {
    if (!(negotiated_ & spec::Bit(net::kFeatureGuestAnnounce)) || !Live()) {
      return false;
    }
    status_.fetch_or(net::kStatusAnnounce, std::memory_order_acq_rel);
    this->ConfigChanged();
    return true;
  }
  bool announce_pending() const {
    return status_.load(std::memory_order_acquire) & net::kStatusAnnounce;
  }

  // The backend's pair `pair` has packets to receive, or room to send:
  // retries a held tx packet, then delivers pending packets to the guest.
  void ServiceBackend(uint16_t pair) {
    if (!PairExists(pair) || !Live()) return;
    this->WithQueue(tx_queue(pair), [&](uint16_t q, auto& ring) {
      if (pairs_[pair].tx_held) RunTx(pair, q, ring);
      CheckRing(q, ring);
    });
    this->WithQueue(rx_queue(pair), [&](uint16_t q, auto& ring) {
      RunRx(pair, q, ring);
      CheckRing(q, ring);
    });
  }

  // True while pair `pair`'s transmit waits for the backend (poll its fd
  // for POLLOUT, then call ServiceBackend).
  bool tx_blocked(uint16_t pair) const {
    return pair < pairs_.size() && pairs_[pair].tx_held;
  }
  // rx chains popped and held for a packet not yet complete.
  uint32_t rx_held(uint16_t pair) const {
    return pair < pairs_.size() ? pairs_[pair].rx.count() : 0;
  }
  const NetPairStats& stats(uint16_t pair) const { return pairs_[pair].stats; }
  NetPairStats total_stats() const {
    NetPairStats t;
    for (const PairState& p : pairs_) {
      const NetPairStats& s = p.stats;
      t.tx_packets += s.tx_packets;
      t.tx_bytes += s.tx_bytes;
      t.tx_malformed += s.tx_malformed;
      t.tx_dropped += s.tx_dropped;
      t.tx_busy += s.tx_busy;
      t.rx_packets += s.rx_packets;
      t.rx_bytes += s.rx_bytes;
      t.rx_dropped += s.rx_dropped;
      t.rx_filtered += s.rx_filtered;
      t.rx_bad_buffers += s.rx_bad_buffers;
      t.rx_stalls += s.rx_stalls;
    }
    return t;
  }
  uint64_t ctrl_commands() const { return ctrl_.commands(); }
  uint64_t ctrl_errors() const { return ctrl_.errors(); }
  // Guest offloads (GUEST_* feature bits) currently in force.
  uint64_t guest_offloads() const { return ctrl_.guest_offloads(); }
  std::array<uint8_t, 6> mac() const { return filter_.mac(); }
  bool promisc() const { return filter_.promisc(); }
  bool allmulti() const { return filter_.allmulti(); }
  bool vlan_allowed(uint16_t vid) const { return filter_.vlan_allowed(vid); }
  Backend& backend() { return *backend_; }

  // --- Used by DeviceCore ---------------------------------------------------
  uint32_t ConfigSize() const { return sizeof(net::Config); }

  void ReadConfigBytes(uint32_t offset, void* data, uint32_t len) {
    net::Config c{};
    {
      const std::array<uint8_t, 6> mac = filter_.mac();
      std::memcpy(c.mac, mac.data(), 6);
    }
    c.status = status_.load(std::memory_order_acquire);
    c.max_virtqueue_pairs = options_.max_pairs;
    c.mtu = options_.mtu;
    c.speed = 0xffffffff;
    c.duplex = 0xff;
    std::memcpy(data, reinterpret_cast<const uint8_t*>(&c) + offset, len);
  }

  void WriteConfigBytes(uint32_t offset, const void*, uint32_t len) {
    // Modern devices have a read-only config (the MAC is changed with
    // CTRL_MAC_ADDR); legacy drivers writing it are not supported.
    this->GuestError(absl::StrFormat(
        "config write of %u bytes at %u (read-only); ignored", len, offset));
  }

  bool AcceptFeatures(uint64_t f) {
    const NetFeatureCheck check =
        NetCheckFeatures(f, options_.relaxed_ctrl_dependencies);
    if (check.broken != nullptr) {
      this->GuestError(
          absl::StrFormat("feature dependency broken: %s", check.broken));
      return false;
    }
    negotiated_ = check.effective;
    mrg_rxbuf_ = (negotiated_ & spec::Bit(net::kFeatureMrgRxbuf)) != 0;
    in_order_ = (negotiated_ & spec::Bit(spec::kFeatureInOrder)) != 0;
    // Without CTRL_VLAN nothing is filtered by VLAN (QEMU's behaviour).
    filter_.SetVlanFiltering(negotiated_ & spec::Bit(net::kFeatureCtrlVlan));
    return true;
  }

  void OnDriverOk() {
    const uint64_t guest = negotiated_ & net::kGuestOffloadFeatures;
    if (!ctrl_.Start(guest)) {
      Logf(LogLevel::kWarning, "%s: backend refused guest offloads 0x%x",
           this->name(), guest);
    }
  }

  void OnReset() {
    for (PairState& p : pairs_) {
      p.tx_held = false;
      p.rx.Clear();
    }
    filter_.Reset(options_.mac);
    status_.fetch_and(static_cast<uint16_t>(~net::kStatusAnnounce),
                      std::memory_order_acq_rel);
    ctrl_.Reset();
    negotiated_ = 0;
    mrg_rxbuf_ = false;
    in_order_ = false;
  }

  // DisableQueue(): the ring is about to go away. Held chains are returned
  // unused (length 0): a tx packet the backend was busy for is dropped
  // (tx_dropped); rx chains held for an incomplete packet go back empty
  // and the packet stays pending in the backend for the resumed ring.
  void OnQueueDisabled(uint16_t index) {
    if (HasCtrl() && index == ctrl_queue()) return;
    const uint16_t pair = index / 2;
    if (pair >= pairs_.size()) return;
    PairState& ps = pairs_[pair];
    this->WithQueue(index, [&](uint16_t q, auto& ring) {
      if (index % 2 == 1) {
        if (!ps.tx_held) return;
        ps.tx_held = false;
        ++ps.stats.tx_dropped;
        ring.Push(ps.tx_chain.token(), 0);
      } else {
        if (!ps.rx.ReturnAll(ring)) return;
      }
      if (ring.Publish()) this->interrupt().SignalQueue(q);
      // Stalled, the queue left its notifications off: whoever resumes the
      // ring must hear the driver's next kick.
      ring.EnableNotification();
    });
  }

  template <VirtQueue Q>
  void ProcessQueue(uint16_t index, Q& ring) {
    if (HasCtrl() && index == ctrl_queue()) {
      ctrl_.Run(
          ring, negotiated_, [&] { this->interrupt().SignalQueue(index); },
          [&](std::string_view why) { this->GuestError(why); });
      return;
    }
    const uint16_t pair = index / 2;
    if (!PairExists(pair)) return;
    if (index % 2 == 0) {
      RunRx(pair, index, ring);
    } else {
      RunTx(pair, index, ring);
    }
  }

 private:
  struct PairState {
    PairState(uint32_t tx_segments, uint32_t rx_segments, uint32_t rx_chains,
              bool rx_prefetch_header_for_write)
        : tx_chain(tx_segments),
          tx_iov(new iovec[tx_segments + 1]),
          rx(rx_chains, rx_segments, rx_prefetch_header_for_write) {}
    PairState(PairState&&) noexcept = default;

    DescriptorChain tx_chain;
    std::unique_ptr<iovec[]> tx_iov;
    net::Header tx_hdr{};
    bool tx_held = false;
    NetRxStash rx;
    NetPairStats stats;
  };

  enum class RxOutcome { kConsumed, kNoBuffers };

  NetDevice(const typename Core::Memory& memory,
            typename Core::Interrupt& interrupt, Backend& backend,
            const NetDeviceOptions& options)
      : Core(memory, interrupt, options.name,
             NetOfferedFeatures(backend.offloads(), options),
             QueueSizes(options), options.ring),
        backend_(&backend),
        options_(options),
        filter_(options.mac),
        ctrl_(backend, filter_, status_, options.max_pairs) {
    pairs_.reserve(options_.max_pairs);
    for (uint16_t i = 0; i < options_.max_pairs; ++i) {
      // The header's line is prefetched only for reading where an
      // unchanged header is left alone (rx_keep_same_header).
      pairs_.emplace_back(options_.tx_segments, options_.rx_segments,
                          NetRxStash::Capacity(options_.queue_size),
                          !options_.rx_keep_same_header);
    }
    status_.store(options_.link_up ? net::kStatusLinkUp : 0);
  }

  static std::vector<uint32_t> QueueSizes(const NetDeviceOptions& o) {
    std::vector<uint32_t> sizes(size_t{2} * o.max_pairs, o.queue_size);
    if (o.ctrl_vq) sizes.push_back(o.ctrl_queue_size);
    return sizes;
  }

  bool HasCtrl() const { return negotiated_ & spec::Bit(net::kFeatureCtrlVq); }
  bool PairExists(uint16_t pair) const {
    if (pair >= options_.max_pairs) return false;
    // Without MQ only pair 0 exists for the driver (queue 2 is control).
    return pair == 0 || (negotiated_ & spec::Bit(net::kFeatureMq));
  }
  bool Live() const {
    const uint8_t s = this->status();
    return (s & spec::kStatusDriverOk) &&
           !(s & (spec::kStatusDeviceNeedsReset | spec::kStatusFailed));
  }
  template <typename Q>
  void CheckRing(uint16_t q, Q& ring) {
    if (ring.error() != RingError::kNone) {
      this->SetNeedsReset(
          absl::StrFormat("queue %u: %s", q, RingErrorName(ring.error())));
    }
  }

  // --- Transmit --------------------------------------------------------------

  template <VirtQueue Q>
  void RunTx(uint16_t pair, uint16_t index, Q& ring) {
    PairState& ps = pairs_[pair];
    auto& bp = backend_->pair(pair);
    for (;;) {
      ring.DisableNotification();
      uint32_t n = 0;
      bool busy = false;
      while (n < options_.tx_batch) {
        if (!ps.tx_held) {
          if (ring.Pop(ps.tx_chain) != PopStatus::kChain) break;
          ring.PrefetchAhead(/*for_write=*/false);
        }
        if (!TransmitOne(ps, bp)) {
          ps.tx_held = true;
          ++ps.stats.tx_busy;
          busy = true;
          break;
        }
        ps.tx_held = false;
        ring.Push(ps.tx_chain.token(), 0);
        ++n;
      }
      bp.Flush();
      if (ring.Publish()) this->interrupt().SignalQueue(index);
      if (busy || ring.error() != RingError::kNone) return;
      if (n == options_.tx_batch) continue;
      if (!ring.EnableNotification()) return;
    }
  }

  // Sends ps.tx_chain. False if the backend was busy (nothing consumed).
  bool TransmitOne(PairState& ps, typename Backend::Pair& bp) {
    const DescriptorChain& c = ps.tx_chain;
    if (!c.ok() || c.writable_bytes() != 0 ||
        c.readable_bytes() < net::kHeaderSize) {
      ++ps.stats.tx_malformed;
      return true;
    }
    const uint64_t frame_len = c.readable_bytes() - net::kHeaderSize;
    net::Header& h = ps.tx_hdr;
    const iovec& first = c.readable()[0];
    if (first.iov_len >= sizeof h) [[likely]] {
      // A fixed-size copy the compiler inlines (the header and the frame
      // usually share a descriptor).
      std::memcpy(&h, first.iov_base, sizeof h);
    } else {
      c.CopyFromReadable(0, &h, sizeof h);
    }
    if (frame_len < net::kEthHeaderLen || frame_len > net::kMaxFrameSize ||
        !NetValidTxHeader(h, static_cast<uint32_t>(frame_len), negotiated_,
                          options_.mtu)) {
      ++ps.stats.tx_malformed;
      return true;
    }
    if (!link_up()) {
      ++ps.stats.tx_dropped;
      return true;
    }
    h.num_buffers = 0;
    iovec* iov = ps.tx_iov.get();
    iov[0] = {&h, sizeof h};
    uint32_t n = 1;
    uint64_t skip = net::kHeaderSize;
    for (const iovec& seg : c.readable()) {
      if (skip >= seg.iov_len) {
        skip -= seg.iov_len;
        continue;
      }
      iov[n].iov_base = static_cast<uint8_t*>(seg.iov_base) + skip;
      iov[n].iov_len = seg.iov_len - skip;
      skip = 0;
      ++n;
    }
    switch (bp.Send(h, iov, n, static_cast<uint32_t>(frame_len))) {
      case NetSendStatus::kSent:
        ++ps.stats.tx_packets;
        ps.stats.tx_bytes += frame_len;
        return true;
      case NetSendStatus::kDropped:
        ++ps.stats.tx_dropped;
        return true;
      case NetSendStatus::kBusy:
        return false;
    }
    return true;
  }

  // --- Receive ---------------------------------------------------------------

  template <VirtQueue Q>
  void RunRx(uint16_t pair, uint16_t index, Q& ring) {
    PairState& ps = pairs_[pair];
    auto& bp = backend_->pair(pair);
    ring.DisableNotification();
    // Bounded so one flooding pair cannot monopolise its thread: a pending
    // backend stays readable and the glue calls again.
    for (int round = 0; round < 4; ++round) {
      uint32_t budget = options_.rx_batch;
      bool need_buffers = false;
      bp.Receive([&](const NetRxPacket& p) {
        if (budget == 0) return false;
        if (DeliverOne(ps, ring, p) == RxOutcome::kNoBuffers) {
          need_buffers = true;
          return false;
        }
        --budget;
        return true;
      });
      if (ring.Publish()) this->interrupt().SignalQueue(index);
      if (ring.error() != RingError::kNone) return;
      if (need_buffers) {
        ++ps.stats.rx_stalls;
        // Buffers posted meanwhile: try again; else wait for the kick.
        if (ring.EnableNotification()) {
          ring.DisableNotification();
          continue;
        }
        return;
      }
      if (budget != 0) return;  // backend drained
    }
  }

  // Accept-or-drop checks that need no guest buffers.
  bool Deliverable(PairState& ps, const NetRxPacket& p, net::Header& h) {
    if (!link_up() || p.frame_len < net::kEthHeaderLen ||
        p.frame_len > net::kMaxFrameSize) {
      ++ps.stats.rx_dropped;
      return false;
    }
    if (p.header == nullptr) {
      h = net::Header{};  // nothing to check against the offloads
    } else if (!NetRxHeaderAllowed(*p.header, ctrl_.guest_offloads(), h)) {
      ++ps.stats.rx_dropped;
      return false;
    }
    if (!filter_.promisc()) {
      uint8_t eth[net::kEthHeaderLen + net::kVlanHeaderLen] = {};
      NetRxGather(p, eth, std::min<uint32_t>(sizeof eth, p.frame_len));
      if (!filter_.Accept(eth, p.frame_len)) {
        ++ps.stats.rx_filtered;
        return false;
      }
    }
    return true;
  }

  template <VirtQueue Q>
  RxOutcome DeliverOne(PairState& ps, Q& ring, const NetRxPacket& p) {
    net::Header h;
    if (!Deliverable(ps, p, h)) return RxOutcome::kConsumed;
    const uint64_t need = uint64_t{net::kHeaderSize} + p.frame_len;
    NetRxStash& stash = ps.rx;
    uint64_t& bad_buffers = ps.stats.rx_bad_buffers;
    uint32_t used = 0;  // chains this packet takes
    if (mrg_rxbuf_) {
      stash.TopUp(ring, in_order_, bad_buffers);
      uint64_t have = 0;
      uint64_t slots = 0;
      while (have < need) {
        if (used == stash.count()) {
          // Every descriptor of the ring, or as many chains as the stash
          // holds, already waits here: the packet can never fit.
          if (slots >= ring.size() || stash.full()) {
            ++ps.stats.rx_dropped;
            return RxOutcome::kConsumed;
          }
          const uint64_t flushes = stash.flushes();
          if (stash.PopBatch(ring, in_order_, bad_buffers) !=
              PopStatus::kChain) {
            return RxOutcome::kNoBuffers;
          }
          if (stash.flushes() != flushes) {  // the held chains were returned
            have = slots = 0;
            used = 0;
            continue;
          }
        }
        const DescriptorChain& c = stash.at(used);
        have += c.writable_bytes();
        slots += c.token().ring_slots != 0 ? c.token().ring_slots
                                           : std::max(1u, c.descriptor_count());
        ++used;
      }
    } else {
      stash.TopUp(ring, in_order_, bad_buffers);
      if (stash.count() == 0) return RxOutcome::kNoBuffers;
      if (stash.at(0).writable_bytes() < need) {
        ++ps.stats.rx_dropped;  // the chain stays for the next packet
        return RxOutcome::kConsumed;
      }
      used = 1;
    }
    h.num_buffers = static_cast<uint16_t>(used);
    // Copy header + frame across the chains, returning each as it fills.
    NetRxSource src(h, p, options_.rx_keep_same_header);
    bool copied = false;
    if (used == 1 && p.iovcnt == 1 && p.iov[0].iov_len >= p.frame_len) {
      // The usual case, one buffer's first segment taking the whole
      // packet: header and frame land without the segment walk.
      DescriptorChain& c = stash.at(0);
      const absl::Span<const iovec> w = c.writable();
      if (!w.empty() && w[0].iov_len >= need) [[likely]] {
        src.CopyWhole(static_cast<uint8_t*>(w[0].iov_base));
        ring.Push(c.token(), static_cast<uint32_t>(need));
        copied = true;
      }
    }
    if (!copied) {
      uint64_t left = need;
      for (uint32_t i = 0; i < used; ++i) {
        DescriptorChain& c = stash.at(i);
        const uint64_t n = std::min<uint64_t>(c.writable_bytes(), left);
        uint64_t todo = n;
        for (const iovec& seg : c.writable()) {
          if (todo == 0) break;
          const size_t take =
              static_cast<size_t>(std::min<uint64_t>(seg.iov_len, todo));
          src.Copy(static_cast<uint8_t*>(seg.iov_base), take);
          todo -= take;
        }
        ring.Push(c.token(), static_cast<uint32_t>(n));
        left -= n;
      }
    }
    stash.Consume(used);
    ++ps.stats.rx_packets;
    ps.stats.rx_bytes += p.frame_len;
    return RxOutcome::kConsumed;
  }

  Backend* backend_;
  NetDeviceOptions options_;
  std::vector<PairState> pairs_;
  // Negotiated features (set at FEATURES_OK, cleared at reset).
  uint64_t negotiated_ = 0;
  bool mrg_rxbuf_ = false;
  // IN_ORDER negotiated: the rx stash returns held chains in ring order.
  bool in_order_ = false;
  // Config status (LINK_UP, ANNOUNCE); the control queue clears ANNOUNCE.
  std::atomic<uint16_t> status_{0};
  // MAC / VLAN filter, updated by the control queue (its own mutex).
  NetRxFilter filter_;
  NetControlQueue<Backend> ctrl_;
};

}  // namespace virtio

#endif  // VIRTIO_NET_DEVICE_H_
