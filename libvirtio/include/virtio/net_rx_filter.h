// virtio/net_rx_filter.h — virtio-net receive filter (VIRTIO 1.2 §5.1.6.5).
//
// NetRxFilter holds the state the driver sets through the control queue to
// choose which received frames it wants, and makes that choice:
//   - promiscuous (the default: everything is accepted);
//   - unicast: to our MAC, or to the unicast MAC table, or everything with
//     ALLUNI (CTRL_RX_EXTRA), nothing with NOUNI;
//   - broadcast: accepted unless NOBCAST;
//   - multicast: per ALLMULTI / NOMULTI or the multicast MAC table;
//   - VLAN: with VLAN filtering on (CTRL_VLAN negotiated) a tagged frame is
//     accepted only for a VLAN the driver added.
// A MAC table set with more than kMacTableEntries entries of a class
// switches that class to accept-all, as QEMU does.
//
// HandleCtrl() parses and validates the control-queue commands of classes
// RX, MAC (TABLE_SET, ADDR_SET) and VLAN (ADD, DEL) against the negotiated
// features and applies them, answering kCtrlOk / kCtrlErr.
//
// Threads. All state is guarded by one mutex, except the promiscuous flag,
// an atomic written under it: promisc() needs no lock, so the receive path
// can skip reading the Ethernet header (and taking the lock) while the
// filter is promiscuous. Accept() takes the mutex.
//
// Example:
//   virtio::NetRxFilter filter(mac);
//   filter.SetVlanFiltering(negotiated & spec::Bit(net::kFeatureCtrlVlan));
//   // control queue: if (NetRxFilter::IsFilterCommand(h.cls))
//   //   ack = filter.HandleCtrl(h, chain, negotiated);
//   // receive:
//   if (!filter.promisc() && !filter.Accept(eth, frame_len)) drop();
#ifndef VIRTIO_NET_RX_FILTER_H_
#define VIRTIO_NET_RX_FILTER_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "virtio/descriptor_chain.h"
#include "virtio/net_spec.h"
#include "virtio/spec.h"

namespace virtio {

class NetRxFilter {
 public:
  // Entries of each MAC table (unicast, multicast).
  static constexpr uint32_t kMacTableEntries = 64;

  explicit NetRxFilter(const std::array<uint8_t, 6>& mac) {
    std::memcpy(state_.mac, mac.data(), 6);
  }

  // Back to the reset state (promiscuous, empty tables, no VLANs, VLAN
  // filtering off) with MAC `mac`.
  void Reset(const std::array<uint8_t, 6>& mac) {
    std::lock_guard<std::mutex> l(mu_);
    const State fresh{};
    state_ = fresh;
    std::memcpy(state_.mac, mac.data(), 6);
    promisc_.store(true, std::memory_order_relaxed);
  }

  // Filter tagged frames by VLAN (on with CTRL_VLAN; off, nothing is
  // filtered by VLAN — QEMU's behaviour).
  void SetVlanFiltering(bool on) {
    std::lock_guard<std::mutex> l(mu_);
    state_.vlan_filter = on;
  }

  std::array<uint8_t, 6> mac() const {
    std::lock_guard<std::mutex> l(mu_);
    std::array<uint8_t, 6> m;
    std::memcpy(m.data(), state_.mac, 6);
    return m;
  }
  bool promisc() const { return promisc_.load(std::memory_order_relaxed); }
  bool allmulti() const {
    std::lock_guard<std::mutex> l(mu_);
    return state_.allmulti;
  }
  bool vlan_allowed(uint16_t vid) const {
    std::lock_guard<std::mutex> l(mu_);
    return VlanAllowed(vid);
  }

  // Whether a frame whose first bytes are `eth` (at least the Ethernet
  // header, plus the 802.1Q tag when frame_len allows one) passes the MAC /
  // VLAN filter. Promiscuous mode is not consulted: check promisc() first.
  bool Accept(const uint8_t* eth, uint32_t frame_len) const {
    std::lock_guard<std::mutex> l(mu_);
    if (frame_len >= net::kEthHeaderLen + net::kVlanHeaderLen &&
        eth[12] == (net::kEtherTypeVlan >> 8) &&
        eth[13] == (net::kEtherTypeVlan & 0xff)) {
      const uint16_t vid = static_cast<uint16_t>(((eth[14] << 8) | eth[15]) & 0xfff);
      if (!VlanAllowed(vid)) return false;
    }
    const uint8_t* dst = eth;
    if (dst[0] & 1) {
      static constexpr uint8_t kBcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
      if (std::memcmp(dst, kBcast, 6) == 0) return !state_.nobcast;
      if (state_.nomulti) return false;
      if (state_.allmulti || state_.multi_overflow) return true;
      for (uint32_t i = 0; i < state_.n_multi; ++i) {
        if (std::memcmp(dst, state_.multi[i], 6) == 0) return true;
      }
      return false;
    }
    if (state_.nouni) return false;
    if (state_.alluni || state_.uni_overflow) return true;
    if (std::memcmp(dst, state_.mac, 6) == 0) return true;
    for (uint32_t i = 0; i < state_.n_uni; ++i) {
      if (std::memcmp(dst, state_.uni[i], 6) == 0) return true;
    }
    return false;
  }

  // --- Control queue --------------------------------------------------------

  // Whether HandleCtrl() handles command class `cls` (RX, MAC, VLAN).
  static constexpr bool IsFilterCommand(uint8_t cls) {
    return cls == net::kCtrlRx || cls == net::kCtrlMac || cls == net::kCtrlVlan;
  }

