// fuzz/mmio_fuzzer.cc — the virtio-mmio register block against an arbitrary
// guest.
//
// The input becomes a guest memory image (one region, its size and bytes
// from the input, in its own exact-size heap allocation so ASan sees any
// access outside it) behind an echo device, and a script of guest actions:
// register reads and writes at any offset with any size and value, writes
// biased towards meaningful registers and values (ring addresses inside the
// image, the Linux bring-up sequence as one step, queue sizes, kicks), and
// rewrites of guest memory between kicks so rings change under the device.
// Whatever the guest does, nothing may crash, hang or touch memory outside
// the image, and the register block's invariants must hold after every
// step: identity registers never change, InterruptStatus holds only the two
// defined bits and the line is asserted exactly while one is pending,
// QueueNumMax is 0 exactly for nonexistent queues, and bad accesses read 0.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "virtio/device_core.h"
#include "virtio/log.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/spec.h"
#include "virtio/testing/echo_device.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/test_memory.h"

namespace {

namespace spec = virtio::spec;
namespace mmio = virtio::mmio;
using virtio::testing::RecordingIrqLine;
using virtio::testing::TestGuestMemory;
using Irq = virtio::MmioInterrupt<RecordingIrqLine>;

struct Traits {
  using Memory = virtio::GuestMemoryMap;
  using Interrupt = Irq;
};

constexpr uint64_t kRegionGpa = 0x10000;
constexpr uint32_t kMaxRegionSize = 16384;
constexpr size_t kMaxSteps = 512;

// Echoes readable bytes into writable ones, touching every segment through
// the chain's copy helpers (ASan checks the translation); config accesses
// out of range abort. A second queue of 256 entries and a 12-byte config
// space give the register block more room to get wrong.
using EchoDevice = virtio::testing::EchoDevice<Traits>;

virtio::testing::EchoDeviceOptions EchoShape(virtio::RingFeatureOptions ring) {
  return {.max_queue_sizes = {16, 256},
          .config_size = 12,
          .config = {},
          .echo_bytes = 512,
          .ring = ring};
}

using Transport = virtio::MmioTransport<EchoDevice>;

void QuietSink(virtio::LogLevel, std::string_view) {}

// Every register offset, so most picks land on something meaningful.
constexpr uint64_t kRegisters[] = {
    mmio::kMagicValue,       mmio::kVersion,
    mmio::kDeviceId,         mmio::kVendorId,
    mmio::kDeviceFeatures,   mmio::kDeviceFeaturesSel,
    mmio::kDriverFeatures,   mmio::kDriverFeaturesSel,
    mmio::kQueueSel,         mmio::kQueueNumMax,
    mmio::kQueueNum,         mmio::kQueueReady,
    mmio::kQueueNotify,      mmio::kInterruptStatus,
    mmio::kInterruptAck,     mmio::kStatus,
    mmio::kQueueDescLow,     mmio::kQueueDescHigh,
    mmio::kQueueDriverLow,   mmio::kQueueDriverHigh,
    mmio::kQueueDeviceLow,   mmio::kQueueDeviceHigh,
    mmio::kShmSel,           mmio::kShmLenLow,
    mmio::kShmLenHigh,       mmio::kShmBaseLow,
    mmio::kShmBaseHigh,      mmio::kQueueReset,
    mmio::kConfigGeneration, mmio::kConfig,
};

class Fuzzer {
 public:
  Fuzzer(FuzzedDataProvider& fdp, uint32_t region_size,
         virtio::RingFeatureOptions ring)
      : fdp_(fdp),
        region_size_(region_size),
        mem_({{.gpa = kRegionGpa, .size = region_size}}),
        dev_(mem_.map(), irq_, EchoShape(ring)),
        mmio_(dev_) {}

  void Run() {
    // The image: input bytes, the rest zero.
    std::vector<uint8_t> image = fdp_.ConsumeBytes<uint8_t>(
        fdp_.ConsumeIntegralInRange<uint32_t>(0, region_size_));
    if (!image.empty()) mem_.Write(kRegionGpa, image.data(), image.size());

    for (size_t step = 0; step < kMaxSteps && fdp_.remaining_bytes() > 0;
         ++step) {
      Step();
      CheckInvariants();
    }
    // Whatever happened, a reset brings the device back to a clean state.
    mmio_.Write(mmio::kStatus, 4, 0);
    FUZZ_CHECK(mmio_.Read(mmio::kStatus, 4) == 0);
    FUZZ_CHECK(mmio_.Read(mmio::kInterruptStatus, 4) == 0);
    FUZZ_CHECK(!irq_.line().level());
    FUZZ_CHECK(mmio_.queue_sel() == 0);
  }

