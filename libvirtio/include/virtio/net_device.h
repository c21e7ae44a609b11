// virtio/net_device.h — virtio-net (VIRTIO 1.2 §5.1) on any NetBackend.
//
// NetDevice<T, Backend> is a DeviceCore device (CRTP, no virtual calls):
// transports drive it through DeviceCore's public API; it moves packets
// between its virtqueues and a backend satisfying `NetBackend`
// (virtio/net_backend.h): TapNet, LoopbackNet or your own.
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
// min(options.queue_size, kMaxRxStash) rx chains (options.rx_segments
// segments each) and an iovec array.
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
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/descriptor_chain.h"
#include "virtio/device_core.h"
#include "virtio/hypervisor.h"
#include "virtio/net_backend.h"
#include "virtio/net_rx_filter.h"
#include "virtio/net_spec.h"
#include "virtio/queue.h"
#include "virtio/ring_access.h"
#include "virtio/spec.h"

namespace virtio {

struct NetDeviceOptions {
  std::string name = "net";
  std::array<uint8_t, 6> mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  // Queue pairs (MQ is offered when > 1); at most the backend's num_pairs().
  uint16_t max_pairs = 1;
  // Maximum size of each rx / tx virtqueue.
  uint32_t queue_size = 256;
  uint32_t ctrl_queue_size = 64;
  // Offer MTU with this value; 0: not offered.
  uint16_t mtu = 0;
  bool link_up = true;
  // Offer CTRL_VQ and the features that need it.
  bool ctrl_vq = true;
  // Net feature bits not to offer (e.g. spec::Bit(net::kFeatureMrgRxbuf)).
  uint64_t disable_features = 0;
  // Accept control-queue features (CTRL_RX, CTRL_RX_EXTRA, CTRL_VLAN,
  // GUEST_ANNOUNCE, MQ, CTRL_MAC_ADDR, CTRL_GUEST_OFFLOADS) negotiated
  // without CTRL_VQ, and GUEST_ANNOUNCE without STATUS, instead of refusing
  // FEATURES_OK. For glues whose "driver" is a front-end that keeps the
  // control queue and the config space to itself and passes on only part
  // of the guest's features: QEMU's vhost-user net sends GUEST_ANNOUNCE and
  // MQ but never CTRL_VQ or STATUS. Such features then have no effect here
  // (no VLAN filtering, no announce), except MQ: its queue pairs exist.
  bool relaxed_ctrl_dependencies = false;
  // Packets per batch (one Flush / Publish each).
  uint32_t tx_batch = 256;
  uint32_t rx_batch = 256;
  // Host segments a tx chain may have (after the header is split off, plus
  // one for it: a writev of at most 1024) and an rx chain may have.
  uint32_t tx_segments = 1023;
  uint32_t rx_segments = 64;
  // Leave the virtio-net header of an rx buffer alone when the buffer
  // already holds the same bytes (usual for recycled buffers): the device
  // reads 12 bytes of a device-writable buffer, which VIRTIO 1.2 §2.7.4
  // allows but discourages (SHOULD NOT), and the driver keeps the header's
  // cache line instead of missing on it for every packet.
  bool rx_keep_same_header = true;
  // IN_ORDER on by default: every queue's buffers are used in ring order
  // (see the file comment).
  RingFeatureOptions ring = {.in_order = true};
};

// Per-pair counters, maintained by the pair's thread.
struct NetPairStats {
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;  // frame bytes, headers excluded
  // Chains not ok(), with writable parts, too short, or failing header /
  // length validation: dropped, returned with length 0.
  uint64_t tx_malformed = 0;
  // Dropped by the backend, or while the link was down.
  uint64_t tx_dropped = 0;
  // Times transmit stalled on a busy backend.
  uint64_t tx_busy = 0;
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  // Too big for the guest's buffers, link down, bad length, or needing an
  // offload the guest did not accept.
  uint64_t rx_dropped = 0;
  // Rejected by the MAC / VLAN filter.
  uint64_t rx_filtered = 0;
  // Unusable rx chains returned with length 0.
  uint64_t rx_bad_buffers = 0;
  // Times receive waited for the guest to post buffers.
  uint64_t rx_stalls = 0;
};

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

