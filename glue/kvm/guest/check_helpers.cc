// glue/kvm/guest/check_helpers.cc — bring-up and waits shared by the device
// checks (check_helpers.h).
#include "guest/check_helpers.h"

#include <cstdint>

#include "boot_info.h"
#include "guest/check.h"
#include "guest/hw.h"
#include "guest/virtio_guest.h"
#include "virtio/spec.h"

namespace guest {

uint64_t RingFeatures() {
  uint64_t f = spec::Bit(spec::kFeatureVersion1);
  if (g_flags & kvmglue::kFlagPacked) f |= spec::Bit(spec::kFeatureRingPacked);
  if (!(g_flags & kvmglue::kFlagNoEventIdx))
    f |= spec::Bit(spec::kFeatureEventIdx);
  return f;
}

bool Packed(const Dev& d) {
  return d.features & spec::Bit(spec::kFeatureRingPacked);
}
bool EventIdx(const Dev& d) {
  return d.features & spec::Bit(spec::kFeatureEventIdx);
}

// Bring-up with one queue of `size` entries.
bool BringUp(Dev& dev, Queue& q, uint64_t wanted, uint16_t size) {
  if (!Negotiate(dev, wanted)) return false;
  if (!q.Init(&dev, 0, size, Packed(dev), EventIdx(dev))) return false;
  if (!SetUpQueue(dev, 0, q)) return false;
  if (!Poll()) q.EnableCb();
  return DriverOk(dev);
}

// Bring-up with queues 0..n-1 of `size` entries each (all enabled before
// DRIVER_OK, as Linux does).
bool BringUpQueues(Dev& dev, Queue* qs, int n, uint64_t wanted, uint16_t size) {
  if (!Negotiate(dev, wanted)) return false;
  for (int i = 0; i < n; ++i) {
    if (!qs[i].Init(&dev, static_cast<uint16_t>(i), size, Packed(dev),
                    EventIdx(dev)) ||
        !SetUpQueue(dev, static_cast<uint16_t>(i), qs[i])) {
      return false;
    }
    if (!Poll()) qs[i].EnableCb();
  }
  return DriverOk(dev);
}

// Waits for a used buffer: sleeps in hlt until an interrupt (or the 10 ms
// tick) arrives. False after `ms` milliseconds.
bool WaitUsed(Queue& q, uint16_t* id, uint32_t* len, uint32_t ms) {
  const uint32_t start = g_ticks;
  for (;;) {
    if (q.GetUsed(id, len)) return true;
    if (q.bad_used) return false;
    cli();
    if (q.HasUsed()) {
      sti();
      continue;
    }
    if (g_ticks - start > ms / 10) {
      sti();
      return false;
    }
    sti_hlt();
  }
}

bool WaitStatus(Dev& d, uint8_t bits, uint32_t ms) {
  const uint32_t start = g_ticks;
  while (!(d.Status() & bits)) {
    if (g_ticks - start > ms / 10) return false;
    sti_hlt();
  }
  return true;
}

bool AllZero(const uint8_t* p, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    if (p[i]) return false;
  }
  return true;
}

}  // namespace guest