 private:
  // A guest-physical address: mostly inside the image and aligned the way
  // rings need, sometimes anywhere.
  uint64_t Gpa() {
    switch (fdp_.ConsumeIntegral<uint8_t>() % 4) {
      case 0:
        return fdp_.ConsumeIntegral<uint64_t>();
      case 1:
        return kRegionGpa +
               fdp_.ConsumeIntegralInRange<uint64_t>(0, region_size_ + 64);
      default:
        return kRegionGpa +
               (fdp_.ConsumeIntegralInRange<uint64_t>(0, region_size_) &
                ~uint64_t{15});
    }
  }

  uint32_t Value() {
    switch (fdp_.ConsumeIntegral<uint8_t>() % 6) {
      case 0:
        return 0;
      case 1:
        return 1;
      case 2:
        return fdp_.ConsumeIntegralInRange<uint32_t>(0, 3);
      case 3:
        return uint32_t{1} << fdp_.ConsumeIntegralInRange<unsigned>(0, 31);
      default:
        return fdp_.ConsumeIntegral<uint32_t>();
    }
  }

  uint32_t Size() {
    static constexpr uint32_t kSizes[] = {4, 4, 4, 1, 2, 8, 0, 3};
    return kSizes[fdp_.ConsumeIntegral<uint8_t>() % 8];
  }

  uint64_t Offset() {
    switch (fdp_.ConsumeIntegral<uint8_t>() % 4) {
      case 0:
        return fdp_.ConsumeIntegralInRange<uint64_t>(0, 0x240);
      case 1:
        return fdp_.ConsumeIntegral<uint64_t>();
      default:
        return kRegisters[fdp_.ConsumeIntegralInRange<size_t>(
                   0, std::size(kRegisters) - 1)] +
               fdp_.ConsumeIntegralInRange<uint64_t>(0, 3) *
                   (fdp_.ConsumeBool() ? 1 : 0);
    }
  }

  void Write32(uint64_t offset, uint32_t value) {
    mmio_.Write(offset, 4, value);
  }

  // Linux's per-queue setup for queue `q`: usually a compact, correctly
  // aligned layout inside the image (so the script reaches ring processing
  // quickly), otherwise three independent addresses.
  void SetUpQueue(uint16_t q) {
    const uint32_t size = uint32_t{1}
                          << fdp_.ConsumeIntegralInRange<unsigned>(0, 8);
    uint64_t addrs[3];
    if (fdp_.ConsumeIntegral<uint8_t>() % 4 != 0) {
      const uint64_t base =
          kRegionGpa + (fdp_.ConsumeIntegralInRange<uint64_t>(0, region_size_) &
                        ~uint64_t{15});
      addrs[0] = base;
      addrs[1] = base + 16ull * size;
      addrs[2] = (addrs[1] + 6 + 2ull * size + 3) & ~uint64_t{3};
    } else {
      for (uint64_t& a : addrs) a = Gpa();
    }
    Write32(mmio::kQueueSel, q);
    Write32(mmio::kQueueNum, size);
    const uint64_t lows[3] = {mmio::kQueueDescLow, mmio::kQueueDriverLow,
                              mmio::kQueueDeviceLow};
    for (int i = 0; i < 3; ++i) {
      Write32(lows[i], static_cast<uint32_t>(addrs[i]));
      Write32(lows[i] + 4, static_cast<uint32_t>(addrs[i] >> 32));
    }
    Write32(mmio::kQueueReady, 1);
  }

  void Negotiate() {
    Write32(mmio::kStatus, 0);
    Write32(mmio::kStatus, spec::kStatusAcknowledge);
    Write32(mmio::kStatus, spec::kStatusAcknowledge | spec::kStatusDriver);
    uint64_t features = 0;
    for (uint32_t sel : {1u, 0u}) {
      Write32(mmio::kDeviceFeaturesSel, sel);
      features |= uint64_t{mmio_.Read(mmio::kDeviceFeatures, 4)} << (32 * sel);
    }
    features &=
        fdp_.ConsumeIntegral<uint64_t>() | spec::Bit(spec::kFeatureVersion1);
    Write32(mmio::kDriverFeaturesSel, 1);
    Write32(mmio::kDriverFeatures, static_cast<uint32_t>(features >> 32));
    Write32(mmio::kDriverFeaturesSel, 0);
    Write32(mmio::kDriverFeatures, static_cast<uint32_t>(features));
    Write32(mmio::kStatus, spec::kStatusAcknowledge | spec::kStatusDriver |
                               spec::kStatusFeaturesOk);
  }

