// virtio/net_features.h — the feature rules of virtio-net (VIRTIO 1.2 §5.1.3
// and §5.1.6) as NetDevice (virtio/net_device.h) applies them.
//
//   - NetOfferedFeatures(): what a device with given options offers over a
//     backend with given offloads;
//   - NetCheckFeatures(): the dependencies of §5.1.3.1 a driver's choice
//     must meet before FEATURES_OK (optionally forgiving the control-queue
//     ones, see NetDeviceOptions::relaxed_ctrl_dependencies);
//   - NetValidTxHeader(): whether a transmitted header asks only for what
//     the negotiated features allow;
//   - NetRxHeaderAllowed(): whether a received packet's header needs only
//     guest offloads in force, and the flags the driver may see.
// Pure functions of their arguments: the device keeps the state, these keep
// the rules, so that each rule reads in one place next to the spec's list.
//
// Example:
//   const virtio::NetFeatureCheck check = virtio::NetCheckFeatures(f, false);
//   if (check.broken != nullptr) refuse(check.broken);
#ifndef VIRTIO_NET_FEATURES_H_
#define VIRTIO_NET_FEATURES_H_

#include <cstdint>

#include "virtio/net_device_options.h"
#include "virtio/net_spec.h"
#include "virtio/spec.h"

namespace virtio {

// The features a NetDevice offers: MAC, STATUS, MRG_RXBUF, MTU (when
// o.mtu != 0), the control-queue features (o.ctrl_vq; MQ when
// o.max_pairs > 1), the backend's offloads, less o.disable_features.
inline uint64_t NetOfferedFeatures(uint64_t backend_offloads,
                                   const NetDeviceOptions& o) {
  uint64_t f = spec::Bit(net::kFeatureMac) | spec::Bit(net::kFeatureStatus) |
               spec::Bit(net::kFeatureMrgRxbuf) |
               (backend_offloads & net::kOffloadFeatures);
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

// The first dependency of §5.1.3.1 that `f` breaks, or nullptr.
inline const char* NetBrokenDependency(uint64_t f) {
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

// The verdict on a driver's features: `broken` names the dependency broken
// (nullptr: accepted), `effective` is what the device then acts on.
struct NetFeatureCheck {
  uint64_t effective = 0;
  const char* broken = nullptr;
};

// Checks `f` against §5.1.3.1. With `relaxed_ctrl_dependencies`, features
// that depend on CTRL_VQ or STATUS are accepted without them (and left out
// of `effective`, except MQ: its queue pairs exist); the offload rules
// still apply.
inline NetFeatureCheck NetCheckFeatures(uint64_t f,
                                        bool relaxed_ctrl_dependencies) {
  auto has = [&](unsigned bit) { return (f & spec::Bit(bit)) != 0; };
  NetFeatureCheck check{.effective = f, .broken = NetBrokenDependency(f)};
  if (check.broken != nullptr && relaxed_ctrl_dependencies) {
    const uint64_t ctrl_only = spec::Bit(net::kFeatureCtrlRx) |
                               spec::Bit(net::kFeatureCtrlRxExtra) |
                               spec::Bit(net::kFeatureCtrlVlan) |
                               spec::Bit(net::kFeatureGuestAnnounce) |
                               spec::Bit(net::kFeatureCtrlMacAddr) |
                               spec::Bit(net::kFeatureCtrlGuestOffloads);
    const uint64_t unmet =
        (has(net::kFeatureCtrlVq) ? 0 : ctrl_only) |
        (has(net::kFeatureStatus) ? 0 : spec::Bit(net::kFeatureGuestAnnounce));
    // Only dependencies on the control queue or STATUS are forgiven: the
    // offload rules still apply.
    const uint64_t forgiven =
        unmet | (has(net::kFeatureCtrlVq) ? 0 : spec::Bit(net::kFeatureMq));
    if (NetBrokenDependency(f & ~forgiven) == nullptr) {
      check.broken = nullptr;
      check.effective = f & ~unmet;
    }
  }
  return check;
}

// Whether the header of a transmitted frame of `frame_len` bytes asks only
// for what `negotiated` allows: NEEDS_CSUM needs CSUM and a checksum inside
// the frame; gso_type needs the matching HOST_* feature, a non-zero
// gso_size and hdr_len <= frame_len; ECN needs HOST_ECN; other flags are
// driver errors; without GSO and with MTU negotiated the frame is at most
// mtu + 18 bytes.
inline bool NetValidTxHeader(const net::Header& h, uint32_t frame_len,
                             uint64_t negotiated, uint16_t mtu) {
  auto has = [&](unsigned bit) { return (negotiated & spec::Bit(bit)) != 0; };
  if (h.flags & ~net::kHdrFlagNeedsCsum) return false;
  if (h.flags & net::kHdrFlagNeedsCsum) {
    if (!has(net::kFeatureCsum)) return false;
    if (uint32_t{h.csum_start} + h.csum_offset + 2 > frame_len) return false;
  }
  const uint8_t gso = h.gso_type & ~net::kGsoEcn;
  switch (gso) {
    case net::kGsoNone:
      if (h.gso_type & net::kGsoEcn) return false;
      if ((negotiated & spec::Bit(net::kFeatureMtu)) &&
          frame_len >
              uint32_t{mtu} + net::kEthHeaderLen + net::kVlanHeaderLen) {
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

// Whether a received packet whose backend header is `in` may go to a driver
// with `guest_offloads` (GUEST_* bits) in force; if so, `out` is `in` with
// the flags the driver cannot take masked off.
inline bool NetRxHeaderAllowed(const net::Header& in, uint64_t guest_offloads,
                               net::Header& out) {
  out = in;
  auto on = [&](unsigned bit) {
    return (guest_offloads & spec::Bit(bit)) != 0;
  };
  bool ok = true;
  if ((out.flags & net::kHdrFlagNeedsCsum) && !on(net::kFeatureGuestCsum)) {
    ok = false;
  }
  switch (out.gso_type & ~net::kGsoEcn) {
    case net::kGsoNone:
      if (out.gso_type & net::kGsoEcn) ok = false;
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
  if ((out.gso_type & net::kGsoEcn) && !on(net::kFeatureGuestEcn)) ok = false;
  if (!ok) return false;
  // DATA_VALID only means something to a driver that accepted GUEST_CSUM.
  out.flags &= on(net::kFeatureGuestCsum)
                   ? (net::kHdrFlagNeedsCsum | net::kHdrFlagDataValid)
                   : 0;
  return true;
}

}  // namespace virtio

#endif  // VIRTIO_NET_FEATURES_H_
