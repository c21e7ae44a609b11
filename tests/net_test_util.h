// Shared helpers for the virtio-net tests: guest-side packet plumbing over
// any driver-side ring (SplitDriver / PackedDriver), and a rig that brings a
// NetDevice on a LoopbackNet up through DeviceCore's API on either layout.
#ifndef LIBVIRTIO_TESTS_NET_TEST_UTIL_H_
#define LIBVIRTIO_TESTS_NET_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/backends/loopback_net.h"
#include "virtio/net_device.h"
#include "virtio/net_spec.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace virtio::nettest {

using testing::Buffer;
using testing::RecordingInterrupt;
using testing::TestGuestMemory;
using testing::TestTraits;

inline constexpr std::array<uint8_t, 6> kDevMac = {0x52, 0x54, 0x00,
                                                   0xab, 0xcd, 0xef};

// An Ethernet frame of `len` bytes to `dst` with a recognisable payload.
inline std::vector<uint8_t> Frame(uint32_t len, uint8_t seed = 1,
                                  std::array<uint8_t, 6> dst = kDevMac) {
  std::vector<uint8_t> f(len);
  for (uint32_t i = 0; i < len; ++i) {
    f[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
  }
  for (uint32_t i = 0; i < 6 && i < len; ++i) f[i] = dst[i];
  if (len >= 14) {
    f[12] = 0x08;  // IPv4 ethertype: no VLAN tag unless a test adds one
    f[13] = 0x00;
  }
  return f;
}

struct RxPacket {
  net::Header hdr{};
  std::vector<uint8_t> frame;
  uint32_t buffers = 0;  // used buffers the packet took
};

// Guest-side state of one rx or tx ring: where its buffers are, so used
// elements can be read back and buffers reused (the bump allocator of
// TestGuestMemory never frees).
template <typename Ring>
class GuestQueue {
 public:
  GuestQueue(TestGuestMemory& mem, Ring& ring) : mem_(mem), ring_(ring) {}
  Ring& ring() { return ring_; }

  // A buffer of at least `len` bytes, recycled when possible.
  uint64_t Get(uint32_t len) {
    auto it = free_.lower_bound(len);
    if (it != free_.end() && it->first < 2 * len + 64) {
      const uint64_t gpa = it->second;
      sizes_[gpa] = it->first;
      free_.erase(it);
      return gpa;
    }
    const uint64_t gpa = mem_.Alloc(len == 0 ? 1 : len, 64);
    sizes_[gpa] = len == 0 ? 1 : len;
    return gpa;
  }
  void Put(uint64_t gpa) { free_.emplace(sizes_[gpa], gpa); }

  // Adds a chain; remembers its buffers under the returned id.
  std::optional<uint16_t> Add(const std::vector<Buffer>& bufs,
                              bool indirect = false) {
    auto id = ring_.Add(bufs, indirect);
    if (id) chains_[*id] = bufs;
    return id;
  }
  // Reaps one used element, returning the chain's buffers with it.
  std::optional<std::pair<testing::UsedBuffer, std::vector<Buffer>>> Reap() {
    auto u = ring_.Reap();
    if (!u) return std::nullopt;
    auto it = chains_.find(u->id);
    std::vector<Buffer> bufs;
    if (it != chains_.end()) {
      bufs = std::move(it->second);
      chains_.erase(it);
    }
    return std::make_pair(*u, std::move(bufs));
  }
  void Recycle(const std::vector<Buffer>& bufs) {
    for (const Buffer& b : bufs) {
      if (sizes_.count(b.gpa)) Put(b.gpa);
    }
  }

 private:
  TestGuestMemory& mem_;
  Ring& ring_;
  std::multimap<uint32_t, uint64_t> free_;
  std::map<uint64_t, uint32_t> sizes_;
  std::map<uint16_t, std::vector<Buffer>> chains_;
};

// Reads `len` bytes scattered over `bufs` (their writable parts, in order).
inline std::vector<uint8_t> ReadChain(TestGuestMemory& mem,
                                      const std::vector<Buffer>& bufs,
                                      uint32_t len) {
  std::vector<uint8_t> out(len);
  uint32_t done = 0;
  for (const Buffer& b : bufs) {
    if (done == len) break;
    const uint32_t take = std::min(b.len, len - done);
    if (take) mem.Read(b.gpa, out.data() + done, take);
    done += take;
  }
  return out;
}

// Adds a tx chain holding `hdr` + `frame` split over `nseg` buffers (the
// header in its own buffer when `separate_header`).
template <typename Ring>
std::optional<uint16_t> AddTx(TestGuestMemory& mem, GuestQueue<Ring>& q,
                              const net::Header& hdr,
                              const std::vector<uint8_t>& frame,
                              uint32_t nseg = 1, bool separate_header = true,
                              bool indirect = false) {
  std::vector<uint8_t> all(sizeof hdr + frame.size());
  std::memcpy(all.data(), &hdr, sizeof hdr);
  if (!frame.empty()) std::memcpy(all.data() + sizeof hdr, frame.data(), frame.size());
  const uint32_t total = static_cast<uint32_t>(all.size());
  const uint64_t gpa = q.Get(total);
  mem.Write(gpa, all.data(), total);
  std::vector<Buffer> bufs;
  uint32_t at = 0;
  if (separate_header) {
    bufs.push_back({gpa, sizeof hdr, false});
    at = sizeof hdr;
  }
  const uint32_t rest = total - at;
  nseg = std::max<uint32_t>(1, std::min(nseg, std::max<uint32_t>(rest, 1)));
  for (uint32_t i = 0; i < nseg; ++i) {
    const uint32_t take = i + 1 == nseg ? total - at : rest / nseg;
    bufs.push_back({gpa + at, take, false});
    at += take;
  }
  // The whole allocation is recycled with the first buffer.
  auto id = q.Add(bufs, indirect);
  return id;
}

// Posts `n` rx chains of `size` bytes each, split into `nseg` buffers.
template <typename Ring>
uint32_t PostRx(GuestQueue<Ring>& q, uint32_t n, uint32_t size,
                uint32_t nseg = 1, bool indirect = false) {
  uint32_t posted = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t gpa = q.Get(size);
    std::vector<Buffer> bufs;
    uint32_t at = 0;
    for (uint32_t s = 0; s < nseg; ++s) {
      const uint32_t take = s + 1 == nseg ? size - at : size / nseg;
      bufs.push_back({gpa + at, take, true});
      at += take;
    }
    if (!q.Add(bufs, indirect)) {
      q.Put(gpa);
      break;
    }
    ++posted;
  }
  return posted;
}

