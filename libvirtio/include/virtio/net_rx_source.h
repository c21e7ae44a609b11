// virtio/net_rx_source.h — copying a received packet (NetRxPacket, from a
// NetBackend) into the guest's receive buffers, as NetDevice
// (virtio/net_device.h) delivers it.
//
// NetRxSource reads the 12-byte virtio-net header the device built, then
// the packet's segments, in order, into whatever destination pieces it is
// given (the segments of one or more rx chains). NetRxGather copies the
// start of a packet out, for the receive filter to read its Ethernet
// header.
//
// With keep_same_header, a header already present in the destination is
// not stored again (NetDeviceOptions::rx_keep_same_header says why).
//
// Example:
//   virtio::NetRxSource src(hdr, packet, /*keep_same_header=*/true);
//   for (const iovec& seg : chain.writable()) src.Copy(base(seg), len(seg));
#ifndef VIRTIO_NET_RX_SOURCE_H_
#define VIRTIO_NET_RX_SOURCE_H_

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "virtio/net_backend.h"
#include "virtio/net_spec.h"

namespace virtio {

// Copies the first `n` bytes of `p`'s frame (at most frame_len) to `out`.
inline void NetRxGather(const NetRxPacket& p, uint8_t* out, uint32_t n) {
  for (uint32_t i = 0; i < p.iovcnt && n > 0; ++i) {
    const uint32_t take =
        static_cast<uint32_t>(std::min<size_t>(p.iov[i].iov_len, n));
    std::memcpy(out, p.iov[i].iov_base, take);
    out += take;
    n -= take;
  }
}

// Reads the 12-byte header, then the packet's segments, in order. Holds
// references: `h` and `p` must outlive it.
class NetRxSource {
 public:
  NetRxSource(const net::Header& h, const NetRxPacket& p, bool keep_same_header)
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

  // The next `n` bytes to `dst`.
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
  // Position: idx_ 0 is the header, i > 0 the packet's segment i - 1.
  uint32_t idx_ = 0;
  size_t off_ = 0;
};

}  // namespace virtio

#endif  // VIRTIO_NET_RX_SOURCE_H_
