// virtio/testing/pci_driver.h — a virtio-pci modern driver for tests.
//
// PciDriver brings a device up over any object exposing the virtio-pci
// register interface (PciTransport itself, or a glue's adapter that routes
// BAR offsets through its MMIO dispatch) the way Linux's virtio_pci_modern.c
// does:
//
//   Probe():      vendor/device ID, walk the capability list for the virtio
//                 caps and MSI-X, size BAR (memory decode off, all-ones,
//                 read back), assign PciDriverOptions::bar_address, enable
//                 memory space + bus master, and — in MSI-X mode — enable
//                 MSI-X with the function masked, program every entry with a
//                 recognisable message (MsiAddress(v), MsiData(v)), unmask.
//   Negotiate():  device_status = 0 and read back until 0, ACKNOWLEDGE,
//                 DRIVER, 64-bit features through the select registers,
//                 FEATURES_OK and re-check, config_msix_vector = 0 (read
//                 back, as Linux does).
//   SetUpQueue(): select, read size (0 = absent), check not enabled, write
//                 size, queue_msix_vector = q + 1 read back, ring addresses
//                 as two 32-bit halves. EnableQueue(): queue_enable = 1.
//   DriverOk().   Kick(q): 16-bit write of q to the queue's notify address.
//
// In INTx mode (options.msix = false) MSI-X stays disabled, no vectors are
// written and the test reads the ISR with ReadIsr(). Every step records the
// first mismatch in error() and returns false.
//
// Example:
//   virtio::testing::MsiRecorder sink;
//   virtio::PciInterrupt<virtio::testing::MsiRecorder> irq(sink, 1);
//   MyDevice dev(mem.map(), irq);
//   virtio::PciTransport<MyDevice> pci(dev);
//   virtio::testing::PciDriver driver(pci);
//   virtio::testing::SplitDriver ring(mem, 16);
//   ASSERT_TRUE(driver.Probe() && driver.Negotiate(features) &&
//               driver.SetUpQueue(0, ring.config()) && driver.EnableQueue(0) &&
//               driver.DriverOk()) << driver.error();
//   ring.Add(...); ring.Kick(); driver.Kick(0);
//   EXPECT_EQ(sink.Count(virtio::testing::MsiAddress(1),
//                        virtio::testing::MsiData(1)), 1u);
#ifndef VIRTIO_TESTING_PCI_DRIVER_H_
#define VIRTIO_TESTING_PCI_DRIVER_H_

#include <concepts>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio::testing {

// A PciIrqSink that records every message and the INTx level. Thread-safe.
class MsiRecorder {
 public:
  struct Msi {
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const Msi&) const = default;
  };

  void SendMsi(uint64_t address, uint32_t data) {
    std::lock_guard<std::mutex> lock(mu_);
    msis_.push_back({address, data});
  }
  void SetIntx(bool asserted) {
    std::lock_guard<std::mutex> lock(mu_);
    if (asserted && !intx_) ++intx_raises_;
    intx_ = asserted;
  }

  std::vector<Msi> msis() const {
    std::lock_guard<std::mutex> lock(mu_);
    return msis_;
  }
  size_t Count(uint64_t address, uint32_t data) const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const Msi& m : msis_) n += m.address == address && m.data == data;
    return n;
  }
  size_t total() const {
    std::lock_guard<std::mutex> lock(mu_);
    return msis_.size();
  }
  bool intx() const {
    std::lock_guard<std::mutex> lock(mu_);
    return intx_;
  }
  // Times INTx went from deasserted to asserted.
  uint64_t intx_raises() const {
    std::lock_guard<std::mutex> lock(mu_);
    return intx_raises_;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    msis_.clear();
    intx_raises_ = 0;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Msi> msis_;
  bool intx_ = false;
  uint64_t intx_raises_ = 0;
};

// The message PciDriver programs into MSI-X entry `v`: an x86 LAPIC address
// and a data word that names the vector, so a test can tell vectors apart.
constexpr uint64_t MsiAddress(uint16_t v) {
  return 0xfee0'0000ull | (uint64_t{v & 0xffu} << 12);
}
constexpr uint32_t MsiData(uint16_t v) { return 0x4000u | v; }

