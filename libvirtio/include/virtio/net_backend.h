// virtio/net_backend.h — where a network device's packets go and come from.
//
// NetDevice (virtio/net_device.h) is a template over a backend type checked
// at compile time by the `NetBackend` concept below: every call on the data
// path is resolved statically (no virtual calls) and allocates nothing.
// Bundled backends: TapNet (a Linux TAP interface with IFF_VNET_HDR and
// IFF_MULTI_QUEUE, virtio/backends/tap_net.h) and LoopbackNet (in process:
// what the guest transmits on pair i is received on pair i, for tests and
// benchmarks, virtio/backends/loopback_net.h). Users can bring their own: any
// type that satisfies `NetBackend` works unchanged.
//
// Model. A backend has `num_pairs()` independent queue-pair contexts,
// `pair(i)`, one per virtio rx/tx queue pair. A pair is used by one thread at
// a time (the thread serving that queue pair) and needs no locking;
// different pairs may be used concurrently from different threads.
//
// Packets travel with their virtio_net_hdr (net_spec.h), so checksum and
// segmentation offloads pass through untouched to backends that understand
// them (a TAP with IFF_VNET_HDR does); a backend that does not declares no
// offloads (`offloads()` == 0) and then only ever sees headers with
// flags == 0 and gso_type == NONE, and may produce packets without one.
//
//   * Send(hdr, iov, iovcnt, frame_len) transmits one packet. iov[0] is the
//     12-byte header (a validated host-side copy, == &hdr; num_buffers is 0),
//     iov[1..iovcnt) the Ethernet frame, frame_len bytes in total, usually
//     pointing straight into guest memory (zero copy: writev it). The
//     memory is valid only during the call. Returns kSent, kDropped (the
//     backend refused or lost this packet; the device counts it and goes
//     on) or kBusy (no room now: nothing was sent; the device keeps the
//     packet and stops transmitting on this pair until the glue sees fd()
//     writable and calls NetDevice::ServiceBackend). The device only hands
//     over frames of 14..kMaxFrameSize bytes whose header is consistent
//     with the negotiated offloads.
//   * Flush() ends a batch of Send() calls (one per kick): a backend that
//     buffers may push them out now, or signal its peer once per batch.
//   * Receive(fn) offers pending received packets to the device, oldest
//     first, one fn(packet) call each, where `packet` is a NetRxPacket: the
//     header (nullptr: a plain frame, no offloads) and the frame as iovecs in
//     the backend's own memory, valid during the call. fn returns true if
//     it consumed the packet (delivered, or dropped and counted) and false
//     if it could not take it now (the guest has no receive buffers): the
//     backend then keeps that packet pending, stops calling fn, and offers
//     it again on the next Receive(). Receive returns the number of packets
//     consumed. It must not block.
//   * fd() is a file descriptor for the glue's event loop: readable when
//     packets may be pending, writable when a kBusy Send may succeed. -1:
//     nothing to poll (the glue calls ServiceBackend itself).
//
// Offloads. `offloads()` lists the net feature bits (net::kOffloadFeatures:
// CSUM / HOST_* for packets it accepts, GUEST_* for packets it may
// produce) the backend supports; the device offers only those.
// SetOffloads(guest_bits) is called with the GUEST_* bits the driver
// negotiated (at DRIVER_OK, on CTRL_GUEST_OFFLOADS, and with 0 at reset): from
// then on the backend must not produce packets needing any other (a TAP
// maps this to TUNSETOFFLOAD). SetActivePairs(n) says that only pairs
// [0, n) are in use (VQ_PAIRS_SET): a multi-queue backend should steer
// traffic to those only. Both return false if the host refused, which the
// device reports to the driver as a control command error.
//
// Example (a backend that discards everything and receives nothing):
//   struct NullNet {
//     struct Pair {
//       NetSendStatus Send(const net::Header&, const iovec*, uint32_t,
//                          uint32_t) { return NetSendStatus::kSent; }
//       void Flush() {}
//       template <typename F> uint32_t Receive(F&&) { return 0; }
//       int fd() const { return -1; }
//     };
//     uint16_t num_pairs() const { return 1; }
//     uint64_t offloads() const { return 0; }
//     bool SetOffloads(uint64_t) { return true; }
//     bool SetActivePairs(uint16_t) { return true; }
//     Pair& pair(uint16_t) { return pair_; }
//     Pair pair_;
//   };
//   static_assert(virtio::NetBackend<NullNet>);
#ifndef VIRTIO_NET_BACKEND_H_
#define VIRTIO_NET_BACKEND_H_

#include <sys/uio.h>

#include <concepts>
#include <cstdint>

#include "virtio/net_spec.h"

namespace virtio {

enum class NetSendStatus : uint8_t { kSent, kDropped, kBusy };

// One received packet, as a backend offers it to the device.
struct NetRxPacket {
  // The packet's virtio_net_hdr (num_buffers is ignored), or nullptr for a
  // plain frame (no checksum or segmentation offload).
  const net::Header* header = nullptr;
  // The Ethernet frame, `frame_len` bytes in `iovcnt` segments.
  const iovec* iov = nullptr;
  uint32_t iovcnt = 0;
  uint32_t frame_len = 0;
};

// The callable shape Receive() must accept. Used only to state the concept.
struct NetReceiveArchetype {
  bool operator()(const NetRxPacket& packet) const;
};

template <typename P>
concept NetQueuePair = requires(P& p, const P& cp, const net::Header& hdr,
                                const iovec* iov, uint32_t iovcnt,
                                uint32_t frame_len, NetReceiveArchetype& fn) {
  { p.Send(hdr, iov, iovcnt, frame_len) } -> std::same_as<NetSendStatus>;
  { p.Flush() } -> std::same_as<void>;
  { p.Receive(fn) } -> std::same_as<uint32_t>;
  { cp.fd() } -> std::same_as<int>;
};

template <typename B>
concept NetBackend = requires(B& b, const B& cb, uint16_t index,
                              uint64_t features) {
  typename B::Pair;
  requires NetQueuePair<typename B::Pair>;
  { cb.num_pairs() } -> std::same_as<uint16_t>;
  { cb.offloads() } -> std::same_as<uint64_t>;
  { b.SetOffloads(features) } -> std::same_as<bool>;
  { b.SetActivePairs(index) } -> std::same_as<bool>;
  { b.pair(index) } -> std::same_as<typename B::Pair&>;
};

}  // namespace virtio

#endif  // VIRTIO_NET_BACKEND_H_
