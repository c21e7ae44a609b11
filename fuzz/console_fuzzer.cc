// fuzz/console_fuzzer.cc — virtio-console against an arbitrary guest.
//
// The input picks the ring layout, single-port or MULTIPORT (1..3 ports),
// the negotiated features and a backend capacity (pacing), then runs a
// script of guest and host actions: transmit chains of any shape (readable
// and writable buffers in any order, outside guest memory, indirect),
// control messages with any header (id, event, value), length and framing,
// receive buffers on any receive queue (control included), configuration
// reads and writes of any offset and width (emergency write), kicks of any
// queue number, host input, backend drains, capacity changes, host
// connect/disconnect, resizes, reaping, and device resets.
//
// Invariants (abort on violation): no crash or access outside guest memory
// (ASan; each region is its own allocation); the device never returns a
// buffer twice or claims more bytes than a chain's writable part (harness
// device_error()); bytes are conserved — every byte a backend accepted was
// counted as transmitted or emergency output, every byte taken from host
// input reached the guest; the device holds at most one chain per data
// queue and none on the control queues between calls; the queue of control
// messages for the guest stays within its bound.
#include <fuzzer/FuzzedDataProvider.h>

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "virtio/console_device.h"
#include "virtio/log.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace {

using virtio::ConsoleDevice;
using virtio::ConsolePollSet;
using virtio::ConsoleSize;
using virtio::testing::Buffer;
using virtio::testing::TestGuestMemory;
using virtio::testing::TestTraits;
namespace console = virtio::console;
namespace spec = virtio::spec;

#define FUZZ_CHECK(cond)                                                \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, \
                   __LINE__, #cond);                                    \
      std::abort();                                                     \
    }                                                                   \
  } while (0)

constexpr uint64_t kRegionSize = 256 << 10;
constexpr uint64_t kRegion0 = 0x10000, kRegion1 = kRegion0 + kRegionSize;
constexpr uint64_t kAllocBudget = 300 << 10;
constexpr int kMaxOps = 96;
constexpr int kMaxResets = 3;
constexpr uint32_t kQueueSize = 16;

class FuzzBackend {
 public:
  size_t Write(absl::Span<const iovec> iov) {
    size_t took = 0;
    for (const iovec& v : iov) {
      const size_t n = std::min(capacity - buffered, v.iov_len);
      buffered += n;
      took += n;
      if (n < v.iov_len) break;
    }
    accepted += took;
    return took;
  }
  size_t Read(absl::Span<const iovec> iov) {
    size_t done = 0;
    for (const iovec& v : iov) {
      const size_t n = std::min<size_t>(v.iov_len, input);
      std::memset(v.iov_base, 'i', n);
      input -= n;
      done += n;
      if (input == 0) break;
    }
    consumed += done;
    return done;
  }
  ConsolePollSet Poll(bool, bool) { return {}; }
  void Service() {}
  bool connected() const { return is_connected; }
  void SetGuestOpen(bool) {}
  std::optional<ConsoleSize> size() { return term; }

  size_t capacity = SIZE_MAX;
  size_t buffered = 0;
  uint64_t accepted = 0;
  size_t input = 0;
  uint64_t consumed = 0;
  bool is_connected = true;
  std::optional<ConsoleSize> term;
};

template <typename Driver>
class Harness {
 public:
  using Device = ConsoleDevice<TestTraits, FuzzBackend>;

  explicit Harness(FuzzedDataProvider& fdp)
      : fdp_(fdp),
        mem_({{.gpa = kRegion0, .size = kRegionSize},
              {.gpa = kRegion1, .size = kRegionSize}}) {}

