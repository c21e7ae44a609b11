// fuzz/pci_fuzzer.cc — the virtio-pci transport against an arbitrary guest.
//
// The input becomes a small guest memory image (contents from the input), an
// echo device with two queues behind PciTransport, and a script of guest
// actions: raw configuration-space and BAR accesses of any size, offset and
// value (biased towards real registers so they get past the checks), well-
// formed common-config writes, kicks, PCI_CFG window accesses, MSI-X
// mask/unmask, a Linux-like bring-up with the harness driver (so queues
// actually run), scribbles over guest memory (rings included), config
// changes, ISR reads and function resets. Whatever the guest does, the
// transport must not crash, hang or touch memory outside the image, and the
// register invariants below must hold. Any violation abort()s.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "virtio/device_core.h"
#include "virtio/log.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/echo_device.h"
#include "virtio/testing/pci_driver.h"
#include "virtio/testing/test_memory.h"

namespace {

namespace pci = virtio::pci;
namespace spec = virtio::spec;

constexpr uint64_t kMemGpa = 0x10000;
constexpr uint64_t kMemSize = 256 * 1024;

// Counts deliveries; a vector outside the programmed range is fine (the
// guest may program anything), so only the count is kept.
struct CountingSink {
  void SendMsi(uint64_t, uint32_t) { ++msis; }
  void SetIntx(bool asserted) {
    FUZZ_CHECK(asserted != intx);  // only level changes are reported
    intx = asserted;
  }
  uint64_t msis = 0;
  bool intx = false;
};

using Irq = virtio::PciInterrupt<CountingSink>;
struct Traits {
  using Memory = virtio::GuestMemoryMap;
  using Interrupt = Irq;
};

// The echo device in the shape this fuzzer has always driven: the entropy
// device's id, two queues of 16 and 8 entries, a 12-byte config space.
using Echo = virtio::testing::EchoDevice<Traits, spec::kDeviceIdEntropy>;

virtio::testing::EchoDeviceOptions EchoShape() {
  return {.name = "fuzz-echo",
          .max_queue_sizes = {16, 8},
          .config_size = 12,
          .config = {},
          .echo_bytes = 256};
}

using Transport = virtio::PciTransport<Echo>;

void QuietLog(virtio::LogLevel, std::string_view) {}

uint32_t PickSize(FuzzedDataProvider& in) {
  static constexpr uint32_t kSizes[] = {1, 2, 4, 8, 1, 2, 4, 0, 3, 16};
  return kSizes[in.ConsumeIntegralInRange<size_t>(0, std::size(kSizes) - 1)];
}

// Offsets near the interesting places, or anything at all.
uint64_t PickBarOffset(FuzzedDataProvider& in, const Transport& t) {
  const pci::BarLayout& l = t.layout();
  const uint64_t bases[] = {l.common, l.isr,        l.device,
                            l.notify, l.msix_table, l.msix_pba};
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0:
      return in.ConsumeIntegral<uint64_t>();
    case 1:
      return in.ConsumeIntegralInRange<uint64_t>(0, t.bar_size() + 16);
    default:
      return bases[in.ConsumeIntegralInRange<size_t>(0, std::size(bases) - 1)] +
             in.ConsumeIntegralInRange<uint64_t>(0, 0x40);
  }
}

uint32_t PickConfigOffset(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return in.ConsumeIntegral<uint32_t>();
    case 1:
      return in.ConsumeIntegralInRange<uint32_t>(0, 0x1004);
    default:
      return in.ConsumeIntegralInRange<uint32_t>(0, 0xa8);
  }
}