  // Applies the control command `h` (already read from offset 0 of `c`, a
  // chain with at least sizeof h readable bytes; its data follows it) if
  // `negotiated` allows it and its data is well formed. Returns kCtrlOk or
  // kCtrlErr (nothing changed).
  uint8_t HandleCtrl(const net::CtrlHeader& h, const DescriptorChain& c,
                     uint64_t negotiated) {
    const uint64_t data_len = c.readable_bytes() - sizeof h;
    auto has = [&](unsigned bit) { return (negotiated & spec::Bit(bit)) != 0; };
    // Reads a fixed-size command argument; false unless exactly that long.
    auto arg = [&](void* out, size_t n) {
      return data_len == n && c.CopyFromReadable(sizeof h, out, n) == n;
    };
    switch (h.cls) {
      case net::kCtrlRx: {
        uint8_t on;
        if (!has(net::kFeatureCtrlRx) || !arg(&on, 1)) break;
        if (h.command > net::kCtrlRxPromisc + 1 && !has(net::kFeatureCtrlRxExtra)) {
          break;
        }
        std::lock_guard<std::mutex> l(mu_);
        switch (h.command) {
          case net::kCtrlRxPromisc:
            promisc_.store(on != 0, std::memory_order_relaxed);
            return net::kCtrlOk;
          case net::kCtrlRxAllMulti: state_.allmulti = on; return net::kCtrlOk;
          case net::kCtrlRxAllUni: state_.alluni = on; return net::kCtrlOk;
          case net::kCtrlRxNoMulti: state_.nomulti = on; return net::kCtrlOk;
          case net::kCtrlRxNoUni: state_.nouni = on; return net::kCtrlOk;
          case net::kCtrlRxNoBcast: state_.nobcast = on; return net::kCtrlOk;
          default: break;
        }
        break;
      }
      case net::kCtrlMac:
        if (h.command == net::kCtrlMacAddrSet) {
          uint8_t mac[6];
          if (!has(net::kFeatureCtrlMacAddr) || !arg(mac, 6)) break;
          std::lock_guard<std::mutex> l(mu_);
          std::memcpy(state_.mac, mac, 6);
          return net::kCtrlOk;
        }
        if (h.command == net::kCtrlMacTableSet && has(net::kFeatureCtrlRx)) {
          return MacTableSet(c, sizeof h, data_len) ? net::kCtrlOk : net::kCtrlErr;
        }
        break;
      case net::kCtrlVlan: {
        uint16_t vid;
        if (!has(net::kFeatureCtrlVlan) || !arg(&vid, 2) ||
            vid > net::kMaxVlanId) {
          break;
        }
        std::lock_guard<std::mutex> l(mu_);
        const uint64_t bit = uint64_t{1} << (vid % 64);
        if (h.command == net::kCtrlVlanAdd) {
          state_.vlans[vid / 64] |= bit;
          return net::kCtrlOk;
        }
        if (h.command == net::kCtrlVlanDel) {
          state_.vlans[vid / 64] &= ~bit;
          return net::kCtrlOk;
        }
        break;
      }
      default:
        break;
    }
    return net::kCtrlErr;
  }

 private:
  struct State {
    uint8_t mac[6] = {};
    bool allmulti = false;
    bool alluni = false;
    bool nomulti = false;
    bool nouni = false;
    bool nobcast = false;
    bool uni_overflow = false;
    bool multi_overflow = false;
    bool vlan_filter = false;
    uint32_t n_uni = 0;
    uint32_t n_multi = 0;
    uint8_t uni[kMacTableEntries][6] = {};
    uint8_t multi[kMacTableEntries][6] = {};
    uint64_t vlans[(net::kMaxVlanId + 1) / 64] = {};
  };

  // mu_ held.
  bool VlanAllowed(uint16_t vid) const {
    if (!state_.vlan_filter) return true;
    return vid <= net::kMaxVlanId &&
           ((state_.vlans[vid / 64] >> (vid % 64)) & 1);
  }

  // [u32 n][n MACs] unicast, then [u32 n][n MACs] multicast, nothing after.
  bool MacTableSet(const DescriptorChain& c, uint64_t at, uint64_t len) {
    uint32_t counts[2];
    uint64_t offs[2];
    uint64_t pos = 0;
    for (int t = 0; t < 2; ++t) {
      if (len - pos < 4 || c.CopyFromReadable(at + pos, &counts[t], 4) != 4) {
        return false;
      }
      pos += 4;
      offs[t] = pos;
      if (uint64_t{counts[t]} * 6 > len - pos) return false;
      pos += uint64_t{counts[t]} * 6;
    }
    if (pos != len) return false;
    std::lock_guard<std::mutex> l(mu_);
    uint8_t (*tables[2])[6] = {state_.uni, state_.multi};
    uint32_t* sizes[2] = {&state_.n_uni, &state_.n_multi};
    bool* overflow[2] = {&state_.uni_overflow, &state_.multi_overflow};
    for (int t = 0; t < 2; ++t) {
      *overflow[t] = counts[t] > kMacTableEntries;
      *sizes[t] = *overflow[t] ? 0 : counts[t];
      for (uint32_t i = 0; i < *sizes[t]; ++i) {
        c.CopyFromReadable(at + offs[t] + 6ull * i, tables[t][i], 6);
      }
    }
    return true;
  }

  mutable std::mutex mu_;
  // Written with mu_ held; read without it.
  std::atomic<bool> promisc_{true};
  State state_;
};

}  // namespace virtio

#endif  // VIRTIO_NET_RX_FILTER_H_