// The register interface PciDriver talks to.
template <typename B>
concept PciBus = requires(B& bus, uint32_t off32, uint64_t off64, uint32_t size,
                          uint32_t v32, uint64_t v64) {
  { bus.ConfigRead(off32, size) } -> std::same_as<uint32_t>;
  { bus.ConfigWrite(off32, size, v32) } -> std::same_as<void>;
  { bus.BarRead(off64, size) } -> std::same_as<uint64_t>;
  { bus.BarWrite(off64, size, v64) } -> std::same_as<void>;
};

struct PciDriverOptions {
  // false: leave MSI-X disabled and use INTx + ISR.
  bool msix = true;
  // Where Probe() puts the BAR (rounded up to the BAR's alignment).
  uint64_t bar_address = 0xc000'0000;
};

// A virtio capability as found in configuration space.
struct PciVirtioCap {
  uint32_t at = 0;  // its offset in configuration space
  uint8_t cfg_type = 0;
  uint8_t bar = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
};

template <PciBus Bus>
class PciDriver {
 public:
  explicit PciDriver(Bus& bus, PciDriverOptions options = {})
      : bus_(bus), options_(options) {}

  // ---- PCI enumeration and virtio_pci_modern probe ----
  bool Probe() {
    if (Cfg(pci::kCfgVendorId, 2) != pci::kVendorId) {
      return Fail("vendor id 0x%x", Cfg(pci::kCfgVendorId, 2));
    }
    device_id_ = static_cast<uint16_t>(Cfg(pci::kCfgDeviceId, 2));
    if (device_id_ < pci::kDeviceIdBase) {
      return Fail("device id 0x%x is not a modern virtio id", device_id_);
    }
    if (Cfg(pci::kCfgRevision, 1) < 1) return Fail("revision 0");
    if (!(Cfg(pci::kCfgStatus, 2) & pci::kStatusCapabilityList)) {
      return Fail("no capability list");
    }
    if (!WalkCapabilities()) return false;
    for (const auto* c : {&common_, &isr_, &notify_}) {
      if (c->cfg_type == 0) return Fail("missing a required virtio capability");
    }
    bar_index_ = common_.bar;
    if (!SizeAndAssignBar()) return false;
    for (const auto* c : {&common_, &isr_, &notify_, &device_}) {
      if (c->cfg_type != 0 && (c->bar != bar_index_ ||
                               uint64_t{c->offset} + c->length > bar_size_)) {
        return Fail("capability type %u outside BAR %u", c->cfg_type,
                    bar_index_);
      }
    }
    uint32_t cmd = Cfg(pci::kCfgCommand, 2);
    cmd |= pci::kCommandMemorySpace | pci::kCommandBusMaster;
    bus_.ConfigWrite(pci::kCfgCommand, 2, cmd);
    if (options_.msix) return EnableMsix();
    return true;
  }

  // ---- device initialisation (§3.1.1) ----
  bool Reset() {
    WriteCommon(pci::kCommonDeviceStatus, 1, 0);
    for (int i = 0; i < 1000; ++i) {
      if (status() == 0) return true;
    }
    return Fail("device_status did not read 0 after reset");
  }