// Reaps one received packet (several used buffers with MRG_RXBUF).
template <typename Ring>
std::optional<RxPacket> ReapRx(TestGuestMemory& mem, GuestQueue<Ring>& q,
                               std::string* error = nullptr) {
  auto first = q.Reap();
  if (!first) return std::nullopt;
  RxPacket p;
  auto fail = [&](const std::string& e) -> std::optional<RxPacket> {
    if (error) *error = e;
    ADD_FAILURE() << e;
    return std::nullopt;
  };
  if (first->first.len < net::kHeaderSize) {
    q.Recycle(first->second);
    return fail("used length below the header size: " +
                std::to_string(first->first.len));
  }
  std::vector<uint8_t> bytes = ReadChain(mem, first->second, first->first.len);
  q.Recycle(first->second);
  std::memcpy(&p.hdr, bytes.data(), sizeof p.hdr);
  p.frame.assign(bytes.begin() + sizeof p.hdr, bytes.end());
  p.buffers = 1;
  for (uint32_t i = 1; i < p.hdr.num_buffers; ++i) {
    auto more = q.Reap();
    if (!more) return fail("num_buffers larger than the used buffers");
    std::vector<uint8_t> b = ReadChain(mem, more->second, more->first.len);
    q.Recycle(more->second);
    p.frame.insert(p.frame.end(), b.begin(), b.end());
    ++p.buffers;
  }
  return p;
}

