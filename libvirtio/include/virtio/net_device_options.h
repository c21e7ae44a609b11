// virtio/net_device_options.h — how a NetDevice (virtio/net_device.h) is
// configured: identity, queue sizes, which features it offers, batching.
//
// A plain struct so that glues can fill it from their own syntax;
// NetDevice::Create() checks the ranges and refuses what is out of them.
//
// Example:
//   virtio::NetDeviceOptions o{.name = "net0", .max_pairs = 2, .mtu = 1500};
//   o.disable_features |= virtio::spec::Bit(virtio::net::kFeatureMrgRxbuf);
#ifndef VIRTIO_NET_DEVICE_OPTIONS_H_
#define VIRTIO_NET_DEVICE_OPTIONS_H_

#include <array>
#include <cstdint>
#include <string>

#include "virtio/device_core.h"

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

}  // namespace virtio

#endif  // VIRTIO_NET_DEVICE_OPTIONS_H_
