// virtio/net_spec.h — the virtio-net wire format (VIRTIO 1.2 §5.1).
//
// Feature bits, the configuration layout, the per-packet virtio_net_hdr and
// the control virtqueue's command classes, as plain little-endian structs
// whose sizes and offsets are checked at compile time. Only the modern
// (VERSION_1) interface exists here: the header is always 12 bytes, with
// num_buffers, whether or not MRG_RXBUF is negotiated.
//
// Example:
//   virtio::net::Header h{};
//   h.flags = virtio::net::kHdrFlagNeedsCsum;
//   h.gso_type = virtio::net::kGsoTcpV4;
#ifndef VIRTIO_NET_SPEC_H_
#define VIRTIO_NET_SPEC_H_

#include <cstddef>
#include <cstdint>

#include "virtio/spec.h"

namespace virtio::net {

// Feature bits (§5.1.3).
enum Feature : unsigned {
  kFeatureCsum = 0,               // device handles packets with partial csum
  kFeatureGuestCsum = 1,          // driver handles packets with partial csum
  kFeatureCtrlGuestOffloads = 2,  // control channel offloads reconfiguration
  kFeatureMtu = 3,                // config mtu is valid
  kFeatureMac = 5,                // config mac is valid
  kFeatureGuestTso4 = 7,
  kFeatureGuestTso6 = 8,
  kFeatureGuestEcn = 9,
  kFeatureGuestUfo = 10,
  kFeatureHostTso4 = 11,
  kFeatureHostTso6 = 12,
  kFeatureHostEcn = 13,
  kFeatureHostUfo = 14,
  kFeatureMrgRxbuf = 15,
  kFeatureStatus = 16,
  kFeatureCtrlVq = 17,
  kFeatureCtrlRx = 18,
  kFeatureCtrlVlan = 19,
  kFeatureCtrlRxExtra = 20,
  kFeatureGuestAnnounce = 21,
  kFeatureMq = 22,
  kFeatureCtrlMacAddr = 23,
};

// Features whose presence in the driver's set requires another (§5.1.3.1).
// Guest (device → driver) offloads, the ones a backend is told to produce.
inline constexpr uint64_t kGuestOffloadFeatures =
    spec::Bit(kFeatureGuestCsum) | spec::Bit(kFeatureGuestTso4) |
    spec::Bit(kFeatureGuestTso6) | spec::Bit(kFeatureGuestEcn) |
    spec::Bit(kFeatureGuestUfo);
// Host (driver → device) offloads, the ones a backend must accept.
inline constexpr uint64_t kHostOffloadFeatures =
    spec::Bit(kFeatureCsum) | spec::Bit(kFeatureHostTso4) |
    spec::Bit(kFeatureHostTso6) | spec::Bit(kFeatureHostEcn) |
    spec::Bit(kFeatureHostUfo);
inline constexpr uint64_t kOffloadFeatures =
    kGuestOffloadFeatures | kHostOffloadFeatures;

// Config status bits.
inline constexpr uint16_t kStatusLinkUp = 1;
inline constexpr uint16_t kStatusAnnounce = 2;

// Limits of max_virtqueue_pairs / VQ_PAIRS_SET (§5.1.4).
inline constexpr uint16_t kMinVqPairs = 1;
inline constexpr uint16_t kMaxVqPairs = 0x8000;

#pragma pack(push, 1)
// struct virtio_net_config.
struct Config {
  uint8_t mac[6];
  uint16_t status;
  uint16_t max_virtqueue_pairs;
  uint16_t mtu;
  uint32_t speed;   // Mbit/s; 0xffffffff = unknown
  uint8_t duplex;   // 0 half, 1 full, 0xff unknown
  uint8_t rss_max_key_size;
  uint16_t rss_max_indirection_table_length;
  uint32_t supported_hash_types;
};
#pragma pack(pop)
static_assert(offsetof(Config, mac) == 0);
static_assert(offsetof(Config, status) == 6);
static_assert(offsetof(Config, max_virtqueue_pairs) == 8);
static_assert(offsetof(Config, mtu) == 10);
static_assert(offsetof(Config, speed) == 12);
static_assert(offsetof(Config, duplex) == 16);
static_assert(offsetof(Config, rss_max_key_size) == 17);
static_assert(offsetof(Config, rss_max_indirection_table_length) == 18);
static_assert(offsetof(Config, supported_hash_types) == 20);
static_assert(sizeof(Config) == 24);

// struct virtio_net_hdr (§5.1.6), with num_buffers (VERSION_1).
struct Header {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(Header) == 12);
static_assert(offsetof(Header, gso_type) == 1);
static_assert(offsetof(Header, hdr_len) == 2);
static_assert(offsetof(Header, gso_size) == 4);
static_assert(offsetof(Header, csum_start) == 6);
static_assert(offsetof(Header, csum_offset) == 8);
static_assert(offsetof(Header, num_buffers) == 10);
inline constexpr uint32_t kHeaderSize = sizeof(Header);

inline constexpr uint8_t kHdrFlagNeedsCsum = 1;
inline constexpr uint8_t kHdrFlagDataValid = 2;
inline constexpr uint8_t kHdrFlagRscInfo = 4;

inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpV4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpV6 = 4;
inline constexpr uint8_t kGsoUdpL4 = 5;
inline constexpr uint8_t kGsoEcn = 0x80;

// Ethernet framing.
inline constexpr uint32_t kEthHeaderLen = 14;
inline constexpr uint32_t kVlanHeaderLen = 4;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;
inline constexpr uint32_t kMaxVlanId = 4095;
// Largest frame (without the virtio header) the device moves in either
// direction: a 64 KiB GSO packet plus link-layer headers. The spec's
// "buffers of at least 65562 bytes" for big-packet receive is this plus the
// 12-byte header.
inline constexpr uint32_t kMaxFrameSize = 65550;
inline constexpr uint32_t kMaxBigRxBuffer = kMaxFrameSize + kHeaderSize;
// Without GUEST_TSO/UFO a driver posts buffers of at least 1526 bytes.
inline constexpr uint32_t kMinRxBuffer = 1526;

// --- Control virtqueue (§5.1.6.5) -------------------------------------------

struct CtrlHeader {
  uint8_t cls;
  uint8_t command;
};
static_assert(sizeof(CtrlHeader) == 2);

inline constexpr uint8_t kCtrlOk = 0;
inline constexpr uint8_t kCtrlErr = 1;

inline constexpr uint8_t kCtrlRx = 0;
inline constexpr uint8_t kCtrlRxPromisc = 0;
inline constexpr uint8_t kCtrlRxAllMulti = 1;
inline constexpr uint8_t kCtrlRxAllUni = 2;
inline constexpr uint8_t kCtrlRxNoMulti = 3;
inline constexpr uint8_t kCtrlRxNoUni = 4;
inline constexpr uint8_t kCtrlRxNoBcast = 5;

inline constexpr uint8_t kCtrlMac = 1;
inline constexpr uint8_t kCtrlMacTableSet = 0;
inline constexpr uint8_t kCtrlMacAddrSet = 1;

inline constexpr uint8_t kCtrlVlan = 2;
inline constexpr uint8_t kCtrlVlanAdd = 0;
inline constexpr uint8_t kCtrlVlanDel = 1;

inline constexpr uint8_t kCtrlAnnounce = 3;
inline constexpr uint8_t kCtrlAnnounceAck = 0;

inline constexpr uint8_t kCtrlMq = 4;
inline constexpr uint8_t kCtrlMqVqPairsSet = 0;

inline constexpr uint8_t kCtrlGuestOffloads = 5;
inline constexpr uint8_t kCtrlGuestOffloadsSet = 0;

}  // namespace virtio::net

#endif  // VIRTIO_NET_SPEC_H_