  // --- Queue layout
  // -------------------------------------------------------------
  static constexpr uint16_t rx_queue(uint16_t pair) { return 2 * pair; }
  static constexpr uint16_t tx_queue(uint16_t pair) { return 2 * pair + 1; }
  uint16_t max_pairs() const { return options_.max_pairs; }
  // Index of the control queue as the driver sees it (valid with CTRL_VQ).
  uint16_t ctrl_queue() const {
    return (negotiated_ & spec::Bit(net::kFeatureMq)) ? 2 * options_.max_pairs
                                                      : 2;
  }
  // Pairs in use (VQ_PAIRS_SET; 1 without MQ).
  uint16_t active_pairs() const {
    return active_pairs_.load(std::memory_order_relaxed);
  }

  // --- For the glue
  // -------------------------------------------------------------

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
    return pair < pairs_.size() ? pairs_[pair].rx_count : 0;
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
  uint64_t ctrl_commands() const { return ctrl_commands_; }
  uint64_t ctrl_errors() const { return ctrl_errors_; }
  // Guest offloads (GUEST_* feature bits) currently in force.
  uint64_t guest_offloads() const {
    return guest_offloads_.load(std::memory_order_relaxed);
  }
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

  // The first dependency of §5.1.3.1 that `f` breaks, or nullptr.
  static const char* BrokenDependency(uint64_t f) {
    auto has = [&](unsigned bit) { return (f & spec::Bit(bit)) != 0; };
    const char* broken = nullptr;
    if ((has(net::kFeatureGuestTso4) || has(net::kFeatureGuestTso6) ||
         has(net::kFeatureGuestUfo)) &&
        !has(net::kFeatureGuestCsum)) {
      broken = "GUEST_TSO4/6/UFO without GUEST_CSUM";
    } else if (has(net::kFeatureGuestEcn) && !has(net::kFeatureGuestTso4) &&
               !has(net::kFeatureGuestTso6)) {
      broken = "GUEST_ECN without GUEST_TSO4/6";
    } else if ((has(net::kFeatureHostTso4) || has(net::kFeatureHostTso6) ||
                has(net::kFeatureHostUfo)) &&
               !has(net::kFeatureCsum)) {
      broken = "HOST_TSO4/6/UFO without CSUM";
    } else if (has(net::kFeatureHostEcn) && !has(net::kFeatureHostTso4) &&
               !has(net::kFeatureHostTso6)) {
      broken = "HOST_ECN without HOST_TSO4/6";
    } else if ((has(net::kFeatureCtrlRx) || has(net::kFeatureCtrlVlan) ||
                has(net::kFeatureGuestAnnounce) || has(net::kFeatureMq) ||
                has(net::kFeatureCtrlMacAddr) ||
                has(net::kFeatureCtrlGuestOffloads)) &&
               !has(net::kFeatureCtrlVq)) {
      broken = "control-queue features without CTRL_VQ";
    } else if (has(net::kFeatureCtrlRxExtra) && !has(net::kFeatureCtrlRx)) {
      broken = "CTRL_RX_EXTRA without CTRL_RX";
    } else if (has(net::kFeatureGuestAnnounce) && !has(net::kFeatureStatus)) {
      broken = "GUEST_ANNOUNCE without STATUS";
    }
    return broken;
  }

  // True if `f` breaks no dependency once the bits in `forgiven` are
  // treated as absent.
  static bool AcceptableWithout(uint64_t f, uint64_t forgiven) {
    return BrokenDependency(f & ~forgiven) == nullptr;
  }