  void Step() {
    switch (fdp_.ConsumeIntegral<uint8_t>() % 14) {
      case 0:
      case 1: {  // any read
        const uint64_t offset = Offset();
        const uint32_t size = Size();
        const uint32_t v = mmio_.Read(offset, size);
        const bool reg_ok =
            offset < mmio::kConfig && size == 4 && offset % 4 == 0;
        const bool cfg_ok =
            offset >= mmio::kConfig && offset < Transport::kRegionSize &&
            (size == 1 || size == 2 || size == 4) && offset % size == 0;
        if (!reg_ok && !cfg_ok) FUZZ_CHECK(v == 0);
        if (cfg_ok && size < 4) FUZZ_CHECK(v >> (8 * size) == 0);
        break;
      }
      case 2:
      case 3:  // any write
        mmio_.Write(Offset(), Size(), Value());
        break;
      case 4: {  // a well-formed write to a register with a plausible value
        const uint64_t reg = kRegisters[fdp_.ConsumeIntegralInRange<size_t>(
            0, std::size(kRegisters) - 1)];
        uint32_t value = Value();
        if (fdp_.ConsumeBool()) {
          const uint64_t gpa = Gpa();
          value = static_cast<uint32_t>((reg & 4) ? gpa >> 32 : gpa);
        }
        Write32(reg, value);
        break;
      }
      case 5:
        Negotiate();
        if (fdp_.ConsumeBool()) {  // the rest of the bring-up too
          SetUpQueue(0);
          Write32(mmio::kStatus, dev_.status() | spec::kStatusDriverOk);
        }
        break;
      case 6:
        SetUpQueue(fdp_.ConsumeIntegralInRange<uint16_t>(0, 2));
        break;
      case 7: {
        const uint8_t s = dev_.status();
        Write32(mmio::kStatus, s | spec::kStatusDriverOk);
        break;
      }
      case 8:
      case 9:  // kick
        Write32(mmio::kQueueNotify,
                fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint32_t>(0, 2)
                                   : fdp_.ConsumeIntegral<uint32_t>());
        break;
      case 10: {  // the guest rewrites part of its memory
        const uint32_t at =
            fdp_.ConsumeIntegralInRange<uint32_t>(0, region_size_ - 1);
        std::vector<uint8_t> bytes = fdp_.ConsumeBytes<uint8_t>(
            fdp_.ConsumeIntegralInRange<uint32_t>(0, region_size_ - at));
        if (!bytes.empty())
          mem_.Write(kRegionGpa + at, bytes.data(), bytes.size());
        break;
      }
      case 11: {  // interrupt handler, or a config change from the backend
        if (fdp_.ConsumeBool()) {
          const uint32_t causes = mmio_.Read(mmio::kInterruptStatus, 4);
          Write32(mmio::kInterruptAck, fdp_.ConsumeBool() ? causes : Value());
        } else {
          dev_.ChangeConfig();
        }
        break;
      }
      case 12:
      case 13:
        PostChain(static_cast<uint16_t>(fdp_.ConsumeBool()));
        break;
    }
  }

