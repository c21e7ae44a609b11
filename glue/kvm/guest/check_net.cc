// glue/kvm/guest/check_net.cc — the virtio-net check (device_checks.h).
#include <cstdint>

#include "guest/check.h"
#include "guest/check_helpers.h"
#include "guest/device_checks.h"
#include "guest/hw.h"
#include "guest/virtio_guest.h"
#include "virtio/net_spec.h"
#include "virtio/spec.h"

namespace guest {
namespace {

// --- virtio-net --------------------------------------------------------------
// Frames looped through the VMM's loopback backend: what the guest sends on
// transmitq0 comes back on receiveq0, header and all.
constexpr uint32_t kNetHdr = sizeof(virtio::net::Header);
constexpr uint32_t kMrgBuf = 256;  // MRG_RXBUF: small buffers, merged
constexpr uint32_t kMaxFrame = 1514;

uint8_t NetByte(uint32_t frame, uint32_t i) {
  return static_cast<uint8_t>(frame * 53u + i * 13u + (i >> 7) + 1);
}

// One round: bring-up (with or without MRG_RXBUF), post receive buffers,
// transmit frames of four sizes in four descriptor layouts, receive them
// back and compare.
void NetRound(Dev& dev, bool mrg) {
  using namespace virtio::net;
  const uint64_t wanted = RingFeatures() | spec::Bit(kFeatureMac) |
                          spec::Bit(kFeatureStatus) |
                          (mrg ? spec::Bit(kFeatureMrgRxbuf) : 0);
  Queue qs[2];
  Queue& rx = qs[0];
  Queue& tx = qs[1];
  const char* up = mrg ? "bring-up with MRG_RXBUF (rx + tx queues)"
                       : "bring-up without MRG_RXBUF (rx + tx queues)";
  if (!Check(BringUpQueues(dev, qs, 2, wanted), up)) return;
  if (mrg && !(dev.features & spec::Bit(kFeatureMrgRxbuf))) {
    Check(false, "MRG_RXBUF offered");
    return;
  }
  const uint32_t irqs_before = dev.queue_irqs;
  uint8_t mac[6];
  for (uint32_t i = 0; i < 6; ++i) mac[i] = dev.Config8(i);
  Check(mac[0] == 0x52 && mac[1] == 0x54 && mac[5] == 0x56,
        "MAC read from config space");
  Check(dev.Config16(offsetof(Config, status)) & kStatusLinkUp, "link is up");

  // Receive buffers: MRG_RXBUF: 12 single buffers of 256 bytes (a frame
  // spans several); else 4 chains [header 12][frame 1514], Linux's "big
  // packets" layout.
  const int nrx = mrg ? 12 : 4;
  uint32_t rx_addr[16] = {};
  for (int i = 0; i < nrx; ++i) {
    int id;
    if (mrg) {
      const Buf b{Phys(Alloc(kMrgBuf)), kMrgBuf, true};
      id = rx.Add(&b, 1);
      rx_addr[id & 15] = b.addr;
    } else {
      uint8_t* p = static_cast<uint8_t*>(Alloc(kNetHdr + kMaxFrame));
      const Buf b[2] = {{Phys(p), kNetHdr, true},
                        {Phys(p + kNetHdr), kMaxFrame, true}};
      id = rx.Add(b, 2);
      rx_addr[id & 15] = Phys(p);
    }
    if (id < 0) {
      Check(false, "posting receive buffers");
      return;
    }
  }
  rx.Kick();

  // Transmit: [hdr+frame] in one descriptor; [hdr][frame];
  // [hdr][frame in 2]; [hdr][frame in 3].
  constexpr int kFrames = 4;
  const uint32_t sizes[kFrames] = {60, 200, 700, kMaxFrame};
  uint8_t* frames[kFrames];
  bool ok = true;
  for (int f = 0; f < kFrames; ++f) {
    const uint32_t n = sizes[f];
    uint8_t* p = static_cast<uint8_t*>(Alloc(kNetHdr + n));
    memset(p, 0, kNetHdr);  // no offloads, gso none
    uint8_t* fr = p + kNetHdr;
    for (uint32_t i = 0; i < 6; ++i) {
      fr[i] = 0xff;        // broadcast
      fr[6 + i] = mac[i];  // from us
    }
    fr[12] = 0x88;  // local experimental ethertype
    fr[13] = 0xb5;
    for (uint32_t i = 14; i < n; ++i) fr[i] = NetByte(f, i);
    frames[f] = fr;
    Buf b[4];
    int k = 0;
    if (f == 0) {
      b[k++] = {Phys(p), kNetHdr + n, false};
    } else {
      b[k++] = {Phys(p), kNetHdr, false};
      const uint32_t parts = static_cast<uint32_t>(f);
      uint32_t at = 0;
      for (uint32_t i = 0; i < parts; ++i) {
        const uint32_t len = i + 1 < parts ? n / parts : n - at;
        b[k++] = {Phys(fr + at), len, false};
        at += len;
      }
    }
    ok &= tx.Add(b, k) >= 0;
  }
  tx.Kick();
  for (int f = 0; f < kFrames && ok; ++f) {
    uint16_t id;
    uint32_t len;
    ok &= WaitUsed(tx, &id, &len);
  }
  Check(ok, "4 frames transmitted (60..1514 bytes, 1-4 descriptors each)");

  // Receive them back, in order.
  uint8_t* got = static_cast<uint8_t*>(Alloc(kMaxFrame + kNetHdr));
  bool same = ok, counts = true;
  for (int f = 0; f < kFrames && same; ++f) {
    uint16_t id;
    uint32_t len;
    if (!WaitUsed(rx, &id, &len)) {
      same = false;
      break;
    }
    const auto* hdr = reinterpret_cast<const Header*>(rx_addr[id & 15]);
    if (!mrg) {
      same &= len == kNetHdr + sizes[f] && hdr->gso_type == kGsoNone &&
              memcmp(reinterpret_cast<const uint8_t*>(hdr) + kNetHdr, frames[f],
                     sizes[f]) == 0;
      continue;
    }
    // MRG_RXBUF: num_buffers in the first header, the frame spread over them.
    const uint32_t nb = hdr->num_buffers;
    const uint32_t want_nb = (kNetHdr + sizes[f] + kMrgBuf - 1) / kMrgBuf;
    counts &= nb == want_nb;
    uint32_t have = 0;
    for (uint32_t b = 0; b < nb && same; ++b) {
      if (b > 0 && !WaitUsed(rx, &id, &len)) {
        same = false;
        break;
      }
      if (have + len > kNetHdr + kMaxFrame) {
        same = false;
        break;
      }
      memcpy(got + have, reinterpret_cast<const void*>(rx_addr[id & 15]), len);
      have += len;
    }
    same &= have == kNetHdr + sizes[f] &&
            memcmp(got + kNetHdr, frames[f], sizes[f]) == 0;
  }
  Check(same, mrg ? "4 frames received back byte for byte (merged buffers)"
                  : "4 frames received back byte for byte");
  if (mrg) Check(counts, "num_buffers matches the buffers each frame spans");
  if (!Poll()) {
    const uint32_t start = g_ticks;
    while (dev.queue_irqs == irqs_before && g_ticks - start < 100) sti_hlt();
    Check(dev.queue_irqs > irqs_before, "used-buffer interrupts delivered");
  }
  Check(!(dev.Status() & spec::kStatusDeviceNeedsReset), "device healthy");
  dev.Reset();
}

}  // namespace

void TestNet(Dev& dev) {
  NetRound(dev, true);
  NetRound(dev, false);
}

}  // namespace guest