  bool AcceptFeatures(uint64_t f) {
    auto has = [&](unsigned bit) { return (f & spec::Bit(bit)) != 0; };
    const char* broken = BrokenDependency(f);
    uint64_t effective = f;
    if (broken != nullptr && options_.relaxed_ctrl_dependencies) {
      const uint64_t ctrl_only = spec::Bit(net::kFeatureCtrlRx) |
                                 spec::Bit(net::kFeatureCtrlRxExtra) |
                                 spec::Bit(net::kFeatureCtrlVlan) |
                                 spec::Bit(net::kFeatureGuestAnnounce) |
                                 spec::Bit(net::kFeatureCtrlMacAddr) |
                                 spec::Bit(net::kFeatureCtrlGuestOffloads);
      const uint64_t unmet =
          (has(net::kFeatureCtrlVq) ? 0 : ctrl_only) |
          (has(net::kFeatureStatus) ? 0
                                    : spec::Bit(net::kFeatureGuestAnnounce));
      // Only dependencies on the control queue or STATUS are forgiven:
      // the offload rules above still apply.
      const uint64_t forgiven =
          unmet | (has(net::kFeatureCtrlVq) ? 0 : spec::Bit(net::kFeatureMq));
      if (AcceptableWithout(f, forgiven)) {
        broken = nullptr;
        effective = f & ~unmet;
      }
    }
    if (broken != nullptr) {
      this->GuestError(
          absl::StrFormat("feature dependency broken: %s", broken));
      return false;
    }
    f = effective;
    negotiated_ = f;
    mrg_rxbuf_ = has(net::kFeatureMrgRxbuf);
    // Without CTRL_VLAN nothing is filtered by VLAN (QEMU's behaviour).
    filter_.SetVlanFiltering(has(net::kFeatureCtrlVlan));
    return true;
  }

  void OnDriverOk() {
    const uint64_t guest = negotiated_ & net::kGuestOffloadFeatures;
    if (!backend_->SetOffloads(guest)) {
      Logf(LogLevel::kWarning, "%s: backend refused guest offloads 0x%x",
           this->name(), guest);
    }
    guest_offloads_.store(guest, std::memory_order_relaxed);
    active_pairs_.store(1, std::memory_order_relaxed);
    backend_->SetActivePairs(1);
  }

  void OnReset() {
    for (PairState& p : pairs_) {
      p.tx_held = false;
      p.rx_head = p.rx_count = 0;
    }
    filter_.Reset(options_.mac);
    status_.fetch_and(static_cast<uint16_t>(~net::kStatusAnnounce),
                      std::memory_order_acq_rel);
    if (guest_offloads_.exchange(0, std::memory_order_relaxed) != 0) {
      backend_->SetOffloads(0);
    }
    if (active_pairs_.exchange(1, std::memory_order_relaxed) != 1) {
      backend_->SetActivePairs(1);
    }
    negotiated_ = 0;
    mrg_rxbuf_ = false;
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
        if (ps.rx_count == 0) return;
        for (uint32_t i = 0; i < ps.rx_count; ++i) {
          ring.Push(ps.rx[(ps.rx_head + i) % ps.rx.size()].token(), 0);
        }
        ps.rx_head = ps.rx_count = 0;
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
      RunCtrl(index, ring);
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
    PairState(uint32_t tx_segments, uint32_t rx_segments, uint32_t rx_chains)
        : tx_chain(tx_segments), tx_iov(new iovec[tx_segments + 1]) {
      rx.reserve(rx_chains);
      for (uint32_t i = 0; i < rx_chains; ++i) rx.emplace_back(rx_segments);
    }
    PairState(PairState&&) noexcept = default;

    DescriptorChain tx_chain;
    std::unique_ptr<iovec[]> tx_iov;
    net::Header tx_hdr{};
    bool tx_held = false;
    // rx chains popped and not yet used: rx[(rx_head + i) % rx.size()] for
    // i < rx_count.
    std::vector<DescriptorChain> rx;
    uint32_t rx_head = 0;
    uint32_t rx_count = 0;
    // Times held chains were returned early (IN_ORDER, an unusable chain
    // behind them): tells DeliverOne to assemble its packet again.
    uint64_t rx_flushes = 0;
    NetPairStats stats;
  };

