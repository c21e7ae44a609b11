// virtio/backends/tap_net.h — a NetBackend on a Linux TAP interface.
//
// TapNet opens (or creates) a TAP interface with IFF_VNET_HDR, so packets
// cross the fd with their 12-byte virtio_net_hdr (TUNSETVNETHDRSZ 12) and
// checksum / segmentation offloads pass between guest and host kernel
// untouched, and with IFF_MULTI_QUEUE when num_pairs > 1: one fd per queue
// pair, the kernel steering flows across them. Every fd is non-blocking.
//
//   * Send: one writev(2) of the header and the guest's frame iovecs (zero
//     copy). EAGAIN → kBusy; any other error (EINVAL for a header the kernel
//     rejects, EIO while the interface is down) → kDropped.
//   * Receive: read(2) into a per-pair host buffer allocated at open (one
//     copy into guest buffers by the device); a packet the device cannot
//     take yet stays in that buffer.
//   * SetOffloads maps the guest offloads to TUNSETOFFLOAD (GUEST_CSUM →
//     TUN_F_CSUM, GUEST_TSO4/6 → TUN_F_TSO4/6, GUEST_ECN → TUN_F_TSO_ECN,
//     GUEST_UFO → TUN_F_UFO), so the kernel segments and checksums whatever
//     the guest cannot take. offloads() claims CSUM / HOST_* always (the
//     kernel accepts GSO packets from a vnet-header TAP) and the GUEST_*
//     ones whose TUN_F_* flag the kernel accepted at open.
//   * SetActivePairs attaches queues [0, n) and detaches the rest
//     (TUNSETQUEUE), so the kernel steers only to pairs the guest uses.
//
// Creating an interface needs CAP_NET_ADMIN (or an existing persistent TAP
// owned by the caller). Alternatively pass fds opened elsewhere (libvirt
// style), already configured with IFF_VNET_HDR.
//
// Example:
//   auto tap = virtio::TapNet::Open({.name = "vm0", .num_pairs = 2});
//   if (!tap.ok()) return tap.status();
//   printf("%s\n", (*tap)->name().c_str());
#ifndef VIRTIO_BACKENDS_TAP_NET_H_
#define VIRTIO_BACKENDS_TAP_NET_H_

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/net_backend.h"
#include "virtio/net_spec.h"

namespace virtio {

struct TapNetOptions {
  // Interface name; "" lets the kernel pick (tap%d). Ignored with `fds`.
  std::string name = {};
  uint16_t num_pairs = 1;
  // Already-open TAP fds, one per pair (ownership passes to TapNet).
  std::vector<int> fds = {};
};

class TapNet {
 public:
  // Host buffer per pair: a 64 KiB GSO packet with its header and headroom.
  static constexpr uint32_t kBufferSize = 69632;

  class Pair {
   public:
    explicit Pair(int fd) : fd_(fd), buf_(new uint8_t[kBufferSize]) {}
    ~Pair() {
      if (fd_ >= 0) close(fd_);
    }
    Pair(const Pair&) = delete;
    Pair& operator=(const Pair&) = delete;

    NetSendStatus Send(const net::Header&, const iovec* iov, uint32_t iovcnt,
                       uint32_t) {
      for (;;) {
        const ssize_t n = writev(fd_, iov, static_cast<int>(iovcnt));
        if (n >= 0) return NetSendStatus::kSent;
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return NetSendStatus::kBusy;
        ++send_errors_;
        return NetSendStatus::kDropped;
      }
    }
    void Flush() {}

    template <typename F>
    uint32_t Receive(F&& fn) {
      uint32_t done = 0;
      for (;;) {
        if (staged_ == 0) {
          const ssize_t n = read(fd_, buf_.get(), kBufferSize);
          if (n < 0) {
            if (errno == EINTR) continue;
            break;  // EAGAIN, or the interface went away
          }
          if (static_cast<size_t>(n) < net::kHeaderSize ||
              static_cast<size_t>(n) >= kBufferSize) {
            ++receive_errors_;  // runt or truncated
            continue;
          }
          staged_ = static_cast<uint32_t>(n);
        }
        seg_.iov_base = buf_.get() + net::kHeaderSize;
        seg_.iov_len = staged_ - net::kHeaderSize;
        net::Header h;
        std::memcpy(&h, buf_.get(), sizeof h);
        const NetRxPacket p{.header = &h,
                            .iov = &seg_,
                            .iovcnt = 1,
                            .frame_len = staged_ - net::kHeaderSize};
        if (!fn(p)) break;
        staged_ = 0;
        ++done;
      }
      return done;
    }
    int fd() const { return fd_; }

    uint64_t send_errors() const { return send_errors_; }
    uint64_t receive_errors() const { return receive_errors_; }

   private:
    int fd_;
    std::unique_ptr<uint8_t[]> buf_;
    uint32_t staged_ = 0;  // bytes of a packet read but not yet taken
    iovec seg_{};
    uint64_t send_errors_ = 0;
    uint64_t receive_errors_ = 0;
  };

  static absl::StatusOr<std::unique_ptr<TapNet>> Open(const TapNetOptions& options);

  uint16_t num_pairs() const { return static_cast<uint16_t>(pairs_.size()); }
  uint64_t offloads() const { return offloads_; }
  bool SetOffloads(uint64_t guest_offloads);
  bool SetActivePairs(uint16_t n);
  Pair& pair(uint16_t i) { return *pairs_[i]; }

  // The interface's name (e.g. for `ip link set <name> up`).
  const std::string& name() const { return name_; }
  bool multi_queue() const { return multi_queue_; }

 private:
  TapNet() = default;

  std::vector<std::unique_ptr<Pair>> pairs_;
  std::vector<bool> attached_;
  std::string name_;
  uint64_t offloads_ = 0;
  bool multi_queue_ = false;
};
static_assert(NetBackend<TapNet>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_TAP_NET_H_
