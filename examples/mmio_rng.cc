// mmio_rng — how a VMM embeds libvirtio: a virtio-rng device behind a
// virtio-mmio register block, in about fifty lines of VMM-side code.
//
// A real VMM would map guest RAM from its memslots, forward MMIO exits in
// the device's window to transport.Read/Write, and raise a real interrupt
// line. Here the "guest" is libvirtio's driver-side test harness, which
// brings the device up register by register exactly as Linux's virtio_mmio
// driver does, so the program runs anywhere.
//
//   $ build/release/examples/mmio_rng
//   device 4 at virtio_mmio.device=0x200@0xd0000000:5
//   32 random bytes from the guest's point of view: e42c7381...
//   interrupts raised: 1
#include <cstdio>
#include <vector>

#include "absl/status/status.h"

#include "virtio/guest_memory.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/rng_device.h"
#include "virtio/spec.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/test_memory.h"

namespace {

// --- VMM side -----------------------------------------------------------------

// The VMM's interrupt line: with KVM this would write an irqfd.
struct PrintingIrqLine {
  void Set(bool asserted) {
    if (asserted) ++raised;
  }
  int raised = 0;
};

// Hypervisor traits: what the library needs from this VMM.
struct VmmTraits {
  using Memory = virtio::GuestMemoryMap;
  using Interrupt = virtio::MmioInterrupt<PrintingIrqLine>;
};
static_assert(virtio::HypervisorTraits<VmmTraits>);

constexpr uint64_t kMmioBase = 0xd000'0000;
constexpr uint32_t kIrq = 5;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "mmio_rng: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main() {
  // Guest RAM. A VMM would build the map from its own mmap()ed memslots;
  // the test memory does exactly that for one 4 MiB region.
  virtio::testing::TestGuestMemory ram;

  VmmTraits::Interrupt irq;
  virtio::RngDevice<VmmTraits> rng(ram.map(), irq, {.name = "rng0"});
  virtio::MmioTransport transport(rng);
  std::printf("device %u at %s\n", rng.device_id(),
              virtio::MmioTransport<decltype(rng)>::KernelCmdline(kMmioBase, kIrq)
                  .c_str());

  // --- Guest side (simulated) ------------------------------------------------
  // The VMM's MMIO exit handler is the only bridge: offset = addr - base.
  struct ExitHandler {
    decltype(transport)& t;
    uint32_t Read(uint64_t offset, uint32_t size) { return t.Read(offset, size); }
    void Write(uint64_t offset, uint32_t size, uint32_t value) {
      t.Write(offset, size, value);
    }
  } exits{transport};
  virtio::testing::MmioDriver guest(exits);
  virtio::testing::SplitDriver ring(ram, 16, {.event_idx = true});
  if (absl::Status s = guest.Probe(); !s.ok()) return Fail(s);
  if (absl::Status s = guest.Reset(); !s.ok()) return Fail(s);
  const auto features =
      guest.Negotiate(virtio::spec::Bit(virtio::spec::kFeatureVersion1) |
                      virtio::spec::Bit(virtio::spec::kFeatureEventIdx));
  if (!features.ok()) return Fail(features.status());
  if (absl::Status s = guest.SetUpQueue(0, ring.config()); !s.ok()) return Fail(s);
  if (absl::Status s = guest.DriverOk(); !s.ok()) return Fail(s);

  const uint64_t buffer = ram.Alloc(32);
  ring.Add({{buffer, 32, /*writable=*/true}});
  if (ring.Kick()) guest.Kick(0);  // the device runs the request on this kick
  guest.HandleInterrupt();
  const auto used = ring.Reap();
  if (!used || used->len != 32) {
    std::fprintf(stderr, "no entropy came back\n");
    return 1;
  }
  std::vector<uint8_t> bytes(32);
  ram.Read(buffer, bytes.data(), bytes.size());
  std::printf("%u random bytes from the guest's point of view: ", used->len);
  for (uint8_t b : bytes) std::printf("%02x", b);
  std::printf("\ninterrupts raised: %d\n", irq.line().raised);
  return 0;
}
