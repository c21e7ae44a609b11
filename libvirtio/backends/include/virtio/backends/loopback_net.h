// virtio/backends/loopback_net.h — an in-process NetBackend: what the guest
// transmits on queue pair i is received on queue pair i, header and all.
//
// For tests and benchmarks (and as the smallest example of a NetBackend).
// Each pair owns a byte ring allocated once at creation (no allocation per
// packet) holding the packets sent and not yet received, each with its
// virtio_net_hdr preserved bit for bit (num_buffers aside, which the device
// owns). When a pair's ring is full Send() returns kBusy: the device keeps
// the packet and transmits it on a later NetDevice::ServiceBackend(), after
// receiving has made room. Inject() puts a packet on a pair's receive side
// as if it came from the network; Take() removes the oldest pending packet
// host-side, as if the network consumed it.
//
// fd() is an eventfd (EFD_NONBLOCK) bumped by Flush() when packets were
// added since the previous Flush(), so an event loop can poll it; the loop
// read(2)s it before calling ServiceBackend. Send and Receive of one pair
// must be called from one thread (the pair's), as NetDevice does.
//
// Example:
//   auto lo = virtio::LoopbackNet::Create({.num_pairs = 2});
//   auto dev = virtio::NetDevice<Traits, virtio::LoopbackNet>::Create(
//       memory, irq, **lo, {.max_pairs = 2});
#ifndef VIRTIO_BACKENDS_LOOPBACK_NET_H_
#define VIRTIO_BACKENDS_LOOPBACK_NET_H_

#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "virtio/net_backend.h"
#include "virtio/net_spec.h"

namespace virtio {

struct LoopbackNetOptions {
  uint16_t num_pairs = 1;
  // Bytes of packet storage per pair (each packet takes its frame plus 24
  // bytes, rounded up to 8); at least 256 KiB so a 64 KiB packet always fits.
  uint32_t ring_bytes = 1u << 20;
  // Offloads to claim (a subset of net::kOffloadFeatures).
  uint64_t offloads = net::kOffloadFeatures;
  // Create the eventfd returned by fd(); without it fd() is -1.
  bool eventfd = true;
};

class LoopbackNet {
 public:
  static constexpr uint32_t kMinRingBytes = 256 * 1024;

  class Pair {
   public:
    Pair(uint32_t ring_bytes, bool use_eventfd)
        : ring_(new uint8_t[ring_bytes]), cap_(ring_bytes) {
      if (use_eventfd) efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    ~Pair() {
      if (efd_ >= 0) close(efd_);
    }
    Pair(const Pair&) = delete;
    Pair& operator=(const Pair&) = delete;

    // --- NetQueuePair -------------------------------------------------------
    NetSendStatus Send(const net::Header& hdr, const iovec* iov,
                       uint32_t iovcnt, uint32_t frame_len) {
      uint8_t* rec = Reserve(frame_len);
      if (rec == nullptr) {
        ++busy_;
        return NetSendStatus::kBusy;
      }
      Record r{RecordSize(frame_len), frame_len, 1, hdr};
      r.hdr.num_buffers = 0;
      std::memcpy(rec, &r, sizeof r);
      uint8_t* p = rec + sizeof r;
      for (uint32_t i = 1; i < iovcnt; ++i) {
        std::memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
      }
      Commit(r.size);
      ++sent_;
      return NetSendStatus::kSent;
    }

    void Flush() {
      if (added_since_flush_ && efd_ >= 0) {
        const uint64_t one = 1;
        [[maybe_unused]] ssize_t n = write(efd_, &one, sizeof one);
      }
      added_since_flush_ = false;
    }

    template <typename F>
    uint32_t Receive(F&& fn) {
      uint32_t done = 0;
      while (count_ > 0) {
        const Record* r = Head();
        const uint8_t* frame = reinterpret_cast<const uint8_t*>(r) + sizeof *r;
        const iovec seg{const_cast<uint8_t*>(frame), r->frame_len};
        const NetRxPacket packet{.header = r->has_hdr ? &r->hdr : nullptr,
                                 .iov = &seg,
                                 .iovcnt = 1,
                                 .frame_len = r->frame_len};
        if (!fn(packet)) break;
        Pop();
        ++done;
        ++received_;
      }
      return done;
    }

    int fd() const { return efd_; }

    // --- Host side, for tests -------------------------------------------------
    // Queues a packet for the guest to receive. `hdr` nullptr: a plain
    // frame. False if the ring is full.
    bool Inject(const net::Header* hdr, const void* frame, uint32_t len) {
      uint8_t* rec = Reserve(len);
      if (rec == nullptr) return false;
      Record r{RecordSize(len), len, hdr != nullptr ? 1u : 0u,
               hdr != nullptr ? *hdr : net::Header{}};
      std::memcpy(rec, &r, sizeof r);
      if (len > 0) std::memcpy(rec + sizeof r, frame, len);
      Commit(r.size);
      return true;
    }
    // Removes the oldest pending packet into `hdr` / `frame`. False if none.
    bool Take(net::Header* hdr, std::vector<uint8_t>* frame) {
      if (count_ == 0) return false;
      const Record* r = Head();
      if (hdr != nullptr) *hdr = r->hdr;
      if (frame != nullptr) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(r) + sizeof *r;
        frame->assign(p, p + r->frame_len);
      }
      Pop();
      return true;
    }
    uint32_t pending() const { return count_; }
    uint64_t sent() const { return sent_; }
    uint64_t received() const { return received_; }
    uint64_t busy() const { return busy_; }