inline uint64_t AllNetFeatures() { return ~uint64_t{0}; }

// Brings a NetDevice<TestTraits, Backend> up on `Layout`, queue by queue,
// on its own LoopbackNet or on a backend the test supplies.
template <typename Layout, typename Backend = LoopbackNet>
class Rig {
 public:
  using Device = NetDevice<TestTraits, Backend>;
  using Ring = typename Layout::Driver;
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;

  explicit Rig(NetDeviceOptions options = {}, LoopbackNetOptions lo = {},
               uint64_t region = 64 << 20)
      : mem_({{.gpa = 0x10000, .size = region}}) {
    lo.num_pairs = std::max(lo.num_pairs, options.max_pairs);
    if (options.queue_size == 256) options.queue_size = 64;
    options.mac = kDevMac;
    auto backend = LoopbackNet::Create(lo);
    EXPECT_TRUE(backend.ok()) << backend.status();
    owned_ = std::move(*backend);
    backend_ = owned_.get();
    auto dev = Device::Create(mem_.map(), irq_, *backend_, options);
    EXPECT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
  }
  Rig(Backend& backend, NetDeviceOptions options, uint64_t region = 64 << 20)
      : mem_({{.gpa = 0x10000, .size = region}}), backend_(&backend) {
    if (options.queue_size == 256) options.queue_size = 64;
    options.mac = kDevMac;
    auto dev = Device::Create(mem_.map(), irq_, backend, options);
    EXPECT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
  }