  // Negotiates `wanted` & device features (VERSION_1 is required).
  bool Negotiate(uint64_t wanted) {
    if (!Reset()) return false;
    SetStatus(spec::kStatusAcknowledge);
    SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    WriteCommon(pci::kCommonDeviceFeatureSelect, 4, 0);
    uint64_t offered = ReadCommon(pci::kCommonDeviceFeature, 4);
    WriteCommon(pci::kCommonDeviceFeatureSelect, 4, 1);
    offered |= ReadCommon(pci::kCommonDeviceFeature, 4) << 32;
    device_features_ = offered;
    if (!(offered & spec::Bit(spec::kFeatureVersion1))) {
      return Fail("device does not offer VERSION_1");
    }
    features_ = offered & wanted;
    WriteCommon(pci::kCommonDriverFeatureSelect, 4, 0);
    WriteCommon(pci::kCommonDriverFeature, 4, features_ & 0xffffffff);
    WriteCommon(pci::kCommonDriverFeatureSelect, 4, 1);
    WriteCommon(pci::kCommonDriverFeature, 4, features_ >> 32);
    SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
              spec::kStatusFeaturesOk);
    if (!(status() & spec::kStatusFeaturesOk)) {
      return Fail("device refused features 0x%x", features_);
    }
    if (options_.msix) {
      WriteCommon(pci::kCommonConfigMsixVector, 2, 0);
      if (ReadCommon(pci::kCommonConfigMsixVector, 2) != 0) {
        return Fail("config_msix_vector did not take vector 0");
      }
    }
    return true;
  }

  uint16_t num_queues() {
    return static_cast<uint16_t>(ReadCommon(pci::kCommonNumQueues, 2));
  }
  // The queue's size as the device reports it after reset (its maximum).
  uint16_t QueueMaxSize(uint16_t q) {
    WriteCommon(pci::kCommonQueueSelect, 2, q);
    return static_cast<uint16_t>(ReadCommon(pci::kCommonQueueSize, 2));
  }

  // Programs queue `q` with `ring` (from SplitDriver/PackedDriver::config())
  // and, in MSI-X mode, `vector` (default q + 1, Linux's per-queue layout).
  bool SetUpQueue(uint16_t q, const QueueConfig& ring,
                  std::optional<uint16_t> vector = std::nullopt) {
    WriteCommon(pci::kCommonQueueSelect, 2, q);
    const uint32_t max =
        static_cast<uint32_t>(ReadCommon(pci::kCommonQueueSize, 2));
    if (max == 0) return Fail("queue %u does not exist", q);
    if (ReadCommon(pci::kCommonQueueEnable, 2) != 0) {
      return Fail("queue %u already enabled", q);
    }
    if (ring.size > max)
      return Fail("queue %u: ring %u > max %u", q, ring.size, max);
    WriteCommon(pci::kCommonQueueSize, 2, ring.size);
    if (options_.msix) {
      const uint16_t v = vector.value_or(static_cast<uint16_t>(q + 1));
      WriteCommon(pci::kCommonQueueMsixVector, 2, v);
      if (ReadCommon(pci::kCommonQueueMsixVector, 2) != v) {
        return Fail("queue %u: vector %u not accepted", q, v);
      }
    }
    Write64(pci::kCommonQueueDesc, ring.desc_addr);
    Write64(pci::kCommonQueueDriver, ring.driver_addr);
    Write64(pci::kCommonQueueDevice, ring.device_addr);
    const uint32_t notify_off =
        static_cast<uint32_t>(ReadCommon(pci::kCommonQueueNotifyOff, 2));
    const uint64_t off = uint64_t{notify_off} * notify_multiplier_;
    if (off + 2 > notify_.length) {
      return Fail("queue %u notify offset 0x%x outside the notify region", q,
                  off);
    }
    if (notify_offsets_.size() <= q) notify_offsets_.resize(q + 1u, 0);
    notify_offsets_[q] = notify_.offset + off;
    return true;
  }

  bool EnableQueue(uint16_t q) {
    WriteCommon(pci::kCommonQueueSelect, 2, q);
    WriteCommon(pci::kCommonQueueEnable, 2, 1);
    if (status() & spec::kStatusDeviceNeedsReset) {
      return Fail("device needs reset after enabling queue %u", q);
    }
    return true;
  }

  bool DriverOk() {
    SetStatus(status() | spec::kStatusDriverOk);
    const uint8_t s = status();
    if (!(s & spec::kStatusDriverOk) || (s & spec::kStatusDeviceNeedsReset)) {
      return Fail("DRIVER_OK not accepted (status 0x%x)", s);
    }
    return true;
  }

  // Probe + Negotiate + every ring in `rings` (queue i) + DRIVER_OK.
  bool BringUp(uint64_t wanted, const std::vector<QueueConfig>& rings) {
    if (!Probe() || !Negotiate(wanted)) return false;
    const auto n = static_cast<uint16_t>(rings.size());
    for (uint16_t q = 0; q < n; ++q) {
      if (!SetUpQueue(q, rings[q])) return false;
    }
    for (uint16_t q = 0; q < n; ++q) {
      if (!EnableQueue(q)) return false;
    }
    return DriverOk();
  }

  // ---- run time ----
  void Kick(uint16_t q) { bus_.BarWrite(NotifyOffset(q), 2, q); }
  // BAR offset of queue q's notify register (after SetUpQueue(q)).
  uint64_t NotifyOffset(uint16_t q) const {
    return q < notify_offsets_.size() ? notify_offsets_[q] : notify_.offset;
  }
  // Guest-physical notify address.
  uint64_t NotifyAddress(uint16_t q) const {
    return bar_address_ + NotifyOffset(q);
  }
  uint8_t ReadIsr() {
    return static_cast<uint8_t>(bus_.BarRead(isr_.offset, 1));
  }

  // Reads device configuration, retrying while config_generation changes.
  bool ReadDeviceConfig(uint32_t offset, void* out, uint32_t len) {
    if (device_.cfg_type == 0 || uint64_t{offset} + len > device_.length) {
      return Fail("device config read [%u, +%u) outside the region", offset,
                  len);
    }
    auto* bytes = static_cast<uint8_t*>(out);
    for (int attempt = 0; attempt < 100; ++attempt) {
      const uint64_t gen = ReadCommon(pci::kCommonConfigGeneration, 1);
      for (uint32_t i = 0; i < len;) {
        const uint32_t n = ChunkSize(offset + i, len - i);
        const uint64_t v = bus_.BarRead(device_.offset + offset + i, n);
        std::memcpy(bytes + i, &v, n);
        i += n;
      }
      if (ReadCommon(pci::kCommonConfigGeneration, 1) == gen) return true;
    }
    return Fail("config_generation never settled");
  }
  void WriteDeviceConfig(uint32_t offset, const void* in, uint32_t len) {
    const auto* bytes = static_cast<const uint8_t*>(in);
    for (uint32_t i = 0; i < len;) {
      const uint32_t n = ChunkSize(offset + i, len - i);
      uint64_t v = 0;
      std::memcpy(&v, bytes + i, n);
      bus_.BarWrite(device_.offset + offset + i, n, v);
      i += n;
    }
  }

  // ---- raw register access ----
  uint32_t Cfg(uint32_t offset, uint32_t size) {
    return bus_.ConfigRead(offset, size);
  }
  uint64_t ReadCommon(uint32_t field, uint32_t size) {
    return bus_.BarRead(common_.offset + field, size);
  }
  void WriteCommon(uint32_t field, uint32_t size, uint64_t value) {
    bus_.BarWrite(common_.offset + field, size, value);
  }
  uint8_t status() {
    return static_cast<uint8_t>(ReadCommon(pci::kCommonDeviceStatus, 1));
  }
  void SetStatus(uint8_t s) { WriteCommon(pci::kCommonDeviceStatus, 1, s); }

  // MSI-X table entry `v` field access and masks.
  uint64_t MsixTableOffset(uint16_t v) const {
    return msix_table_offset_ + uint64_t{v} * pci::kMsixEntrySize;
  }
  void MaskVector(uint16_t v, bool masked) {
    bus_.BarWrite(MsixTableOffset(v) + pci::kMsixEntryControl, 4,
                  masked ? 1 : 0);
  }
  void SetFunctionMask(bool masked) {
    uint32_t ctl = Cfg(msix_at_ + pci::kMsixControl, 2);
    ctl = masked ? (ctl | pci::kMsixControlFunctionMask)
                 : (ctl & ~uint32_t{pci::kMsixControlFunctionMask});
    bus_.ConfigWrite(msix_at_ + pci::kMsixControl, 2, ctl);
  }
  void SetMsixEnabled(bool enabled) {
    uint32_t ctl = Cfg(msix_at_ + pci::kMsixControl, 2);
    ctl = enabled ? (ctl | pci::kMsixControlEnable)
                  : (ctl & ~uint32_t{pci::kMsixControlEnable});
    bus_.ConfigWrite(msix_at_ + pci::kMsixControl, 2, ctl);
  }
  bool PbaBit(uint16_t v) {
    const uint64_t word =
        bus_.BarRead(msix_pba_offset_ + uint64_t{8} * (v / 64), 8);
    return (word >> (v % 64)) & 1;
  }

  // VIRTIO_PCI_CAP_PCI_CFG window access (§4.1.4.9).
  uint32_t WindowRead(uint32_t bar_offset, uint32_t len) {
    SetWindow(bar_offset, len);
    const uint32_t v = Cfg(pci_cfg_.at + pci::kCapPciCfgData, 4);
    return len == 4 ? v : (v & ((1u << (8 * len)) - 1));
  }
  void WindowWrite(uint32_t bar_offset, uint32_t len, uint32_t value) {
    SetWindow(bar_offset, len);
    bus_.ConfigWrite(pci_cfg_.at + pci::kCapPciCfgData, 4, value);
  }

  // ---- what Probe() found ----
  const std::string& error() const { return error_; }
  uint16_t device_id() const { return device_id_; }
  uint64_t bar_address() const { return bar_address_; }
  uint64_t bar_size() const { return bar_size_; }
  uint8_t bar_index() const { return bar_index_; }
  bool bar_prefetchable() const { return bar_prefetchable_; }
  const PciVirtioCap& common_cap() const { return common_; }
  const PciVirtioCap& isr_cap() const { return isr_; }
  const PciVirtioCap& notify_cap() const { return notify_; }
  const PciVirtioCap& device_cap() const { return device_; }  // type 0: none
  const PciVirtioCap& pci_cfg_cap() const { return pci_cfg_; }
  uint32_t notify_multiplier() const { return notify_multiplier_; }
  uint32_t msix_cap_at() const { return msix_at_; }  // 0: none
  uint16_t msix_table_size() const { return msix_table_size_; }
  uint64_t msix_pba_offset() const { return msix_pba_offset_; }
  // Capability IDs in list order, to check the list's structure.
  const std::vector<uint8_t>& capability_ids() const { return cap_ids_; }
  const std::vector<PciVirtioCap>& virtio_caps() const { return virtio_caps_; }
  uint64_t device_features() const { return device_features_; }
  uint64_t features() const { return features_; }

 private:
  template <typename... Args>
  bool Fail(const absl::FormatSpec<Args...>& format, const Args&... args) {
    if (error_.empty()) error_ = absl::StrFormat(format, args...);
    return false;
  }

  static uint32_t ChunkSize(uint32_t offset, uint32_t left) {
    for (uint32_t n : {4u, 2u}) {
      if (left >= n && offset % n == 0) return n;
    }
    return 1;
  }

  void Write64(uint32_t field, uint64_t v) {
    WriteCommon(field, 4, v & 0xffffffff);
    WriteCommon(field + 4, 4, v >> 32);
  }

  void SetWindow(uint32_t bar_offset, uint32_t len) {
    bus_.ConfigWrite(pci_cfg_.at + pci::kCapBar, 1, bar_index_);
    bus_.ConfigWrite(pci_cfg_.at + pci::kCapOffset, 4, bar_offset);
    bus_.ConfigWrite(pci_cfg_.at + pci::kCapLength, 4, len);
  }

  bool WalkCapabilities() {
    cap_ids_.clear();
    virtio_caps_.clear();
    common_ = isr_ = notify_ = device_ = pci_cfg_ = PciVirtioCap{};
    msix_at_ = 0;
    uint32_t at = Cfg(pci::kCfgCapabilityPointer, 1) & ~3u;
    // 48 = the most 4-byte-aligned capabilities after the header; more means
    // a loop (Linux's PCI_FIND_CAP_TTL).
    for (int ttl = 48; at >= 0x40 && ttl > 0; --ttl) {
      const uint8_t id = static_cast<uint8_t>(Cfg(at + pci::kCapVndr, 1));
      cap_ids_.push_back(id);
      if (id == pci::kCapIdVendor) {
        PciVirtioCap c;
        c.at = at;
        c.cfg_type = static_cast<uint8_t>(Cfg(at + pci::kCapCfgType, 1));
        c.bar = static_cast<uint8_t>(Cfg(at + pci::kCapBar, 1));
        c.offset = Cfg(at + pci::kCapOffset, 4);
        c.length = Cfg(at + pci::kCapLength, 4);
        virtio_caps_.push_back(c);
        // Like virtio_pci_find_capability: the first of each type wins.
        PciVirtioCap* slot = nullptr;
        switch (c.cfg_type) {
          case pci::kCapCommonCfg:
            slot = &common_;
            break;
          case pci::kCapIsrCfg:
            slot = &isr_;
            break;
          case pci::kCapNotifyCfg:
            slot = &notify_;
            break;
          case pci::kCapDeviceCfg:
            slot = &device_;
            break;
          case pci::kCapPciCfg:
            slot = &pci_cfg_;
            break;
          default:
            break;
        }
        if (slot != nullptr && slot->cfg_type == 0 && c.bar < 6) {
          *slot = c;
          if (c.cfg_type == pci::kCapNotifyCfg) {
            notify_multiplier_ = Cfg(at + pci::kCapNotifyMultiplier, 4);
          }
        }
      } else if (id == pci::kCapIdMsix && msix_at_ == 0) {
        msix_at_ = at;
      }
      at = Cfg(at + pci::kCapNext, 1) & ~3u;
    }
    if (at != 0) return Fail("capability list does not terminate");
    if (common_.length < pci::kCommonCfgSize - 4) {  // Linux's minimum: 0x38
      return Fail("common cfg length %u too small", common_.length);
    }
    return true;
  }

  bool SizeAndAssignBar() {
    if (bar_index_ > 5) return Fail("bad BAR index %u", bar_index_);
    const uint32_t reg = pci::kCfgBar0 + 4u * bar_index_;
    const uint32_t cmd = Cfg(pci::kCfgCommand, 2);
    // Linux turns decoding off while sizing so the all-ones address never
    // claims anything.
    bus_.ConfigWrite(pci::kCfgCommand, 2,
                     cmd & ~uint32_t{pci::kCommandMemorySpace});
    const uint32_t orig_lo = Cfg(reg, 4);
    if (orig_lo & 1) return Fail("BAR %u is an I/O BAR", bar_index_);
    const bool is64 = ((orig_lo >> 1) & 3) == 2;
    bar_prefetchable_ = orig_lo & pci::kBarPrefetchable;
    bus_.ConfigWrite(reg, 4, 0xffffffff);
    uint64_t mask = Cfg(reg, 4) & ~uint64_t{0xf};
    if (is64) {
      if (bar_index_ == 5) return Fail("64-bit BAR in the last slot");
      bus_.ConfigWrite(reg + 4, 4, 0xffffffff);
      mask |= uint64_t{Cfg(reg + 4, 4)} << 32;
    } else {
      mask |= 0xffffffff00000000ull;
    }
    if (mask == 0) return Fail("BAR %u is not implemented", bar_index_);
    bar_size_ = ~mask + 1;
    if ((bar_size_ & (bar_size_ - 1)) != 0)
      return Fail("BAR size not a power of 2");
    bar_address_ = (options_.bar_address + bar_size_ - 1) & ~(bar_size_ - 1);
    bus_.ConfigWrite(reg, 4, static_cast<uint32_t>(bar_address_));
    if (is64)
      bus_.ConfigWrite(reg + 4, 4, static_cast<uint32_t>(bar_address_ >> 32));
    bus_.ConfigWrite(pci::kCfgCommand, 2, cmd);
    return true;
  }

  bool EnableMsix() {
    if (msix_at_ == 0) return Fail("no MSI-X capability");
    const uint32_t ctl = Cfg(msix_at_ + pci::kMsixControl, 2);
    msix_table_size_ =
        static_cast<uint16_t>((ctl & pci::kMsixControlTableSizeMask) + 1);
    const uint32_t table = Cfg(msix_at_ + pci::kMsixTable, 4);
    const uint32_t pba = Cfg(msix_at_ + pci::kMsixPba, 4);
    if ((table & 7) != bar_index_ || (pba & 7) != bar_index_) {
      return Fail("MSI-X table/PBA in another BAR");
    }
    msix_table_offset_ = table & ~7u;
    msix_pba_offset_ = pba & ~7u;
    // As pci_msix_enable: enable with the function masked, program each
    // entry while masked, then unmask the function and the entries.
    bus_.ConfigWrite(
        msix_at_ + pci::kMsixControl, 2,
        ctl | pci::kMsixControlEnable | pci::kMsixControlFunctionMask);
    for (uint16_t v = 0; v < msix_table_size_; ++v) {
      const uint64_t e = MsixTableOffset(v);
      bus_.BarWrite(e + pci::kMsixEntryControl, 4, 1);
      bus_.BarWrite(e + pci::kMsixEntryAddrLo, 4, MsiAddress(v) & 0xffffffff);
      bus_.BarWrite(e + pci::kMsixEntryAddrHi, 4, MsiAddress(v) >> 32);
      bus_.BarWrite(e + pci::kMsixEntryData, 4, MsiData(v));
    }
    SetFunctionMask(false);
    for (uint16_t v = 0; v < msix_table_size_; ++v) MaskVector(v, false);
    return true;
  }

  Bus& bus_;
  PciDriverOptions options_;
  std::string error_;
  uint16_t device_id_ = 0;
  uint8_t bar_index_ = 0;
  bool bar_prefetchable_ = false;
  uint64_t bar_address_ = 0;
  uint64_t bar_size_ = 0;
  PciVirtioCap common_, isr_, notify_, device_, pci_cfg_;
  uint32_t notify_multiplier_ = 0;
  uint32_t msix_at_ = 0;
  uint16_t msix_table_size_ = 0;
  uint64_t msix_table_offset_ = 0;
  uint64_t msix_pba_offset_ = 0;
  std::vector<uint8_t> cap_ids_;
  std::vector<PciVirtioCap> virtio_caps_;
  std::vector<uint64_t> notify_offsets_;
  uint64_t device_features_ = 0;
  uint64_t features_ = 0;
};

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_PCI_DRIVER_H_