  enum class RxOutcome { kConsumed, kNoBuffers };
  // rx chains popped ahead per batch (PopRxBatch).
  static constexpr uint32_t kRxPrepop = 32;
  // Most rx chains held popped per pair. The device holds only what the
  // packet being assembled needs plus a few ahead (kRxAheadHigh), so the
  // stash need not follow the ring: a queue_size that is only a limit
  // (vhost-user, where the front-end picks any size up to 32768) would
  // otherwise cost 32768 chains per pair. A mergeable packet of 64 KiB
  // spans more than 256 buffers only if they are under 256 bytes each.
  static constexpr uint32_t kMaxRxStash = 256;
  static uint32_t RxStashSize(const NetDeviceOptions& o) {
    return o.queue_size < kMaxRxStash ? o.queue_size : kMaxRxStash;
  }
  // Chains kept popped ahead of the packet being delivered (TopUpRx):
  // measured against testpmd, 8..16 beat both shallower and deeper windows
  // (deeper ones evict the lines they fetched before using them).
  static constexpr uint32_t kRxAheadLow = 8;
  static constexpr uint32_t kRxAheadHigh = 16;

  NetDevice(const typename Core::Memory& memory,
            typename Core::Interrupt& interrupt, Backend& backend,
            const NetDeviceOptions& options)
      : Core(memory, interrupt, options.name, Offered(backend, options),
             QueueSizes(options), options.ring),
        backend_(&backend),
        options_(options),
        filter_(options.mac) {
    pairs_.reserve(options_.max_pairs);
    for (uint16_t i = 0; i < options_.max_pairs; ++i) {
      pairs_.emplace_back(options_.tx_segments, options_.rx_segments,
                          RxStashSize(options_));
    }
    status_.store(options_.link_up ? net::kStatusLinkUp : 0);
  }