  // Negotiates `want` & offered (minus the other ring layout); sets up and
  // enables every queue the driver would use. False on failure.
  bool BringUp(uint64_t want = AllNetFeatures(), uint32_t queue_size = 64) {
    uint64_t f = want & dev_->device_features();
    if (!kPacked) f &= ~spec::Bit(spec::kFeatureRingPacked);
    features_ = f;
    dev_->SetStatus(0);
    dev_->SetStatus(spec::kStatusAcknowledge);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    dev_->SetDriverFeatures(f);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk);
    if (!(dev_->status() & spec::kStatusFeaturesOk)) return false;
    rings_.clear();
    queues_.clear();
    const testing::DriverOptions dopt{
        .event_idx = (f & spec::Bit(spec::kFeatureEventIdx)) != 0,
        .indirect = (f & spec::Bit(spec::kFeatureIndirectDesc)) != 0,
        .max_indirect = 64,
        .in_order = (f & spec::Bit(spec::kFeatureInOrder)) != 0};
    const bool mq = f & spec::Bit(net::kFeatureMq);
    const bool ctrl = f & spec::Bit(net::kFeatureCtrlVq);
    const uint16_t pairs = mq ? dev_->max_pairs() : 1;
    const uint16_t nq = static_cast<uint16_t>(2 * pairs + (ctrl ? 1 : 0));
    for (uint16_t q = 0; q < nq; ++q) {
      rings_.push_back(std::make_unique<Ring>(mem_, queue_size, dopt));
      queues_.push_back(std::make_unique<GuestQueue<Ring>>(mem_, *rings_.back()));
      QueueConfig* cfg = dev_->queue_config(q);
      if (cfg == nullptr) return false;
      const QueueConfig want_cfg = rings_.back()->config();
      cfg->size = want_cfg.size;
      cfg->desc_addr = want_cfg.desc_addr;
      cfg->driver_addr = want_cfg.driver_addr;
      cfg->device_addr = want_cfg.device_addr;
      if (!dev_->EnableQueue(q)) return false;
    }
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk | spec::kStatusDriverOk);
    return !dev_->needs_reset();
  }

  Device& dev() { return *dev_; }
  Backend& backend() { return *backend_; }
  TestGuestMemory& mem() { return mem_; }
  RecordingInterrupt& irq() { return irq_; }
  uint64_t features() const { return features_; }
  bool mrg() const { return features_ & spec::Bit(net::kFeatureMrgRxbuf); }
  GuestQueue<Ring>& rx(uint16_t pair) { return *queues_[2 * pair]; }
  GuestQueue<Ring>& tx(uint16_t pair) { return *queues_[2 * pair + 1]; }
  GuestQueue<Ring>& ctrl() { return *queues_.back(); }
  uint16_t ctrl_index() const { return static_cast<uint16_t>(queues_.size() - 1); }

  // Transmits one packet on `pair` and waits for the chain to come back.
  // Returns the used length (nullopt if the chain is still held).
  std::optional<uint32_t> Send(uint16_t pair, const net::Header& hdr,
                               const std::vector<uint8_t>& frame,
                               uint32_t nseg = 1, bool indirect = false) {
    auto id = AddTx(mem_, tx(pair), hdr, frame, nseg, true, indirect);
    EXPECT_TRUE(id.has_value());
    if (!id) return std::nullopt;
    tx(pair).ring().Kick();
    dev_->Notify(Device::tx_queue(pair));
    auto used = tx(pair).Reap();
    if (!used) return std::nullopt;
    EXPECT_EQ(used->first.id, *id);
    tx(pair).Recycle(used->second);
    return used->first.len;
  }

  // Posts rx buffers and kicks the rx queue.
  uint32_t Post(uint16_t pair, uint32_t n, uint32_t size, uint32_t nseg = 1) {
    const uint32_t posted = PostRx(rx(pair), n, size, nseg);
    rx(pair).ring().Kick();
    dev_->Notify(Device::rx_queue(pair));
    return posted;
  }

  std::optional<RxPacket> Receive(uint16_t pair) {
    dev_->ServiceBackend(pair);
    return ReapRx(mem_, rx(pair));
  }

  // Sends a control command; returns the ack byte (0xff: none written).
  uint8_t Ctrl(uint8_t cls, uint8_t cmd, const std::vector<uint8_t>& data,
               uint32_t* used_len = nullptr) {
    GuestQueue<Ring>& q = ctrl();
    const net::CtrlHeader h{cls, cmd};
    const uint64_t hg = q.Get(2);
    mem_.Write(hg, &h, 2);
    std::vector<Buffer> bufs{{hg, 2, false}};
    uint64_t dg = 0;
    if (!data.empty()) {
      dg = q.Get(static_cast<uint32_t>(data.size()));
      mem_.Write(dg, data.data(), data.size());
      bufs.push_back({dg, static_cast<uint32_t>(data.size()), false});
    }
    const uint64_t ag = q.Get(1);
    mem_.Fill(ag, 0xff, 1);
    bufs.push_back({ag, 1, true});
    auto id = q.Add(bufs);
    EXPECT_TRUE(id.has_value());
    q.ring().Kick();
    dev_->Notify(ctrl_index());
    auto used = q.Reap();
    EXPECT_TRUE(used.has_value());
    if (!used) return 0xff;
    if (used_len) *used_len = used->first.len;
    const uint8_t ack = mem_.Load<uint8_t>(ag);
    q.Recycle(used->second);
    return ack;
  }

 private:
  TestGuestMemory mem_;
  RecordingInterrupt irq_;
  std::unique_ptr<LoopbackNet> owned_;
  Backend* backend_ = nullptr;
  std::unique_ptr<Device> dev_;
  uint64_t features_ = 0;
  std::vector<std::unique_ptr<Ring>> rings_;
  std::vector<std::unique_ptr<GuestQueue<Ring>>> queues_;
};

template <typename T>
std::vector<uint8_t> Bytes(const T& v) {
  std::vector<uint8_t> b(sizeof v);
  std::memcpy(b.data(), &v, sizeof v);
  return b;
}

using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
class LayoutNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

}  // namespace virtio::nettest

#endif  // LIBVIRTIO_TESTS_NET_TEST_UTIL_H_
