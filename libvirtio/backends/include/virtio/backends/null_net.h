// virtio/backends/null_net.h — a NetBackend that discards every packet the
// guest transmits and never receives anything: /dev/null for virtio-net.
//
// For benchmarks (what a device costs on the transmit path with no backend
// work behind it, e.g. against testpmd's txonly) and as a sink in tests.
// Send() counts the packet and returns kSent; nothing is read from the
// frame, so the measured cost is the ring's alone. fd() is -1 (nothing to
// poll). The counters are per pair and touched only by the pair's thread;
// read them after the pair's thread stopped, or accept a stale value.
//
// Example:
//   auto sink = virtio::NullNet::Create({.num_pairs = 1});
//   auto dev = virtio::NetDevice<Traits, virtio::NullNet>::Create(
//       memory, irq, **sink, {});
#ifndef VIRTIO_BACKENDS_NULL_NET_H_
#define VIRTIO_BACKENDS_NULL_NET_H_

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/net_backend.h"
#include "virtio/net_spec.h"

namespace virtio {

// Options of NullNet::Create.
struct NullNetOptions {
  uint16_t num_pairs = 1;
  // Offloads to claim (a subset of net::kOffloadFeatures): a sink accepts
  // any header, so claiming them lets a driver send TSO / CSUM packets.
  uint64_t offloads = 0;
};

// The discard-everything backend (see the file comment).
class NullNet {
 public:
  // One queue pair: counts and drops.
  class Pair {
   public:
    NetSendStatus Send(const net::Header&, const iovec*, uint32_t,
                       uint32_t frame_len) {
      ++packets_;
      bytes_ += frame_len;
      return NetSendStatus::kSent;
    }
    void Flush() { ++flushes_; }
    template <typename F>
    uint32_t Receive(F&&) {
      return 0;
    }
    int fd() const { return -1; }

    uint64_t packets() const { return packets_; }
    uint64_t bytes() const { return bytes_; }
    // Flush() calls: batches the device handed over.
    uint64_t flushes() const { return flushes_; }

   private:
    uint64_t packets_ = 0;
    uint64_t bytes_ = 0;
    uint64_t flushes_ = 0;
  };

  static absl::StatusOr<std::unique_ptr<NullNet>> Create(
      const NullNetOptions& options) {
    if (options.num_pairs == 0) {
      return absl::InvalidArgumentError("null net: num_pairs must be >= 1");
    }
    return std::unique_ptr<NullNet>(new NullNet(options));
  }

  // --- NetBackend
  // -------------------------------------------------------------
  uint16_t num_pairs() const { return static_cast<uint16_t>(pairs_.size()); }
  uint64_t offloads() const { return offloads_; }
  bool SetOffloads(uint64_t) { return true; }
  bool SetActivePairs(uint16_t n) { return n >= 1 && n <= pairs_.size(); }
  Pair& pair(uint16_t i) { return pairs_[i]; }

 private:
  explicit NullNet(const NullNetOptions& options)
      : pairs_(options.num_pairs),
        offloads_(options.offloads & net::kOffloadFeatures) {}

  std::vector<Pair> pairs_;
  uint64_t offloads_;
};
static_assert(NetBackend<NullNet>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_NULL_NET_H_