  bool Init() {
    const bool multiport = fdp_.ConsumeBool();
    const uint32_t ports = multiport ? fdp_.ConsumeIntegralInRange<uint32_t>(1, 3) : 1;
    backends_.resize(ports);
    std::vector<FuzzBackend*> ptrs;
    for (FuzzBackend& b : backends_) {
      if (fdp_.ConsumeBool()) b.capacity = fdp_.ConsumeIntegralInRange<size_t>(0, 300);
      b.is_connected = fdp_.ConsumeBool();
      ptrs.push_back(&b);
    }
    virtio::ConsoleOptions o;
    o.multiport = multiport;
    o.console_port = fdp_.ConsumeIntegralInRange<uint32_t>(0, ports - 1);
    if (fdp_.ConsumeBool()) o.port_names = {"p0", std::string(200, 'n')};
    o.port_names.resize(std::min<size_t>(o.port_names.size(), ports));
    o.queue_size = kQueueSize;
    o.emerg_buffer = fdp_.ConsumeIntegralInRange<uint32_t>(0, 64);
    auto dev = Device::Create(mem_.map(), irq_, ptrs, o);
    FUZZ_CHECK(dev.ok());
    dev_ = std::move(*dev);
    max_pending_ = 8 * ports + 16;
    return BringUp();
  }

