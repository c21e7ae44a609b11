// glue/kvm/guest/check_console.cc — the virtio-console check
// (device_checks.h).
#include <cstdint>

#include "guest/check.h"
#include "guest/check_helpers.h"
#include "guest/device_checks.h"
#include "guest/hw.h"
#include "guest/virtio_guest.h"
#include "virtio/console_spec.h"
#include "virtio/spec.h"

namespace guest {
namespace {

// --- virtio-console ----------------------------------------------------------
// Output on transmitq0 (appears on the VMM's stdout with the stdio
// backend), input on receiveq0 (the test feeds stdin) echoed back.
uint32_t StrLen(const char* s) {
  uint32_t n = 0;
  while (s[n]) ++n;
  return n;
}

bool ConsoleSend(Queue& tx, const char* a, const char* b = nullptr) {
  Buf d[2];
  int k = 0;
  d[k++] = {Phys(a), StrLen(a), false};
  if (b) d[k++] = {Phys(b), StrLen(b), false};
  if (tx.Add(d, k) < 0) return false;
  tx.Kick();
  uint16_t id;
  uint32_t len;
  return WaitUsed(tx, &id, &len);
}

}  // namespace

void TestConsole(Dev& dev) {
  using namespace virtio::console;
  const uint64_t wanted =
      RingFeatures() | spec::Bit(kFeatureSize) | spec::Bit(kFeatureEmergWrite);
  Queue qs[2];
  Queue& rx = qs[0];
  Queue& tx = qs[1];
  if (!Check(BringUpQueues(dev, qs, 2, wanted),
             "bring-up (single port: receiveq0 + transmitq0)")) {
    return;
  }
  // Input buffer posted first: the device reads host input only into it.
  char* in = static_cast<char*>(Alloc(64));
  const Buf ib{Phys(in), 63, true};
  rx.Add(&ib, 1);
  rx.Kick();

  Check(ConsoleSend(tx, "console: hello from the virtio-console guest\n"),
        "output line transmitted");
  Check(ConsoleSend(tx, "console: multi-", "descriptor line\n"),
        "output line in a 2-descriptor chain transmitted");
  if (dev.features & spec::Bit(kFeatureEmergWrite)) {
    const char* e = "console: emergency write\n";
    for (const char* c = e; *c; ++c) {
      mmio_write32(dev.ConfigAddr(offsetof(Config, emerg_wr)),
                   static_cast<uint8_t>(*c));
    }
    Check(true, "emergency write (emerg_wr) issued");
  }

  // Echo one line of input (up to 5 s for it to arrive).
  char* line = static_cast<char*>(Alloc(64));
  uint32_t have = 0;
  bool eol = false;
  const uint32_t start = g_ticks;
  while (!eol && have < 48 && g_ticks - start < 500) {
    uint16_t id;
    uint32_t len;
    if (!WaitUsed(rx, &id, &len, 500)) continue;
    for (uint32_t i = 0; i < len && have < 48; ++i) {
      line[have++] = in[i];
      if (in[i] == '\n') eol = true;
    }
    rx.Add(&ib, 1);
    rx.Kick();
  }
  line[have] = 0;
  Note("input bytes", have);
  if (Check(eol, "a line of input received")) {
    Check(ConsoleSend(tx, "console echo: ", line), "input echoed back");
  }
  Check(!(dev.Status() & spec::kStatusDeviceNeedsReset), "device healthy");
  dev.Reset();
}

}  // namespace guest