   private:
    struct Record {
      uint32_t size;  // bytes of this record; 0 = wrap marker
      uint32_t frame_len;
      uint32_t has_hdr;
      net::Header hdr;
    };
    static_assert(sizeof(Record) == 24);

    static uint32_t RecordSize(uint32_t frame_len) {
      return (static_cast<uint32_t>(sizeof(Record)) + frame_len + 7) & ~7u;
    }

    // Space for a record of `frame_len` bytes, contiguous, or nullptr.
    uint8_t* Reserve(uint32_t frame_len) {
      if (frame_len > net::kMaxFrameSize) return nullptr;
      const uint32_t need = RecordSize(frame_len);
      if (count_ == 0) head_ = tail_ = 0;
      if (count_ == 0 || tail_ > head_) {
        if (cap_ - tail_ >= need) return ring_.get() + tail_;
        // Wrap: the record goes at the start if it fits before head_.
        if (need < head_ || (count_ == 0 && need <= cap_)) {
          if (cap_ - tail_ >= sizeof(uint32_t)) {
            const uint32_t zero = 0;
            std::memcpy(ring_.get() + tail_, &zero, sizeof zero);
          }
          tail_ = 0;
          return ring_.get();
        }
        return nullptr;
      }
      // tail_ <= head_ with packets pending: the free gap is [tail_, head_).
      if (head_ - tail_ >= need && tail_ != head_) return ring_.get() + tail_;
      return nullptr;
    }
    void Commit(uint32_t size) {
      tail_ += size;
      ++count_;
      added_since_flush_ = true;
    }
    const Record* Head() {
      if (cap_ - head_ < sizeof(Record) || Load32(head_) == 0) head_ = 0;
      return reinterpret_cast<const Record*>(ring_.get() + head_);
    }
    void Pop() {
      head_ += Head()->size;
      if (--count_ == 0) head_ = tail_ = 0;
    }
    uint32_t Load32(uint32_t at) const {
      uint32_t v;
      std::memcpy(&v, ring_.get() + at, sizeof v);
      return v;
    }

    std::unique_ptr<uint8_t[]> ring_;
    uint32_t cap_;
    uint32_t head_ = 0;  // oldest record
    uint32_t tail_ = 0;  // where the next record goes
    uint32_t count_ = 0;
    bool added_since_flush_ = false;
    int efd_ = -1;
    uint64_t sent_ = 0, received_ = 0, busy_ = 0;
  };

  static absl::StatusOr<std::unique_ptr<LoopbackNet>> Create(
      const LoopbackNetOptions& options) {
    if (options.num_pairs == 0) {
      return absl::InvalidArgumentError("loopback: num_pairs must be >= 1");
    }
    if (options.ring_bytes < kMinRingBytes || options.ring_bytes % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "loopback: ring_bytes %u must be a multiple of 8, at least %u",
          options.ring_bytes, kMinRingBytes));
    }
    return std::unique_ptr<LoopbackNet>(new LoopbackNet(options));
  }

  // --- NetBackend ---------------------------------------------------------------
  uint16_t num_pairs() const { return static_cast<uint16_t>(pairs_.size()); }
  uint64_t offloads() const { return offloads_; }
  bool SetOffloads(uint64_t guest_offloads) {
    guest_offloads_ = guest_offloads;
    ++set_offloads_calls_;
    return true;
  }
  bool SetActivePairs(uint16_t n) {
    if (n == 0 || n > pairs_.size()) return false;
    active_pairs_ = n;
    return true;
  }
  Pair& pair(uint16_t i) { return *pairs_[i]; }

  // What the device last configured.
  uint64_t guest_offloads() const { return guest_offloads_; }
  uint16_t active_pairs() const { return active_pairs_; }
  int set_offloads_calls() const { return set_offloads_calls_; }

 private:
  explicit LoopbackNet(const LoopbackNetOptions& options)
      : offloads_(options.offloads & net::kOffloadFeatures) {
    for (uint16_t i = 0; i < options.num_pairs; ++i) {
      pairs_.push_back(std::make_unique<Pair>(options.ring_bytes, options.eventfd));
    }
  }

  std::vector<std::unique_ptr<Pair>> pairs_;
  uint64_t offloads_;
  uint64_t guest_offloads_ = 0;
  uint16_t active_pairs_ = 1;
  int set_offloads_calls_ = 0;
};
static_assert(NetBackend<LoopbackNet>);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_LOOPBACK_NET_H_