  bool BringUp() {
    uint64_t f = dev_->device_features() & fdp_.ConsumeIntegral<uint64_t>();
    f |= spec::Bit(spec::kFeatureVersion1);
    constexpr bool kPacked = std::is_same_v<Driver, virtio::testing::PackedDriver>;
    if (kPacked) {
      f |= spec::Bit(spec::kFeatureRingPacked);
    } else {
      f &= ~spec::Bit(spec::kFeatureRingPacked);
    }
    dev_->SetStatus(0);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    dev_->SetDriverFeatures(f);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk);
    FUZZ_CHECK(dev_->status() & spec::kStatusFeaturesOk);
    indirect_ = f & spec::Bit(spec::kFeatureIndirectDesc);
    const bool mp = f & spec::Bit(console::kFeatureMultiport);
    const uint16_t nq = mp ? dev_->num_queues() : 2;
    rings_.clear();
    for (uint16_t q = 0; q < nq; ++q) {
      rings_.push_back(std::make_unique<Driver>(
          mem_, kQueueSize,
          virtio::testing::DriverOptions{
              .event_idx = (f & spec::Bit(spec::kFeatureEventIdx)) != 0,
              .indirect = indirect_,
              .max_indirect = 8}));
      allocated_ += 4 * 1024;
      virtio::QueueConfig* cfg = dev_->queue_config(q);
      FUZZ_CHECK(cfg != nullptr);
      const virtio::QueueConfig want = rings_.back()->config();
      cfg->size = want.size;
      cfg->desc_addr = want.desc_addr;
      cfg->driver_addr = want.driver_addr;
      cfg->device_addr = want.device_addr;
      FUZZ_CHECK(dev_->EnableQueue(q));
    }
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk | spec::kStatusDriverOk);
    FUZZ_CHECK(!dev_->needs_reset());
    return true;
  }

  uint16_t PickQueue() {
    return fdp_.ConsumeIntegralInRange<uint16_t>(
        0, static_cast<uint16_t>(rings_.size() - 1));
  }

  // Adds a chain carrying `bytes` (readable) and/or writable space.
  void AddChain(uint16_t q, const std::vector<uint8_t>& bytes, uint32_t writable) {
    std::vector<Buffer> bufs;
    auto split = [&](uint64_t total, bool w, const uint8_t* data) {
      const int pieces = fdp_.ConsumeIntegralInRange<int>(1, 3);
      uint64_t done = 0;
      for (int i = 0; i < pieces && (done < total || i == 0); ++i) {
        const uint64_t take =
            i + 1 == pieces ? total - done
                            : fdp_.ConsumeIntegralInRange<uint64_t>(0, total - done);
        uint64_t gpa;
        const int where = fdp_.ConsumeIntegralInRange<int>(0, 31);
        if (where == 0) {
          gpa = 0x1'0000'0000 + fdp_.ConsumeIntegral<uint32_t>();
        } else if (where == 1 && take > 0 && take < 4096) {
          gpa = kRegion1 - take / 2;  // straddles the regions
          if (data) mem_.Write(gpa, data + done, take);
        } else {
          allocated_ += take + 8;
          gpa = mem_.Alloc(take == 0 ? 1 : take, 1);
          if (data && take > 0) mem_.Write(gpa, data + done, take);
        }
        bufs.push_back({gpa, static_cast<uint32_t>(take), w});
        done += take;
      }
    };
    const int order = fdp_.ConsumeIntegralInRange<int>(0, 7);
    if (order == 0) {  // writable first (malformed if readable follows)
      split(writable, true, nullptr);
      split(bytes.size(), false, bytes.data());
    } else {
      if (!bytes.empty() || order == 1) split(bytes.size(), false, bytes.data());
      if (writable > 0 || order == 2) split(writable, true, nullptr);
    }
    if (bufs.empty()) return;
    const bool indirect = indirect_ && bufs.size() <= 8 && fdp_.ConsumeBool();
    if (!indirect && bufs.size() > kQueueSize) return;
    if (!rings_[q]->Add(bufs, indirect)) return;
    if (rings_[q]->Kick() || fdp_.ConsumeBool()) dev_->Notify(q);
  }

  void Step() {
    switch (fdp_.ConsumeIntegralInRange<int>(0, 12)) {
      case 0: {  // transmit
        const uint16_t q = PickQueue();
        std::vector<uint8_t> data(fdp_.ConsumeIntegralInRange<size_t>(0, 600), 'o');
        AddChain(q, data, fdp_.ConsumeBool() ? 0 : fdp_.ConsumeIntegralInRange<uint32_t>(0, 64));
        break;
      }
      case 1:
      case 2: {  // control message
        std::vector<uint8_t> m(8);
        static constexpr uint32_t kIds[] = {0, 1, 2, 3, console::kBadId};
        const uint32_t id = fdp_.ConsumeBool() ? kIds[fdp_.ConsumeIntegralInRange<int>(0, 4)]
                                               : fdp_.ConsumeIntegral<uint32_t>();
        const uint16_t event = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint16_t>(0, 8)
                                                  : fdp_.ConsumeIntegral<uint16_t>();
        const uint16_t value = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint16_t>(0, 1)
                                                  : fdp_.ConsumeIntegral<uint16_t>();
        std::memcpy(m.data(), &id, 4);
        std::memcpy(m.data() + 4, &event, 2);
        std::memcpy(m.data() + 6, &value, 2);
        if (fdp_.ConsumeIntegralInRange<int>(0, 7) == 0) {
          m.resize(fdp_.ConsumeIntegralInRange<size_t>(0, 16));
        }
        const uint16_t q = rings_.size() > console::kControlTxQueue && fdp_.ConsumeIntegralInRange<int>(0, 7) != 0
                               ? console::kControlTxQueue
                               : PickQueue();
        AddChain(q, m, fdp_.ConsumeIntegralInRange<int>(0, 7) == 0 ? 8 : 0);
        break;
      }
      case 3: {  // receive buffers
        const uint16_t q = PickQueue();
        AddChain(q, {}, fdp_.ConsumeIntegralInRange<uint32_t>(0, 300));
        break;
      }
      case 4: {  // config access
        static constexpr uint32_t kWidths[] = {1, 2, 4, 8};
        const uint32_t len = kWidths[fdp_.ConsumeIntegralInRange<int>(0, 3)];
        const uint32_t off = fdp_.ConsumeIntegralInRange<uint32_t>(0, 16);
        uint64_t v = fdp_.ConsumeIntegral<uint64_t>();
        if (fdp_.ConsumeBool()) {
          dev_->WriteConfig(off, &v, len);
        } else {
          dev_->ReadConfig(off, &v, len);
        }
        break;
      }
      case 5: {  // host input
        const uint32_t p = fdp_.ConsumeIntegralInRange<uint32_t>(0, 3);
        if (p < backends_.size()) backends_[p].input += fdp_.ConsumeIntegralInRange<size_t>(0, 500);
        dev_->ServiceBackend(p);
        break;
      }
      case 6: {  // the backend drains / changes speed
        const uint32_t p = fdp_.ConsumeIntegralInRange<uint32_t>(0, 3);
        if (p < backends_.size()) {
          backends_[p].buffered = 0;
          if (fdp_.ConsumeBool()) {
            backends_[p].capacity = fdp_.ConsumeBool()
                                        ? SIZE_MAX
                                        : fdp_.ConsumeIntegralInRange<size_t>(0, 300);
          }
        }
        dev_->ServiceBackend(p);
        break;
      }
      case 7:
        dev_->Resize(fdp_.ConsumeIntegral<uint16_t>(), fdp_.ConsumeIntegral<uint16_t>());
        break;
      case 8: {  // host connect / disconnect, terminal size
        const uint32_t p = fdp_.ConsumeIntegralInRange<uint32_t>(0, 2);
        if (p < backends_.size()) {
          backends_[p].is_connected = !backends_[p].is_connected;
          if (fdp_.ConsumeBool()) {
            backends_[p].term = ConsoleSize{fdp_.ConsumeIntegral<uint16_t>(),
                                            fdp_.ConsumeIntegral<uint16_t>()};
          }
        }
        dev_->ServiceBackend(p);
        break;
      }
      case 9:
        ReapAll();
        break;
      case 10:  // a kick of any queue number
        dev_->Notify(fdp_.ConsumeIntegralInRange<uint16_t>(0, 12));
        break;
      case 11:
        dev_->BackendPoll(fdp_.ConsumeIntegralInRange<uint32_t>(0, 3));
        break;
      default:
        if (resets_ < kMaxResets) {
          ++resets_;
          ReapAll();
          BringUp();
        }
        break;
    }
    Check();
  }

  void ReapAll() {
    for (auto& r : rings_) {
      while (r->Reap()) {
      }
    }
  }

  void Check() {
    for (auto& r : rings_) FUZZ_CHECK(r->device_error().empty());
    const virtio::ConsoleStats s = dev_->stats();
    uint64_t accepted = 0, consumed = 0;
    for (const FuzzBackend& b : backends_) {
      accepted += b.accepted;
      consumed += b.consumed;
    }
    FUZZ_CHECK(accepted == s.tx_bytes + s.emerg_bytes);
    FUZZ_CHECK(consumed == s.rx_bytes);
    FUZZ_CHECK(dev_->pending_control() <= max_pending_);
    for (uint16_t q = 0; q < dev_->num_queues(); ++q) {
      dev_->WithQueue(q, [&](uint16_t index, auto& ring) {
        const bool control = dev_->num_queues() > 2 &&
                             (index == console::kControlRxQueue ||
                              index == console::kControlTxQueue);
        // Split counts chains; packed counts ring slots, and one chain
        // from AddChain() takes at most 6.
        constexpr uint32_t kOneChain =
            std::is_same_v<Driver, virtio::testing::PackedDriver> ? 6 : 1;
        FUZZ_CHECK(ring.in_flight() <= (control ? 0u : kOneChain));
      });
    }
  }

  void Run() {
    for (int i = 0; i < kMaxOps && fdp_.remaining_bytes() > 0 &&
                    allocated_ < kAllocBudget;
         ++i) {
      Step();
    }
  }

 private:
  FuzzedDataProvider& fdp_;
  TestGuestMemory mem_;
  virtio::testing::RecordingInterrupt irq_;
  std::vector<FuzzBackend> backends_;
  std::unique_ptr<Device> dev_;
  std::vector<std::unique_ptr<Driver>> rings_;
  bool indirect_ = false;
  uint64_t allocated_ = 0;
  size_t max_pending_ = 0;
  int resets_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = [] {
    virtio::SetLogSink([](virtio::LogLevel, std::string_view) {});
    return true;
  }();
  (void)quiet;
  FuzzedDataProvider fdp(data, size);
  if (fdp.ConsumeBool()) {
    Harness<virtio::testing::PackedDriver> h(fdp);
    if (h.Init()) h.Run();
  } else {
    Harness<virtio::testing::SplitDriver> h(fdp);
    if (h.Init()) h.Run();
  }
  return 0;
}