// Invariants that hold whatever the guest did.
void CheckInvariants(Transport& t, Irq& irq, const CountingSink& sink,
                     uint64_t bar_size) {
  FUZZ_CHECK(t.bar_size() == bar_size);
  FUZZ_CHECK(t.ConfigRead(pci::kCfgVendorId, 4) ==
             ((0x1040u + Echo::kDeviceId) << 16 | pci::kVendorId));
  FUZZ_CHECK(t.ConfigRead(pci::kCfgCapabilityPointer, 1) == pci::kCapCommonAt);
  FUZZ_CHECK((t.ConfigRead(pci::kCfgCommand, 2) &
              ~uint32_t{pci::kCommandMemorySpace | pci::kCommandBusMaster |
                        pci::kCommandIntxDisable}) == 0);
  FUZZ_CHECK((t.ConfigRead(pci::kCapMsixAt + pci::kMsixControl, 2) & 0x7ff) ==
             irq.table_size() - 1u);
  const uint16_t cv = irq.config_vector();
  FUZZ_CHECK(cv == pci::kNoVector || cv < irq.table_size());
  for (uint16_t q = 0; q < 2; ++q) {
    const uint16_t v = irq.queue_vector(q);
    FUZZ_CHECK(v == pci::kNoVector || v < irq.table_size());
  }
  // The line follows the ISR, MSI-X enable and INTx disable exactly.
  const bool intx_disable =
      t.ConfigRead(pci::kCfgCommand, 2) & pci::kCommandIntxDisable;
  FUZZ_CHECK(sink.intx ==
             (irq.isr() != 0 && !irq.msix_enabled() && !intx_disable));
  FUZZ_CHECK(sink.intx == irq.intx_asserted());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = (virtio::SetLogSink(&QuietLog), true);
  (void)quiet;
  FuzzedDataProvider in(data, size);

  virtio::testing::TestGuestMemory mem({{.gpa = kMemGpa, .size = kMemSize}});
  {
    const std::vector<uint8_t> image =
        in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, 4096));
    if (!image.empty()) mem.Write(kMemGpa, image.data(), image.size());
  }
  CountingSink sink;
  Irq irq(sink, 2);
  Echo dev(mem.map(), irq, EchoShape());
  Transport t(dev, {.bar_prefetchable = in.ConsumeBool()});
  const uint64_t bar_size = t.bar_size();
  virtio::testing::PciDriver<Transport> driver(
      t, {.msix = in.ConsumeBool(), .bar_address = 0xe000'0000});
  // Rings for the driver's bring-up live past the scribbled image.
  std::optional<virtio::testing::SplitDriver> split[2];
  std::optional<virtio::testing::PackedDriver> packed[2];
  int bring_ups = 0;

  for (int step = 0; step < 256 && in.remaining_bytes() > 0; ++step) {
    switch (in.ConsumeIntegralInRange<int>(0, 13)) {
      case 0: {
        const uint32_t off = PickConfigOffset(in), sz = PickSize(in);
        const uint32_t v = t.ConfigRead(off, sz);
        if (sz != 1 && sz != 2 && sz != 4) FUZZ_CHECK(v == 0);
        if (sz < 4) FUZZ_CHECK((v >> (8 * sz)) == 0);
        break;
      }
      case 1: {
        const uint32_t off = PickConfigOffset(in), sz = PickSize(in);
        t.ConfigWrite(off, sz, in.ConsumeIntegral<uint32_t>());
        break;
      }
      case 2: {
        const uint64_t off = PickBarOffset(in, t);
        const uint32_t sz = PickSize(in);
        const uint64_t v = t.BarRead(off, sz);
        if (sz < 8) FUZZ_CHECK((v >> (8 * sz)) == 0);
        if (off >= bar_size) FUZZ_CHECK(v == 0);
        break;
      }
      case 3: {
        const uint64_t off = PickBarOffset(in, t);
        const uint32_t sz = PickSize(in);
        t.BarWrite(off, sz, in.ConsumeIntegral<uint64_t>());
        break;
      }
      case 4: {  // a well-formed common config write
        static constexpr struct {
          uint32_t field, size;
        } kFields[] = {{pci::kCommonDeviceFeatureSelect, 4},
                       {pci::kCommonDriverFeatureSelect, 4},
                       {pci::kCommonDriverFeature, 4},
                       {pci::kCommonConfigMsixVector, 2},
                       {pci::kCommonDeviceStatus, 1},
                       {pci::kCommonQueueSelect, 2},
                       {pci::kCommonQueueSize, 2},
                       {pci::kCommonQueueMsixVector, 2},
                       {pci::kCommonQueueEnable, 2},
                       {pci::kCommonQueueDesc, 8},
                       {pci::kCommonQueueDriver, 4},
                       {pci::kCommonQueueDriver + 4, 4},
                       {pci::kCommonQueueDevice, 8}};
        const auto& f = kFields[in.ConsumeIntegralInRange<size_t>(
            0, std::size(kFields) - 1)];
        uint64_t v = in.ConsumeIntegral<uint64_t>();
        if (in.ConsumeBool()) {
          v = kMemGpa + in.ConsumeIntegralInRange<uint64_t>(0, kMemSize);
        }
        t.BarWrite(t.layout().common + f.field, f.size, v);
        if (f.field == pci::kCommonQueueMsixVector ||
            f.field == pci::kCommonConfigMsixVector) {
          const uint64_t back = t.BarRead(t.layout().common + f.field, 2);
          FUZZ_CHECK(back == pci::kNoVector || back < irq.table_size());
        }
        break;
      }
      case 5:  // kick
        t.BarWrite(t.NotifyAddress(in.ConsumeIntegralInRange<uint16_t>(0, 2)),
                   in.ConsumeBool() ? 2 : 4, in.ConsumeIntegral<uint16_t>());
        break;
      case 6: {  // PCI_CFG window access
        const uint32_t at = pci::kCapPciCfgAt;
        t.ConfigWrite(at + pci::kCapBar, 1,
                      in.ConsumeIntegralInRange<uint8_t>(0, 1));
        t.ConfigWrite(at + pci::kCapOffset, 4,
                      static_cast<uint32_t>(PickBarOffset(in, t)));
        t.ConfigWrite(at + pci::kCapLength, 4, PickSize(in));
        if (in.ConsumeBool()) {
          t.ConfigWrite(at + pci::kCapPciCfgData, 4,
                        in.ConsumeIntegral<uint32_t>());
        } else {
          t.ConfigRead(at + pci::kCapPciCfgData +
                           in.ConsumeIntegralInRange<uint32_t>(0, 3),
                       1);
        }
        break;
      }
      case 7: {  // MSI-X entry / function mask / enable
        const uint16_t v = in.ConsumeIntegralInRange<uint16_t>(0, 3);
        const uint64_t e = t.layout().msix_table + 16u * v;
        switch (in.ConsumeIntegralInRange<int>(0, 3)) {
          case 0:
            t.BarWrite(e + 12, 4, in.ConsumeIntegralInRange<uint32_t>(0, 3));
            break;
          case 1:
            t.BarWrite(e, 8, in.ConsumeIntegral<uint64_t>());
            break;
          default: {
            const uint32_t ctl =
                t.ConfigRead(pci::kCapMsixAt + pci::kMsixControl, 2);
            t.ConfigWrite(
                pci::kCapMsixAt + pci::kMsixControl, 2,
                ctl ^ (in.ConsumeBool() ? pci::kMsixControlEnable
                                        : pci::kMsixControlFunctionMask));
            break;
          }
        }
        break;
      }
      case 8: {  // a full, valid bring-up so the queues really run
        if (bring_ups >= 2) break;  // bounds the memory the rings take
        ++bring_ups;
        const bool use_packed = in.ConsumeBool();
        std::vector<virtio::QueueConfig> rings;
        for (int q = 0; q < 2; ++q) {
          const uint32_t n = q == 0 ? 16 : 8;
          if (use_packed) {
            packed[q].emplace(mem, n);
            rings.push_back(packed[q]->config());
          } else {
            split[q].emplace(mem, n);
            rings.push_back(split[q]->config());
          }
        }
        const uint64_t want =
            spec::Bit(spec::kFeatureVersion1) |
            (use_packed ? spec::Bit(spec::kFeatureRingPacked) : 0) |
            (in.ConsumeBool() ? spec::Bit(spec::kFeatureEventIdx) : 0) |
            (in.ConsumeBool() ? spec::Bit(spec::kFeatureIndirectDesc) : 0);
        // May fail if earlier steps broke the function (bad BAR, masks...).
        driver.BringUp(want, rings);
        break;
      }
      case 9: {  // the guest scribbles over its memory, rings included
        const uint64_t off =
            in.ConsumeIntegralInRange<uint64_t>(0, kMemSize - 1);
        const std::vector<uint8_t> bytes =
            in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(
                0, std::min<uint64_t>(64, kMemSize - off)));
        if (!bytes.empty())
          mem.Write(kMemGpa + off, bytes.data(), bytes.size());
        break;
      }
      case 10:
        dev.ChangeConfig();
        break;
      case 11: {
        t.BarRead(t.layout().isr, 1);
        FUZZ_CHECK(irq.isr() == 0);
        FUZZ_CHECK(!sink.intx);
        break;
      }
      case 12:
        irq.SignalQueue(in.ConsumeIntegralInRange<uint16_t>(0, 3));
        break;
      case 13:
        if (in.ConsumeBool()) {
          t.Reset();
          FUZZ_CHECK(!irq.msix_enabled());
          FUZZ_CHECK(t.ConfigRead(pci::kCfgCommand, 2) == 0);
        } else {
          t.BarWrite(t.layout().common + pci::kCommonDeviceStatus, 1, 0);
          FUZZ_CHECK(dev.status() == 0);
          FUZZ_CHECK(irq.isr() == 0);
        }
        break;
    }
    CheckInvariants(t, irq, sink, bar_size);
  }
  return 0;
}