  static uint64_t Offered(const Backend& backend, const NetDeviceOptions& o) {
    uint64_t f = spec::Bit(net::kFeatureMac) | spec::Bit(net::kFeatureStatus) |
                 spec::Bit(net::kFeatureMrgRxbuf) |
                 (backend.offloads() & net::kOffloadFeatures);
    if (o.mtu != 0) f |= spec::Bit(net::kFeatureMtu);
    if (o.ctrl_vq) {
      f |= spec::Bit(net::kFeatureCtrlVq) | spec::Bit(net::kFeatureCtrlRx) |
           spec::Bit(net::kFeatureCtrlRxExtra) |
           spec::Bit(net::kFeatureCtrlVlan) |
           spec::Bit(net::kFeatureGuestAnnounce) |
           spec::Bit(net::kFeatureCtrlMacAddr);
      if (f & net::kGuestOffloadFeatures) {
        f |= spec::Bit(net::kFeatureCtrlGuestOffloads);
      }
      if (o.max_pairs > 1) f |= spec::Bit(net::kFeatureMq);
    }
    return f & ~o.disable_features;
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

  // --- Transmit
  // -------------------------------------------------------------------

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
        !ValidTxHeader(h, static_cast<uint32_t>(frame_len))) {
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

  bool ValidTxHeader(const net::Header& h, uint32_t frame_len) const {
    auto has = [&](unsigned bit) {
      return (negotiated_ & spec::Bit(bit)) != 0;
    };
    if (h.flags & ~net::kHdrFlagNeedsCsum) return false;
    if (h.flags & net::kHdrFlagNeedsCsum) {
      if (!has(net::kFeatureCsum)) return false;
      if (uint32_t{h.csum_start} + h.csum_offset + 2 > frame_len) return false;
    }
    const uint8_t gso = h.gso_type & ~net::kGsoEcn;
    switch (gso) {
      case net::kGsoNone:
        if (h.gso_type & net::kGsoEcn) return false;
        if ((negotiated_ & spec::Bit(net::kFeatureMtu)) &&
            frame_len > uint32_t{options_.mtu} + net::kEthHeaderLen +
                            net::kVlanHeaderLen) {
          return false;
        }
        return true;
      case net::kGsoTcpV4:
        if (!has(net::kFeatureHostTso4)) return false;
        break;
      case net::kGsoTcpV6:
        if (!has(net::kFeatureHostTso6)) return false;
        break;
      case net::kGsoUdp:
        if (!has(net::kFeatureHostUfo)) return false;
        break;
      default:
        return false;
    }
    if ((h.gso_type & net::kGsoEcn) && !has(net::kFeatureHostEcn)) return false;
    return h.gso_size != 0 && h.hdr_len <= frame_len;
  }

  // --- Receive
  // ----------------------------------------------------------------------

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
    } else if (!OffloadsAllow(ps, *p.header, h)) {
      return false;
    }
    if (!filter_.promisc()) {
      uint8_t eth[net::kEthHeaderLen + net::kVlanHeaderLen] = {};
      Gather(p, eth, std::min<uint32_t>(sizeof eth, p.frame_len));
      if (!filter_.Accept(eth, p.frame_len)) {
        ++ps.stats.rx_filtered;
        return false;
      }
    }
    return true;
  }

  // Copies the backend's header into `h` if the guest offloads in force
  // allow it (else counts a drop), masking flags the driver cannot take.
  bool OffloadsAllow(PairState& ps, const net::Header& in, net::Header& h) {
    h = in;
    const uint64_t g = guest_offloads_.load(std::memory_order_relaxed);
    auto on = [&](unsigned bit) { return (g & spec::Bit(bit)) != 0; };
    bool ok = true;
    if ((h.flags & net::kHdrFlagNeedsCsum) && !on(net::kFeatureGuestCsum)) {
      ok = false;
    }
    switch (h.gso_type & ~net::kGsoEcn) {
      case net::kGsoNone:
        if (h.gso_type & net::kGsoEcn) ok = false;
        break;
      case net::kGsoTcpV4:
        ok = ok && on(net::kFeatureGuestTso4);
        break;
      case net::kGsoTcpV6:
        ok = ok && on(net::kFeatureGuestTso6);
        break;
      case net::kGsoUdp:
        ok = ok && on(net::kFeatureGuestUfo);
        break;
      default:
        ok = false;
    }
    if ((h.gso_type & net::kGsoEcn) && !on(net::kFeatureGuestEcn)) ok = false;
    if (!ok) {
      ++ps.stats.rx_dropped;
      return false;
    }
    // DATA_VALID only means something to a driver that accepted GUEST_CSUM.
    h.flags &= on(net::kFeatureGuestCsum)
                   ? (net::kHdrFlagNeedsCsum | net::kHdrFlagDataValid)
                   : 0;
    return true;
  }

  static void Gather(const NetRxPacket& p, uint8_t* out, uint32_t n) {
    for (uint32_t i = 0; i < p.iovcnt && n > 0; ++i) {
      const uint32_t take =
          static_cast<uint32_t>(std::min<size_t>(p.iov[i].iov_len, n));
      std::memcpy(out, p.iov[i].iov_base, take);
      out += take;
      n -= take;
    }
  }

  // Pops the next rx chain into the stash. kChain: stashed; kEmpty / kBroken
  // as Pop(). Unusable chains are returned at once and skipped.
  template <VirtQueue Q>
  PopStatus PopRx(PairState& ps, Q& ring) {
    for (;;) {
      if (ps.rx_count == ps.rx.size()) return PopStatus::kEmpty;
      DescriptorChain& c = Stashed(ps, ps.rx_count);
      const PopStatus st = ring.Pop(c);
      if (st != PopStatus::kChain) return st;
      if (!c.ok() || c.readable_bytes() != 0 ||
          c.writable_bytes() < net::kHeaderSize) {
        ++ps.stats.rx_bad_buffers;
        if (ps.rx_count != 0 && this->Negotiated(spec::kFeatureInOrder)) {
          // Returning it now would overtake the chains held for the packet
          // being assembled: under IN_ORDER those go back first, empty (the
          // packet is assembled again from the chains that follow).
          for (uint32_t i = 0; i < ps.rx_count; ++i) {
            ring.Push(Stashed(ps, i).token(), 0);
          }
          ps.rx_count = 0;
          ps.rx_head = 0;
          ++ps.rx_flushes;
        }
        ring.Push(c.token(), 0);
        continue;
      }
      ++ps.rx_count;
      return PopStatus::kChain;
    }
  }

  // Pops up to kRxPrepop chains into the stash (kChain if at least one),
  // then starts fetching the start of each one's buffer (PopAhead). The
  // descriptor reads of the batch overlap one another, and the copies find
  // their lines arriving, instead of each packet's stores waiting for
  // ownership of lines the driver touched last, with the next descriptor
  // read queued behind them (that serialisation halved 64-byte rates).
  // Chains popped ahead of packets stay stashed for the next ones.
  template <VirtQueue Q>
  PopStatus PopRxBatch(PairState& ps, Q& ring) {
    return PopAhead(ps, ring, ps.rx_count + kRxPrepop);
  }

  // The rolling window every packet keeps: once fewer than kRxAheadLow
  // chains wait in the stash, pops up to kRxAheadHigh, so that each
  // packet's lines were requested some packets earlier instead of all of a
  // batch at once.
  template <VirtQueue Q>
  void TopUpRx(PairState& ps, Q& ring) {
    if (ps.rx_count < kRxAheadLow) PopAhead(ps, ring, kRxAheadHigh);
  }

  // Pops until the stash holds `target` chains or the ring has none, then
  // prefetches the new ones (all of them if an IN_ORDER flush emptied the
  // stash meanwhile). kChain if at least one was popped, else the status
  // of the failed pop.
  template <VirtQueue Q>
  PopStatus PopAhead(PairState& ps, Q& ring, uint32_t target) {
    uint32_t from = ps.rx_count;
    PopStatus st = PopStatus::kEmpty;
    bool popped = false;
    while (ps.rx_count < target) {
      const uint64_t flushes = ps.rx_flushes;
      st = PopRx(ps, ring);
      if (st != PopStatus::kChain) break;
      popped = true;
      if (ps.rx_flushes != flushes) from = 0;
    }
    PrefetchStashed(ps, from);
    return popped ? PopStatus::kChain : st;
  }

  void PrefetchStashed(PairState& ps, uint32_t from) {
    for (uint32_t i = from; i < ps.rx_count; ++i) {
      const absl::Span<const iovec> w = Stashed(ps, i).writable();
      if (w.empty()) continue;
      const auto* base = static_cast<const uint8_t*>(w[0].iov_base);
      // The header's line only for reading where an unchanged header is
      // left alone: owning it would take it from the driver anyway.
      Prefetch(base, /*for_write=*/!options_.rx_keep_same_header);
      if (w[0].iov_len > net::kHeaderSize) {
        Prefetch(base + net::kHeaderSize, /*for_write=*/true);
      }
      if (w[0].iov_len > 64 + net::kHeaderSize) {
        Prefetch(base + 64 + net::kHeaderSize, /*for_write=*/true);
      }
    }
  }

  DescriptorChain& Stashed(PairState& ps, uint32_t i) {
    // i <= rx_count <= rx.size(): one wrap at most, so no division (there
    // were four per packet).
    uint32_t at = ps.rx_head + i;
    if (at >= ps.rx.size()) at -= static_cast<uint32_t>(ps.rx.size());
    return ps.rx[at];
  }

  template <VirtQueue Q>
  RxOutcome DeliverOne(PairState& ps, Q& ring, const NetRxPacket& p) {
    net::Header h;
    if (!Deliverable(ps, p, h)) return RxOutcome::kConsumed;
    const uint64_t need = uint64_t{net::kHeaderSize} + p.frame_len;
    uint32_t used = 0;  // chains this packet takes
    if (mrg_rxbuf_) {
      TopUpRx(ps, ring);
      uint64_t have = 0;
      uint64_t slots = 0;
      while (have < need) {
        if (used == ps.rx_count) {
          // Every descriptor of the ring, or as many chains as the stash
          // holds, already waits here: the packet can never fit.
          if (slots >= ring.size() || ps.rx_count == ps.rx.size()) {
            ++ps.stats.rx_dropped;
            return RxOutcome::kConsumed;
          }
          const uint64_t flushes = ps.rx_flushes;
          if (PopRxBatch(ps, ring) != PopStatus::kChain) {
            return RxOutcome::kNoBuffers;
          }
          if (ps.rx_flushes != flushes) {  // the held chains were returned
            have = slots = 0;
            used = 0;
            continue;
          }
        }
        const DescriptorChain& c = Stashed(ps, used);
        have += c.writable_bytes();
        slots += c.token().ring_slots != 0 ? c.token().ring_slots
                                           : std::max(1u, c.descriptor_count());
        ++used;
      }
    } else {
      TopUpRx(ps, ring);
      if (ps.rx_count == 0) return RxOutcome::kNoBuffers;
      if (Stashed(ps, 0).writable_bytes() < need) {
        ++ps.stats.rx_dropped;  // the chain stays for the next packet
        return RxOutcome::kConsumed;
      }
      used = 1;
    }
    h.num_buffers = static_cast<uint16_t>(used);
    // Copy header + frame across the chains, returning each as it fills.
    Source src(h, p, options_.rx_keep_same_header);
    bool copied = false;
    if (used == 1 && p.iovcnt == 1 && p.iov[0].iov_len >= p.frame_len) {
      // The usual case, one buffer's first segment taking the whole
      // packet: header and frame land without the segment walk.
      DescriptorChain& c = Stashed(ps, 0);
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
        DescriptorChain& c = Stashed(ps, i);
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
    ps.rx_count -= used;
    // An empty stash restarts at its first chain, so a pair that delivers
    // whole packets keeps reusing one hot chain rather than walking all
    // of them (and their segment arrays) through the cache.
    if (ps.rx_count == 0) {
      ps.rx_head = 0;
    } else {
      ps.rx_head += used;
      if (ps.rx_head >= ps.rx.size()) {
        ps.rx_head -= static_cast<uint32_t>(ps.rx.size());
      }
    }
    ++ps.stats.rx_packets;
    ps.stats.rx_bytes += p.frame_len;
    return RxOutcome::kConsumed;
  }

  // Reads the 12-byte header, then the packet's segments, in order.
  class Source {
   public:
    Source(const net::Header& h, const NetRxPacket& p, bool keep_same_header)
        : hdr_(h), p_(p), keep_same_header_(keep_same_header) {}
    // Header and frame to `dst` at once, for a packet of one segment
    // holding frame_len bytes and a destination with room for both.
    void CopyWhole(uint8_t* dst) {
      if (keep_same_header_) {
        StoreHeaderUnlessSame(dst);
      } else {
        std::memcpy(dst, &hdr_, sizeof hdr_);
      }
      std::memcpy(dst + sizeof hdr_, p_.iov[0].iov_base, p_.frame_len);
    }
    void Copy(uint8_t* dst, size_t n) {
      if (idx_ == 0 && off_ == 0 && n >= sizeof hdr_ && keep_same_header_) {
        StoreHeaderUnlessSame(dst);
        dst += sizeof hdr_;
        n -= sizeof hdr_;
        idx_ = 1;
      }
      while (n > 0) {
        const uint8_t* base;
        size_t len;
        if (idx_ == 0) {
          base = reinterpret_cast<const uint8_t*>(&hdr_);
          len = sizeof hdr_;
        } else {
          if (idx_ > p_.iovcnt) return;  // backend's iovecs shorter than said
          base = static_cast<const uint8_t*>(p_.iov[idx_ - 1].iov_base);
          len = p_.iov[idx_ - 1].iov_len;
        }
        const size_t take = std::min(len - off_, n);
        std::memcpy(dst, base + off_, take);
        dst += take;
        n -= take;
        off_ += take;
        if (off_ == len) {
          ++idx_;
          off_ = 0;
        }
      }
    }

   private:
    // A recycled rx buffer usually holds this very header already (same
    // flags, num_buffers 1). Storing it anyway would take the line out of
    // the driver's cache, and the driver's read of the header would become
    // a cross-core miss on every packet; reading it first leaves the line
    // shared (DPDK's vhost skips unchanged header fields likewise).
    void StoreHeaderUnlessSame(uint8_t* dst) {
      uint64_t have_lo;
      uint32_t have_hi;
      uint64_t want_lo;
      uint32_t want_hi;
      std::memcpy(&have_lo, dst, 8);
      std::memcpy(&have_hi, dst + 8, 4);
      std::memcpy(&want_lo, &hdr_, 8);
      std::memcpy(&want_hi, reinterpret_cast<const uint8_t*>(&hdr_) + 8, 4);
      if (have_lo != want_lo || have_hi != want_hi) {
        std::memcpy(dst, &hdr_, sizeof hdr_);
      }
    }

    const net::Header& hdr_;
    const NetRxPacket& p_;
    const bool keep_same_header_;
    uint32_t idx_ = 0;
    size_t off_ = 0;
  };

  // --- Control queue
  // ------------------------------------------------------------------

  template <VirtQueue Q>
  void RunCtrl(uint16_t index, Q& ring) {
    do {
      ring.DisableNotification();
      while (ring.Pop(ctrl_chain_) == PopStatus::kChain) {
        const uint8_t ack = HandleCtrl(ctrl_chain_);
        ++ctrl_commands_;
        if (ack != net::kCtrlOk) ++ctrl_errors_;
        uint32_t len = 0;
        if (ctrl_chain_.ok() && ctrl_chain_.writable_bytes() >= 1) {
          len = static_cast<uint32_t>(ctrl_chain_.CopyToWritable(0, &ack, 1));
        }
        ring.Push(ctrl_chain_.token(), len);
      }
      if (ring.Publish()) this->interrupt().SignalQueue(index);
    } while (ring.error() == RingError::kNone && ring.EnableNotification());
  }

  uint8_t HandleCtrl(const DescriptorChain& c) {
    net::CtrlHeader h;
    if (!c.ok() || c.writable_bytes() < 1 ||
        c.CopyFromReadable(0, &h, sizeof h) != sizeof h) {
      this->GuestError("malformed control command");
      return net::kCtrlErr;
    }
    const uint64_t data_len = c.readable_bytes() - sizeof h;
    auto has = [&](unsigned bit) {
      return (negotiated_ & spec::Bit(bit)) != 0;
    };
    // Reads a fixed-size command argument; false unless exactly that long.
    auto arg = [&](void* out, size_t n) {
      return data_len == n && c.CopyFromReadable(sizeof h, out, n) == n;
    };
    if (NetRxFilter::IsFilterCommand(h.cls)) {
      return filter_.HandleCtrl(h, c, negotiated_);
    }
    switch (h.cls) {
      case net::kCtrlAnnounce:
        if (!has(net::kFeatureGuestAnnounce) ||
            h.command != net::kCtrlAnnounceAck || data_len != 0) {
          break;
        }
        status_.fetch_and(static_cast<uint16_t>(~net::kStatusAnnounce),
                          std::memory_order_acq_rel);
        return net::kCtrlOk;
      case net::kCtrlMq: {
        uint16_t n;
        if (!has(net::kFeatureMq) || h.command != net::kCtrlMqVqPairsSet ||
            !arg(&n, 2) || n < net::kMinVqPairs || n > options_.max_pairs) {
          break;
        }
        if (!backend_->SetActivePairs(n)) break;
        active_pairs_.store(n, std::memory_order_relaxed);
        return net::kCtrlOk;
      }
      case net::kCtrlGuestOffloads: {
        uint64_t g;
        if (!has(net::kFeatureCtrlGuestOffloads) ||
            h.command != net::kCtrlGuestOffloadsSet || !arg(&g, 8) ||
            (g & ~(negotiated_ & net::kGuestOffloadFeatures)) != 0) {
          break;
        }
        if (!backend_->SetOffloads(g)) break;
        guest_offloads_.store(g, std::memory_order_relaxed);
        return net::kCtrlOk;
      }
      default:
        break;
    }
    return net::kCtrlErr;
  }

  Backend* backend_;
  NetDeviceOptions options_;
  std::vector<PairState> pairs_;
  DescriptorChain ctrl_chain_{64};
  // Negotiated features (set at FEATURES_OK, cleared at reset).
  uint64_t negotiated_ = 0;
  bool mrg_rxbuf_ = false;
  std::atomic<uint16_t> status_{0};
  std::atomic<uint16_t> active_pairs_{1};
  std::atomic<uint64_t> guest_offloads_{0};
  // MAC / VLAN filter, updated by the control queue (its own mutex).
  NetRxFilter filter_;
  uint64_t ctrl_commands_ = 0;
  uint64_t ctrl_errors_ = 0;
};

}  // namespace virtio

#endif  // VIRTIO_NET_DEVICE_H_
