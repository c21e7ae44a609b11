// virtio/backends/generator_net.h — a NetBackend that always has a packet
// for the guest: fixed-size frames, as many as the guest posts buffers for.
//
// For benchmarks (the device's receive path with no backend work behind
// it, e.g. against testpmd's rxonly) and for tests that need a steady
// stream. Each pair offers the same frame over and over: an Ethernet
// frame of `frame_len` bytes (to options.dst, from options.src) carrying
// an IPv4/UDP packet with a valid IP header checksum when it is large
// enough (42 bytes or more), built once at creation, so generating a
// packet costs nothing but the device's copy into guest memory. Receive()
// offers at most options.burst packets per call (it must return even if
// the device never refuses one), and stops for good after options.limit
// packets per pair when that is non-zero. Transmitted packets are
// discarded and counted, as NullNet does.
//
// fd() is an eventfd that is made readable once and never drained (unless
// options.eventfd is false: then -1): a packet is always pending, so an
// event loop watching it level-triggered services the pair on every round
// — it spins, as a generator should — and must not read it. A receive
// stalled for lack of guest buffers resumes at the guest's rx kick either
// way.
//
// Example:
//   auto gen = virtio::GeneratorNet::Create({.frame_len = 64});
//   auto dev = virtio::NetDevice<Traits, virtio::GeneratorNet>::Create(
//       memory, irq, **gen, {});
#ifndef VIRTIO_BACKENDS_GENERATOR_NET_H_
#define VIRTIO_BACKENDS_GENERATOR_NET_H_

#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/net_backend.h"
#include "virtio/net_spec.h"

namespace virtio {

// Options of GeneratorNet::Create.
struct GeneratorNetOptions {
  uint16_t num_pairs = 1;
  // Bytes of each Ethernet frame (no FCS), 14..net::kMaxFrameSize.
  uint32_t frame_len = 64;
  std::array<uint8_t, 6> dst = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  std::array<uint8_t, 6> src = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
  // Packets offered per Receive() call at most (>= 1).
  uint32_t burst = 256;
  // Packets per pair in all; 0: no end.
  uint64_t limit = 0;
  // Give each pair the always-readable eventfd returned by fd().
  bool eventfd = true;
};

// The always-ready packet source (see the file comment).
class GeneratorNet {
 public:
  // One queue pair: offers the shared frame, counts what was taken.
  class Pair {
   public:
    Pair(const uint8_t* frame, uint32_t len, uint32_t burst, uint64_t limit,
         bool use_eventfd)
        : seg_{const_cast<uint8_t*>(frame), len},
          packet_{
              .header = nullptr, .iov = &seg_, .iovcnt = 1, .frame_len = len},
          burst_(burst),
          limit_(limit) {
      if (use_eventfd) {
        efd_ = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
      }
    }
    ~Pair() {
      if (efd_ >= 0) close(efd_);
    }
    Pair(const Pair&) = delete;
    Pair& operator=(const Pair&) = delete;

    NetSendStatus Send(const net::Header&, const iovec*, uint32_t, uint32_t) {
      ++sent_;
      return NetSendStatus::kSent;
    }
    void Flush() {}
    template <typename F>
    uint32_t Receive(F&& fn) {
      uint32_t n = 0;
      while (n < burst_ && (limit_ == 0 || generated_ < limit_)) {
        if (!fn(packet_)) break;
        ++n;
        ++generated_;
      }
      return n;
    }
    int fd() const { return efd_; }

    // Packets the device took (delivered or dropped by its filters).
    uint64_t generated() const { return generated_; }
    // Packets the guest transmitted (discarded).
    uint64_t sent() const { return sent_; }

   private:
    iovec seg_;
    NetRxPacket packet_;
    uint32_t burst_;
    uint64_t limit_;
    int efd_ = -1;
    uint64_t generated_ = 0;
    uint64_t sent_ = 0;
  };

  static absl::StatusOr<std::unique_ptr<GeneratorNet>> Create(
      const GeneratorNetOptions& options) {
    if (options.num_pairs == 0 || options.burst == 0) {
      return absl::InvalidArgumentError(
          "generator net: num_pairs and burst must be >= 1");
    }
    if (options.frame_len < net::kEthHeaderLen ||
        options.frame_len > net::kMaxFrameSize) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "generator net: frame_len %u not in %u..%u", options.frame_len,
          net::kEthHeaderLen, net::kMaxFrameSize));
    }
    return std::unique_ptr<GeneratorNet>(new GeneratorNet(options));
  }

  // --- NetBackend
  // -------------------------------------------------------------
  uint16_t num_pairs() const { return static_cast<uint16_t>(pairs_.size()); }
  uint64_t offloads() const { return 0; }
  bool SetOffloads(uint64_t) { return true; }
  bool SetActivePairs(uint16_t n) { return n >= 1 && n <= pairs_.size(); }
  Pair& pair(uint16_t i) { return *pairs_[i]; }

  // The frame every pair offers.
  const std::vector<uint8_t>& frame() const { return frame_; }

 private:
  explicit GeneratorNet(const GeneratorNetOptions& o) : frame_(o.frame_len) {
    BuildFrame(o);
    for (uint16_t i = 0; i < o.num_pairs; ++i) {
      pairs_.push_back(std::make_unique<Pair>(frame_.data(), o.frame_len,
                                              o.burst, o.limit, o.eventfd));
    }
  }

  // Ethernet + IPv4 + UDP (192.168.0.1:9 -> 192.168.0.2:9, as far as the
  // length allows), payload bytes counting up: a frame a receiver's
  // parser accepts.
  void BuildFrame(const GeneratorNetOptions& o) {
    uint8_t* f = frame_.data();
    const uint32_t len = o.frame_len;
    for (uint32_t i = 0; i < len; ++i) f[i] = static_cast<uint8_t>(i);
    std::memcpy(f, o.dst.data(), 6);
    std::memcpy(f + 6, o.src.data(), 6);
    f[12] = 0x08;
    f[13] = 0x00;
    constexpr uint32_t kIp = net::kEthHeaderLen, kUdp = kIp + 20;
    if (len < kUdp + 8) return;
    const uint32_t ip_len = len - kIp;
    const uint8_t ip[20] = {0x45,
                            0,
                            static_cast<uint8_t>(ip_len >> 8),
                            static_cast<uint8_t>(ip_len),
                            0,
                            0,
                            0x40,
                            0,
                            64,
                            17,
                            0,
                            0,
                            192,
                            168,
                            0,
                            1,
                            192,
                            168,
                            0,
                            2};
    std::memcpy(f + kIp, ip, sizeof ip);
    uint32_t sum = 0;
    for (uint32_t i = 0; i < 20; i += 2) {
      sum += static_cast<uint32_t>(f[kIp + i] << 8 | f[kIp + i + 1]);
    }
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    const auto csum = static_cast<uint16_t>(~sum);
    f[kIp + 10] = static_cast<uint8_t>(csum >> 8);
    f[kIp + 11] = static_cast<uint8_t>(csum);
    const uint32_t udp_len = ip_len - 20;
    const uint8_t udp[8] = {0,
                            9,
                            0,
                            9,
                            static_cast<uint8_t>(udp_len >> 8),
                            static_cast<uint8_t>(udp_len),
                            0,
                            0};
    std::memcpy(f + kUdp, udp, sizeof udp);
  }

  std::vector<uint8_t> frame_;
  std::vector<std::unique_ptr<Pair>> pairs_;
};
static_assert(NetBackend<GeneratorNet>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_GENERATOR_NET_H_