  // Plays the driver: writes a mostly well-formed chain into an enabled
  // queue's ring so kicks have real work (buffer addresses, lengths, flags
  // and chaining still come from the input).
  void PostChain(uint16_t q) {
    if (!dev_.queue_enabled(q)) return;
    const virtio::QueueConfig c = *dev_.queue_config_view(q);
    const uint32_t n = fdp_.ConsumeIntegralInRange<uint32_t>(1, 4);
    const uint16_t first = fdp_.ConsumeIntegralInRange<uint16_t>(
        0, static_cast<uint16_t>(c.size - 1));
    const bool packed = dev_.Negotiated(spec::kFeatureRingPacked);
    for (uint32_t i = 0; i < n; ++i) {
      const uint16_t slot = static_cast<uint16_t>((first + i) % c.size);
      const uint64_t addr = Gpa();
      const uint32_t len = fdp_.ConsumeIntegralInRange<uint32_t>(0, 600);
      uint16_t flags =
          fdp_.ConsumeIntegral<uint8_t>() % 8 == 0
              ? fdp_.ConsumeIntegral<uint16_t>()
              : static_cast<uint16_t>(
                    (i + 1 < n ? spec::kDescFlagNext : 0) |
                    (fdp_.ConsumeBool() ? spec::kDescFlagWrite : 0));
      if (packed) {
        if (fdp_.ConsumeBool()) {
          flags = static_cast<uint16_t>((flags & ~spec::kDescFlagUsed) |
                                        spec::kDescFlagAvail);
        }
        const spec::PackedDesc d{addr, len, fdp_.ConsumeIntegral<uint16_t>(),
                                 flags};
        mem_.Write(c.desc_addr + 16ull * slot, &d, sizeof d);
      } else {
        const spec::SplitDesc d{addr, len, flags,
                                static_cast<uint16_t>((slot + 1) % c.size)};
        mem_.Write(c.desc_addr + 16ull * slot, &d, sizeof d);
      }
    }
    if (!packed) {
      const uint16_t idx = mem_.Load<uint16_t>(c.driver_addr + 2);
      mem_.Store<uint16_t>(c.driver_addr + 4 + 2ull * (idx % c.size), first);
      mem_.Store<uint16_t>(c.driver_addr + 2, static_cast<uint16_t>(idx + 1));
    }
  }

  void CheckInvariants() {
    FUZZ_CHECK(mmio_.Read(mmio::kMagicValue, 4) == mmio::kMagic);
    FUZZ_CHECK(mmio_.Read(mmio::kVersion, 4) == mmio::kVersion2);
    FUZZ_CHECK(mmio_.Read(mmio::kDeviceId, 4) == EchoDevice::kDeviceId);
    FUZZ_CHECK(mmio_.Read(mmio::kVendorId, 4) == mmio::kDefaultVendorId);
    const uint32_t isr = mmio_.Read(mmio::kInterruptStatus, 4);
    FUZZ_CHECK((isr & ~virtio::kMmioInterruptMask) == 0);
    FUZZ_CHECK(irq_.line().level() == (isr != 0));
    FUZZ_CHECK(irq_.asserted() == (isr != 0));
    const uint32_t sel = mmio_.queue_sel();
    const uint32_t max = mmio_.Read(mmio::kQueueNumMax, 4);
    FUZZ_CHECK(max == (sel < 2 ? dev_.max_queue_size(sel) : 0));
    const uint32_t ready = mmio_.Read(mmio::kQueueReady, 4);
    FUZZ_CHECK(ready <= 1);
    FUZZ_CHECK(ready == 0 || sel < 2);
    FUZZ_CHECK(mmio_.Read(mmio::kStatus, 4) <= 0xff);
    FUZZ_CHECK(mmio_.Read(mmio::kShmLenLow, 4) == 0xffffffff);
    FUZZ_CHECK(mmio_.Read(mmio::kQueueReset, 4) == 0);
    // An enabled queue's configuration is frozen and was valid.
    for (uint16_t q = 0; q < 2; ++q) {
      if (!dev_.queue_enabled(q)) continue;
      const virtio::QueueConfig* c = dev_.queue_config_view(q);
      FUZZ_CHECK(c->size >= 1 && c->size <= dev_.max_queue_size(q));
      FUZZ_CHECK(dev_.queue_config(q) == nullptr);
    }
  }

  FuzzedDataProvider& fdp_;
  uint32_t region_size_;
  TestGuestMemory mem_;
  Irq irq_;
  EchoDevice dev_;
  Transport mmio_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    virtio::SetLogSink(&QuietSink);
    return true;
  }();
  (void)quiet;
  FuzzedDataProvider fdp(data, size);
  const uint32_t region_size =
      fdp.ConsumeIntegralInRange<uint32_t>(1, kMaxRegionSize);
  const virtio::RingFeatureOptions ring{.packed = fdp.ConsumeBool(),
                                        .indirect = fdp.ConsumeBool(),
                                        .event_idx = fdp.ConsumeBool()};
  Fuzzer fuzzer(fdp, region_size, ring);
  fuzzer.Run();
  return 0;
}
