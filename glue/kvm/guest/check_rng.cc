// glue/kvm/guest/check_rng.cc — the virtio-rng check (device_checks.h).
#include <cstdint>

#include "guest/check.h"
#include "guest/check_helpers.h"
#include "guest/device_checks.h"
#include "guest/hw.h"
#include "guest/virtio_guest.h"
#include "virtio/spec.h"

namespace guest {
// --- virtio-rng --------------------------------------------------------------
void TestRng(Dev& dev) {
  Queue q;
  if (!Check(BringUp(dev, q, RingFeatures()),
             "bring-up (reset, ACK, DRIVER, features, FEATURES_OK, queue, "
             "DRIVER_OK)")) {
    return;
  }
  Check(((g_flags & kvmglue::kFlagPacked) != 0) == Packed(dev),
        Packed(dev) ? "negotiated RING_PACKED" : "negotiated split ring");
  Check(((g_flags & kvmglue::kFlagNoEventIdx) == 0) == EventIdx(dev),
        EventIdx(dev) ? "negotiated EVENT_IDX" : "EVENT_IDX not negotiated");
  const uint32_t irqs_before = dev.queue_irqs;
  constexpr int kBufs = 3;
  constexpr uint32_t kLen = 64;
  uint8_t* bufs = static_cast<uint8_t*>(Alloc(kBufs * kLen));
  bool ok = true;
  uint32_t total = 0;
  for (int round = 0; round < 2 && ok; ++round) {
    for (int i = 0; i < kBufs; ++i) {
      const Buf b{Phys(bufs + i * kLen), kLen, true};
      ok &= q.Add(&b, 1) >= 0;
    }
    q.Kick();
    for (int i = 0; i < kBufs && ok; ++i) {
      uint16_t id;
      uint32_t len;
      ok &= WaitUsed(q, &id, &len);
      ok &= len == kLen;
      total += len;
    }
  }
  Check(ok && total == 2 * kBufs * kLen,
        "entropy requests completed (6 x 64 bytes)");
  bool distinct = true;
  for (int i = 0; i < kBufs; ++i) {
    distinct &= !AllZero(bufs + i * kLen, kLen);
    if (i) distinct &= memcmp(bufs, bufs + i * kLen, kLen) != 0;
  }
  Check(distinct, "entropy bytes are non-zero and differ between buffers");
  Note("kicks", q.kicks);
  if (!Poll()) {
    // The used buffers may have been found by polling before the interrupt
    // (irqfd injection is asynchronous): give it up to a second to arrive.
    const uint32_t start = g_ticks;
    while (dev.queue_irqs == irqs_before && g_ticks - start < 100) sti_hlt();
    Note("used-buffer interrupts", dev.queue_irqs - irqs_before);
    Check(dev.queue_irqs > irqs_before, "used-buffer interrupts delivered");
  }
  Check(!(dev.Status() & spec::kStatusDeviceNeedsReset), "device healthy");
  dev.Reset();
}

}  // namespace guest
