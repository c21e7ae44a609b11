// glue/kvm/cmos_rtc.h — the MC146818 CMOS real-time clock at ports
// 0x70/0x71, read-only time.
//
// Linux reads the wall clock from it at boot and, without an RTC, spins on
// the update-in-progress bit of a register that reads 0xff: under a
// nested hypervisor, where every port access is a VM exit, that costs
// seconds. This model reports the host's UTC time in BCD, 24-hour mode,
// never "update in progress", and keeps the other CMOS bytes as plain RAM.
// Writes to the time registers are ignored. Not thread-safe: the VMM calls
// it under its port-I/O lock.
#ifndef LIBVIRTIO_GLUE_KVM_CMOS_RTC_H_
#define LIBVIRTIO_GLUE_KVM_CMOS_RTC_H_

#include <array>
#include <cstdint>
#include <ctime>

namespace kvmglue {

class CmosRtc {
 public:
  static constexpr uint16_t kIndexPort = 0x70;
  static constexpr uint16_t kDataPort = 0x71;

  static bool Claims(uint16_t port) {
    return port == kIndexPort || port == kDataPort;
  }

  uint8_t Read(uint16_t port) {
    if (port == kIndexPort) return index_;
    return ReadRegister(index_);
  }

  void Write(uint16_t port, uint8_t value) {
    if (port == kIndexPort) {
      index_ = value & 0x7f;  // bit 7 is the NMI mask, not an index bit
      return;
    }
    if (index_ >= kFirstRamByte) ram_[index_] = value;
  }

  // What a register reads at time `now` (exposed for tests).
  uint8_t ReadRegister(uint8_t reg, std::time_t now = std::time(nullptr)) const {
    std::tm t{};
    gmtime_r(&now, &t);
    switch (reg) {
      case 0x00: return Bcd(t.tm_sec);
      case 0x02: return Bcd(t.tm_min);
      case 0x04: return Bcd(t.tm_hour);
      case 0x06: return Bcd(t.tm_wday + 1);
      case 0x07: return Bcd(t.tm_mday);
      case 0x08: return Bcd(t.tm_mon + 1);
      case 0x09: return Bcd(t.tm_year % 100);
      case 0x32: return Bcd((t.tm_year + 1900) / 100);  // century
      case 0x0a: return 0x26;  // 32.768 kHz base, 1024 Hz rate, UIP clear
      case 0x0b: return 0x02;  // 24-hour, BCD, no interrupts
      case 0x0c: return 0x00;  // no interrupt flags
      case 0x0d: return 0x80;  // valid RAM and time
      default: return reg >= kFirstRamByte ? ram_[reg] : 0;
    }
  }

 private:
  static constexpr uint8_t kFirstRamByte = 0x0e;
  static uint8_t Bcd(int v) {
    return static_cast<uint8_t>(((v / 10) << 4) | (v % 10));
  }

  uint8_t index_ = 0;
  std::array<uint8_t, 128> ram_{};
};

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_CMOS_RTC_H_
